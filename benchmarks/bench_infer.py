"""Inference throughput: segdeconv's inference path vs the plain reference, side by side in one process.

    python benchmarks/bench_infer.py                    # SegNet 360×480 batch 4
    python benchmarks/bench_infer.py --model deconvnet  # DeconvNet 224×224 batch 8

Ours = BN folded into the convs, compact switches, ``torch.inference_mode``, bf16 autocast where the
CPU has native bf16 (fp32 otherwise), optionally onnxruntime and int8 (``quantize=int8``, with torchao). Reference = eval-mode fp32 eager
(benchmarks/reference.py) under ``torch.no_grad``. Rounds alternate between configs so machine noise
hits all alike; the best round counts. Also checks that the fp32 fused model matches the unfused one.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import SETTINGS  # noqa: E402
from common import machine_line  # noqa: E402
from reference import ref_model  # noqa: E402

from segdeconv.engine.runtime import cpu_has_native_bf16  # noqa: E402
from segdeconv.models import DeconvNet, SegNet, VGGEncoder  # noqa: E402
from segdeconv.models.flops import forward_gflops  # noqa: E402
from segdeconv.models.fuse import fold_batchnorm  # noqa: E402


def ours_model(model: str, classes: int) -> torch.nn.Module:
    enc = VGGEncoder(compact_switches=True)
    m = SegNet(classes, enc) if model == "segnet" else DeconvNet(classes, enc)
    return m.eval()


def timed(rows: list, x: torch.Tensor, rounds: int) -> dict:
    """{name: img/s}: the best of ``rounds`` timings each, rounds interleaved across configs so that
    machine noise (±10% on shared 2-core machines) hits every config alike."""
    best = {name: float("inf") for name, _ in rows}
    for _, fn in rows:
        fn(x)  # warm-up (oneDNN primitive creation)
    for _ in range(rounds):
        for name, fn in rows:
            t = time.perf_counter()
            fn(x)
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: x.shape[0] / dt for name, dt in best.items()}


def onnxruntime_runner(model: torch.nn.Module, x: torch.Tensor):
    """The model exported to ONNX and run by onnxruntime (None when onnx/onnxruntime are absent)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return None
    import tempfile

    from segdeconv.inference.export import export_onnx, exportable, runner

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(exportable(model), path, x[:1])
    run = runner("onnx", path)
    return lambda v: run(v.numpy())


def int8_runner(model: torch.nn.Module, x: torch.Tensor):
    """(run, compile seconds) of the int8 model (``quantize=int8``), or (None, 0) without torchao.
    Calibrated on ``x`` itself: fine for timing (random inputs); accuracy is evaluate.py's job."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        return None, 0.0
    from segdeconv.inference.quantize import quantize_int8

    t = time.perf_counter()
    q = quantize_int8(copy.deepcopy(model), [x])  # includes the first (compiling) call: the parity check
    return q, time.perf_counter() - t


def fold_error(model: torch.nn.Module, fused: torch.nn.Module, x: torch.Tensor) -> str:
    """BN folding is exact algebra: in fp64 the folded model matches to ~1e-15. In fp32, rounding
    (~1e-6) can flip max-pool near-ties — the 2×2 window's top two inputs within rounding — and the
    unpooled value then lands one pixel over, so fp32 is reported as argmax agreement."""
    exact64 = copy.deepcopy(model).double()
    fused64 = fold_batchnorm(copy.deepcopy(exact64))
    with torch.inference_mode():
        a, b = exact64(x.double()), fused64(x.double())
        a32, b32 = model(x), fused(x)
    rel64 = ((a - b).abs().max() / a.abs().max()).item()
    agree = (a32.argmax(1) == b32.argmax(1)).float().mean().item()
    return f"fp64 max |Δlogit| / max |logit| = {rel64:.1e}; fp32 argmax agreement {100 * agree:.3f}%"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="segnet", choices=sorted(SETTINGS))
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    s = SETTINGS[a.model]
    x = torch.randn(s["batch"], 3, *s["size"])
    ref = ref_model(a.model, s["classes"]).eval()
    ours = ours_model(a.model, s["classes"])
    fused = fold_batchnorm(ours)
    bf16 = cpu_has_native_bf16()
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def run_ref(v):
        with torch.no_grad():
            return ref(v)

    def run_ours(v):
        with torch.inference_mode(), amp():
            return fused(v)

    def run_fused_fp32(v):
        with torch.inference_mode():
            return fused(v)

    fused_cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)

    def run_ours_nhwc(v):
        with torch.inference_mode(), amp():
            return fused_cl(v.contiguous(memory_format=torch.channels_last))

    err = fold_error(ours, fused, x[:1])
    gflop = forward_gflops(ours, x[:1])
    rows = [("reference (fp32 eager, no_grad, MaxUnpool2d int64)", run_ref),
            ("segdeconv: BN folded + compact switches, fp32", run_fused_fp32),
            (f"segdeconv {'bf16 (native)' if bf16 else 'fp32 (no native bf16)'} + BN folded + inference_mode, NCHW",
             run_ours),
            ("**segdeconv `Predictor` default** (the above + channels_last)", run_ours_nhwc)]
    ort_run = onnxruntime_runner(fused, x)
    if ort_run is not None:
        rows.append(("onnxruntime (fp32, BN folded; `python export.py format=onnx`)", ort_run))
    q, compile_s = int8_runner(ours, x)
    if q is not None:
        rows.append((f"**segdeconv int8** (`quantize=int8`: PT2E X86 quantizer + torch.compile, freezing"
                     f"{'; float ops in bf16' if q.mixed_bf16 else ''})", q))
    speeds = timed(rows, x, a.rounds)
    ref_s = speeds[rows[0][0]]
    print(f"\n{machine_line()}\n\n{a.model} {s['size'][0]}×{s['size'][1]}, batch {s['batch']}, inference "
          f"({gflop:.1f} GFLOP/image forward)\n")
    print("| config | img/s | vs reference | GFLOP/s |\n|---|---:|---:|---:|")
    for name, v in speeds.items():
        print(f"| {name} | {v:.3f} | {v / ref_s:.2f}× | {v * gflop:.0f} |")
    print(f"\nBN folding exactness: {err}")
    if q is not None:
        print(f"int8: export + calibration + compile {compile_s:.0f} s (once per process and batch size); "
              f"parity on the random calibration batch {q.parity}")


if __name__ == "__main__":
    main()
