"""Where a training step's time goes: torch.profiler over SegNet/DeconvNet steps, grouped by kind.

    python benchmarks/profile_step.py                       # SegNet VGG16-BN 360×480, batch 2, fp32
    python benchmarks/profile_step.py --precision bf16      # autocast bf16 (only sensible where native)
    python benchmarks/profile_step.py --reference           # the plain reference (MaxUnpool2d int64)

Prints one markdown table: share of the step's CPU time per group (convolution forward / backward,
BatchNorm, ReLU, pooling + unpooling, loss, optimizer, layout copies, other) and the convolutions'
achieved GFLOP/s against this CPU's fp32 GEMM ceiling, so a speed target can be read against what
the convolutions alone allow.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import SETTINGS, gemm_ceiling_gflops, train_gflop_per_image  # noqa: E402
from common import machine_line  # noqa: E402

GROUPS = {  # first match wins; matched against the aten op name
    "convolution backward": ("convolution_backward",),
    "convolution forward": ("mkldnn_convolution", "convolution", "conv2d", "conv_transpose"),
    "BatchNorm": ("batch_norm",),
    "ReLU": ("relu", "threshold"),
    "pooling + unpooling": ("pool", "unpool", "switch", "scatter", "gather", "one_hot", "index"),
    "loss": ("cross_entropy", "nll_loss", "log_softmax"),
    "optimizer": ("_foreach", "adam", "sgd", "lerp", "addcdiv", "sqrt"),
}
COPIES = {"aten::copy_", "aten::contiguous", "aten::clone", "aten::_to_copy", "aten::to"}


def group_of(name: str) -> str:
    if name in COPIES:
        return "layout / dtype copies"
    n = name.lower()
    return next((g for g, keys in GROUPS.items() if any(k in n for k in keys)), "other")


def step_fn(model_name: str, reference: bool, precision: str, batch: int):
    s = SETTINGS[model_name]
    if reference:
        from reference import ref_model

        m = ref_model(model_name, s["classes"])
    else:
        from bench_infer import ours_model

        m = ours_model(model_name, s["classes"])
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, 3, *s["size"]), torch.randint(0, s["classes"], (batch, *s["size"]))
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="segnet", choices=sorted(SETTINGS))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--reference", action="store_true")
    a = ap.parse_args()
    step = step_fn(a.model, a.reference, a.precision, a.batch)
    step()  # warm-up: oneDNN primitive creation
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    wall = time.perf_counter() - t
    totals: dict[str, float] = {}
    for ev in prof.key_averages():
        if ev.key.startswith("aten::") or ev.key.startswith("segdeconv"):
            g = group_of(ev.key)
            totals[g] = totals.get(g, 0.0) + ev.self_cpu_time_total / 1e6
    measured = sum(totals.values())
    s = SETTINGS[a.model]
    who = "reference" if a.reference else "segdeconv"
    print(f"\n{machine_line()}\n\n{who} {a.model} {s['size'][0]}×{s['size'][1]}, batch {a.batch}, {a.precision}, "
          f"one train step {wall:.1f} s (profiled)\n")
    print("| group | CPU s | share |\n|---|---:|---:|")
    for g, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {g} | {v:.2f} | {100 * v / measured:.1f}% |")
    conv = totals.get("convolution forward", 0) + totals.get("convolution backward", 0)
    gf = train_gflop_per_image(a.model) * a.batch
    print(f"\nConvolutions: {gf:.0f} GFLOP in {conv:.1f} s = {gf / max(conv, 1e-9):.0f} GFLOP/s; the whole step "
          f"{gf / wall:.0f} GFLOP/s; fp32 GEMM ceiling (2048³ matmul) {gemm_ceiling_gflops():.0f} GFLOP/s.")


if __name__ == "__main__":
    main()
