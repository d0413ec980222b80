"""One GPU check of SegNet (360×480, batch 4) and DeconvNet (224×224, batch 8): one markdown table.

On the device machine: repository root, the requirements importable (hydra-core, albumentations, …;
the repository itself goes on the path), one call ≤ 8 min (``timeout_s=480``; rows: ``--budget-s 450``)::

    python benchmarks/gpu_check.py > $OUT/gpu_check.md      # the table on stdout, progress on stderr
    python benchmarks/gpu_check.py --only compile           # a later call: rows the budget skipped
    python benchmarks/gpu_check.py --dry-run                # any machine: the plan, every row's command

Rows: train and inference, fp32 / bf16 / fp16 × NCHW, channels_last, channels_last + torch.compile;
int64 instead of compact switches; torchrun DDP, 2 processes on the one GPU (tiny run: does it finish,
img/s). Each row is a subprocess with a timeout, eager rows first; what does not fit says "skipped
(budget)", a failure shows its error. train: ``build_trainer`` of train.py's config (bench_train.py's
overrides) and the library's ``train_batches`` on one pre-loaded synthetic batch (not the loader).
infer: as the ``Predictor`` runs a model (BN folded, ``inference_mode``, autocast). img/s after 3
warm-up steps; peak memory ``torch.cuda.max_memory_allocated`` after them (DDP: nvidia-smi, both
ranks). FLOPs per image as bench_train.py counts them (train 3 × forward); % of dense peak: fp32 rows
against TF32 (cuDNN's default for convolutions), the others bf16.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Union

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from bench_train import SETTINGS, train_gflop_per_image, train_overrides  # noqa: E402
from common import PY, REPO, cause_line, compose, machine_line, nvidia_smi, run_capped  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")
VARIANTS = {"NCHW": ["trainer.channels_last=false"], "channels_last": ["trainer.channels_last=true"],
            "channels_last + compile": ["trainer.channels_last=true", "trainer.compile=true"]}
INT64 = ("int64 switches (channels_last)", ["trainer.precision=bf16", "trainer.channels_last=true",
                                            "model.encoder.compact_switches=false"])
# (name pattern, dense bf16/fp16 TFLOPS, dense TF32 TFLOPS): NVIDIA's datasheets, without sparsity.
KNOWN_PEAKS = [(r"NVL", None, None),  # H100/H200 NVL run lower clocks: pass --peak-tflops
               (r"H100 PCIe", 756.0, 378.0), (r"H100|H200", 989.0, 495.0), (r"A100", 312.0, 156.0),
               (r"\bL4\b", 121.0, 60.0)]
WORKER = ["trainer.device=cuda", "trainer.max_steps=1000", "output_dir=/tmp/segdeconv_gpu_check/worker"]
WARMUP = 3
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
COST = {"eager": (90.0, 15.0, 0), "ddp": (120.0, 45.0, 10), "int64": (90.0, 15.0, 20), "compile": (240.0, 75.0, 100)}


class Row(NamedTuple):
    model: str
    run: str  # train | infer | ddp
    precision: str
    variant: str
    kind: str  # a COST key: (timeout s, least budget left to start, run order)
    cmd: list[str]
    check: tuple[str, ...]  # the full train.py overrides, composed by --dry-run (a misspelt key shows)


def plan(seconds: float) -> list[Row]:
    """Every row in table order (model, run, precision, variant)."""
    def row(model: str, run: str, prec: str, variant: str, kind: str, over: list[str]) -> Row:
        cmd = [PY, "benchmarks/gpu_check.py", "--seconds", f"{seconds:g}", "--worker", run, model, *over]
        return Row(model, run, prec, variant, kind, cmd, tuple(full_overrides(model, over)))

    rows = []
    for model, run in itertools.product(SETTINGS, ("train", "infer")):
        for prec, (variant, over) in itertools.product(PRECISIONS, VARIANTS.items()):
            kind = "compile" if "compile" in variant else "eager"
            rows.append(row(model, run, prec, variant, kind, [f"trainer.precision={prec}", *over]))
        rows.append(row(model, run, "bf16", INT64[0], "int64", INT64[1]))
    return rows + [ddp_row()]


def run_order(row: Row) -> int:
    """Eager rows, DDP, int64 switches, then compile rows (slowest to start), bf16 ones first."""
    return COST[row.kind][2] + (("bf16", "fp16", "fp32").index(row.precision) if row.kind == "compile" else 0)


def ddp_row() -> Row:
    """torchrun, one process per GPU (2), SegNet 96×128, batch 2 per rank, 10 steps, end to end. Ranks never
    share a GPU (segdeconv's device rule refuses it), so on a one-GPU machine the row is skipped."""
    run_dir = Path(tempfile.gettempdir()) / f"segdeconv_gpu_check_{os.getpid()}" / "ddp"
    over = ["model=segnet", "dataset=synthetic", "dataset.image_size=[96,128]", "dataset.batch_size=2",
            "dataset.train.length=40", "dataset.val.length=2", "trainer.progress=false", "trainer.device=cuda",
            "trainer.max_steps=10", "trainer.max_epochs=1", "trainer.dist_timeout_s=60", f"hydra.run.dir={run_dir}"]
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *over]
    return Row("segnet", "ddp", "auto", "torchrun 2 procs, 2 GPUs, 96×128, batch 2/rank", "ddp", cmd,
               (*over[:-1], f"output_dir={run_dir}"))


# ----------------------------------------------------------------------------- worker: one row, one process
def full_overrides(model: str, over: list[str]) -> list[str]:
    return [*train_overrides(model, SETTINGS[model]["batch"]), *WORKER, *over]


def timed(run: Callable[[int], None], batch: int, seconds: float) -> float:
    """img/s of ``run(n)`` (n steps) after WARMUP steps, n chosen from one probe step to last ~``seconds``."""
    import torch

    def clock(n: int) -> float:
        t = time.perf_counter()
        run(n)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    clock(WARMUP)  # torch.compile, cuDNN algorithm choice, allocator warm-up
    torch.cuda.reset_peak_memory_stats()
    n = max(3, min(500, int(seconds / max(clock(1), 1e-4))))
    return n * batch / clock(n)


def train_speed(cfg: Any, batch: int, seconds: float) -> float:
    from segdeconv.engine.step import LoopState, StepConfig, train_batches
    from segdeconv.tasks.train import build_trainer

    tr = build_trainer(cfg)
    data = next(iter(tr.train_loader))
    step_cfg = StepConfig(tr.device, tr.rt.amp_dtype, 1, tr.rt.channels_last)

    def run(n: int) -> None:
        train_batches(tr.train_model, itertools.repeat(data, n), tr.criterion, tr.optimizer, tr.scheduler,
                      tr.scaler, step_cfg, LoopState(), max_batches=n)

    return timed(run, batch, seconds)


def infer_speed(cfg: Any, batch: int, seconds: float) -> float:
    import torch

    from segdeconv.config import model_from_config
    from segdeconv.engine.runtime import resolve_runtime
    from segdeconv.engine.step import autocast, to_device
    from segdeconv.models.fuse import fold_batchnorm

    t = cfg.trainer
    rt = resolve_runtime(t.device, t.precision, t.channels_last)
    model = fold_batchnorm(model_from_config(cfg.model), inplace=True).to(rt.device)
    model = model.to(memory_format=torch.channels_last) if rt.channels_last else model
    fn = torch.compile(model) if t.compile else model
    x = to_device(torch.randn(batch, 3, *cfg.dataset.image_size), rt.device, rt.channels_last)

    def run(n: int) -> None:
        with torch.inference_mode(), autocast(rt.device, rt.amp_dtype):
            for _ in range(n):
                fn(x)

    return timed(run, batch, seconds)


def worker(run: str, model: str, over: list[str], seconds: float) -> None:
    """Child process: one row; prints one JSON line (img/s, peak GiB)."""
    import torch

    cfg = compose([full_overrides(model, over)])[0]
    if isinstance(cfg, Exception):
        raise cfg
    img_s = (train_speed if run == "train" else infer_speed)(cfg, SETTINGS[model]["batch"], seconds)
    print(json.dumps({"img_s": img_s, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}))


# ----------------------------------------------------------------------------- parent
def run_row(row: Row, timeout: float) -> Union[dict, str]:
    """The row's result ({img_s, peak_gib}) or its status. DDP: memory from nvidia-smi, img/s from its log."""
    import torch

    if row.run == "ddp" and torch.cuda.device_count() < 2:
        return "skipped (needs 2 GPUs: one process per GPU)"
    used0, peak_mib = float(nvidia_smi("memory.used") or 0) if row.run == "ddp" else 0.0, [0.0]

    def sample() -> None:
        peak_mib[0] = max(peak_mib[0], float(nvidia_smi("memory.used") or 0) - used0)

    rc, text = run_capped(row.cmd, timeout, ENV, every=sample if row.run == "ddp" else None)
    if rc is None:
        return f"timeout after {timeout:.0f} s"
    if rc:
        return f"error (rc {rc}): {cause_line(text)}"
    if row.run == "ddp":
        m = re.findall(r"\(([\d.]+) img/s\)", text)
        return {"img_s": float(m[-1]), "peak_gib": peak_mib[0] / 1024} if m else "error: no img/s line in its log"
    last = [ln for ln in text.splitlines() if ln.startswith("{")]
    return json.loads(last[-1]) if last else f"error: no result line: {cause_line(text)}"


def run_plan(rows: list[Row], deadline: float) -> dict[int, Union[dict, str]]:
    """Rows in :func:`run_order` while the budget lasts; {row index: result or status}."""
    results: dict[int, Union[dict, str]] = {}
    for i in sorted(range(len(rows)), key=lambda i: run_order(rows[i])):
        row, left, t = rows[i], deadline - time.monotonic(), time.monotonic()
        timeout_s, min_s, _ = COST[row.kind]
        got = results[i] = run_row(row, min(timeout_s, left)) if left >= min_s else "skipped (budget)"
        shown = f"{got['img_s']:.1f} img/s" if isinstance(got, dict) else got
        print(f"[{len(results)}/{len(rows)}] {row.model} {row.run} {row.precision} {row.variant}: {shown} "
              f"({time.monotonic() - t:.0f} s)", file=sys.stderr, flush=True)
    return results


def peaks(name: str, a: argparse.Namespace) -> tuple[Optional[float], Optional[float]]:
    """(dense bf16/fp16, dense TF32) TFLOPS: --peak-tflops[-fp32], else KNOWN_PEAKS by GPU name."""
    known = (None, None) if a.peak_tflops else next(((b, f) for pat, b, f in KNOWN_PEAKS if re.search(pat, name)),
                                                    (None, None))
    return a.peak_tflops or known[0], a.peak_tflops_fp32 or known[1]


def header(a: argparse.Namespace, gpu: str, peak: tuple[Optional[float], Optional[float]]) -> str:
    import torch

    fmt = lambda v, flag: f"{v:g} TFLOPS" if v else f"unknown (pass {flag})"  # noqa: E731
    return (f"{machine_line()}\n\nGPU: {gpu} · CUDA {torch.version.cuda} · cuDNN {torch.backends.cudnn.version()}"
            f" · peak: bf16/fp16 dense {fmt(peak[0], '--peak-tflops')}, TF32 dense "
            f"{fmt(peak[1], '--peak-tflops-fp32')}\n\n"
            f"`python benchmarks/gpu_check.py {shlex.join(sys.argv[1:])}` · budget {a.budget_s:g} s · "
            f"all rows compact (1-byte) switches except \"int64 switches\" (compare: bf16 channels_last)\n")


def cells(row: Row, got: Union[dict, str], gflop: dict, peak: tuple) -> list[str]:
    if not isinstance(got, dict):
        return [got.replace("|", "\\|"), "—", "—", "—", "—"]
    g = gflop.get(row.model) if row.run != "ddp" else None
    g = g / 3 if g and row.run == "infer" else g
    tflops = got["img_s"] * g / 1e3 if g else None
    p = peak[1] if row.precision == "fp32" else peak[0]
    mem = f"{got['peak_gib']:.2f}" + (" (nvidia-smi)" if row.run == "ddp" else "")
    return [f"{got['img_s']:.1f}", mem, f"{g:.1f}" if g else "—", f"{tflops:.1f}" if tflops else "—",
            f"{100 * tflops / p:.1f}%" if tflops and p else "—"]


def table(rows: list[Row], results: dict, gflop: dict, peak: tuple) -> str:
    lines = ["| model | run | precision | variant | img/s | peak GPU GiB | GFLOP/img | TFLOP/s | % of peak | command |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for i, row in enumerate(rows):
        cmd = shlex.join(["python" if c == PY else c for c in row.cmd])
        got = cells(row, results[i], gflop, peak)
        lines.append(f"| {' | '.join([row.model, row.run, row.precision, row.variant, *got])} | `{cmd}` |")
    return "\n".join(lines)


def dry_run_results(rows: list[Row]) -> dict[int, str]:
    """'not run (dry run)' per row, or the error composing its config (a misspelt override)."""
    keys = sorted({r.check for r in rows})
    got = dict(zip(keys, compose([list(k) for k in keys])))
    return {i: f"config error: {(str(got[r.check]) or repr(got[r.check])).splitlines()[0][:200]}"
            if isinstance(got[r.check], Exception) else "not run (dry run)" for i, r in enumerate(rows)}


def gflop_or_none(model: str) -> Optional[float]:
    """bench_train.py's GFLOP per training image (CPU, FlopCounterMode); None if it fails."""
    try:
        return train_gflop_per_image(model)
    except Exception as e:  # noqa: BLE001 — the table goes on without it
        print(f"GFLOP count of {model} failed: {e}", file=sys.stderr)
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan (no GPU needed)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="all rows together (default 450)")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row after warm-up")
    ap.add_argument("--only", default=None, help="regex over 'model run precision variant': run those rows only")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16/fp16 peak of this GPU")
    ap.add_argument("--peak-tflops-fp32", type=float, default=None, help="dense TF32 peak (fp32 rows)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    t0 = time.monotonic()
    if a.worker:
        return worker(a.worker[0], a.worker[1], a.worker[2:], a.seconds) or 0
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); use --dry-run to check the plan",
              file=sys.stderr)
        return 2
    rows = [r for r in plan(a.seconds)
            if not a.only or re.search(a.only, f"{r.model} {r.run} {r.precision} {r.variant}")]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (dry run: plan only)"
    gpu += f" · driver {nvidia_smi('driver_version') or '?'}"
    peak = peaks(gpu, a)
    if a.dry_run:
        results, gflop = dry_run_results(rows), {}
    else:
        gflop = {m: gflop_or_none(m) for m in SETTINGS if any(r.model == m for r in rows)}
        results = run_plan(rows, t0 + a.budget_s)
    print(f"\n{header(a, gpu, peak)}\n{table(rows, results, gflop, peak)}")
    return 1 if any(str(v).startswith("config error") for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
