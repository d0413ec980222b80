"""The quick start's first run, measured (issue #16 item 8): ``python train.py trainer.seed=S`` for each
seed, its final synthetic val mIoU and wall time, as a user runs it.

    python benchmarks/quickstart.py [--seeds 42 1 2] [--avx2] [--threads 2] [--no-decoder] [-- overrides…]

``--avx2`` caps ATen and oneDNN at AVX2 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``): an
AVX2-only CPU's kernels and precision (fp32) on a newer one — its speed only roughly. ``--no-decoder``
trains the same encoder with a bilinear head at its output instead of the decoder
(``benchmarks/no_decoder.py``): how much of the score the decoder earns. The "run" column is the
training log's first-to-last line (start-up excluded: ``import torch`` alone varies with the disk cache).
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing
from common import PY, REPO, load_line, machine_line, run_measured  # noqa: E402

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", re.M)


def log_span_s(log: str) -> float:
    """Seconds from the first to the last time-stamped line of a train.log."""
    stamps = [datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in STAMP.findall(log)]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else float("nan")


def one_run(seed: int, args: argparse.Namespace, work: Path) -> tuple[str, float, float, float]:
    """(device line, final val mIoU, wall s, log span s) of one ``train.py`` run in ``work``."""
    run_dir = work / f"seed{seed}"
    cmd = [PY, "train.py", f"trainer.seed={seed}", "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    env = {"OMP_NUM_THREADS": str(args.threads), **(AVX2 if args.avx2 else {})}
    if args.no_decoder:
        cmd.append("model._target_=no_decoder.NoDecoder")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")])
    m = run_measured(cmd + list(args.overrides), env=env)
    log = (run_dir / "train.log").read_text()
    found = re.search(r"last val mIoU ([0-9.]+)", log)
    device = re.search(r"device (.*)", log)
    if not found or not device:
        raise SystemExit(f"seed {seed}: no 'last val mIoU' in {run_dir / 'train.log'}:\n{log[-1500:]}")
    return device.group(1).strip(), float(found.group(1)), m.wall_s, log_span_s(log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    ap.add_argument("--avx2", action="store_true", help="cap ATen and oneDNN at AVX2 (fp32 by precision=auto)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-decoder", action="store_true", help="the same encoder, a bilinear head instead of the decoder")
    ap.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = ap.parse_args()
    print(machine_line())
    print(f"`python benchmarks/quickstart.py {' '.join(sys.argv[1:])}` · {load_line()} at the start\n")
    print("| seed | val mIoU | wall s | run s (log) | device line |\n|---:|---:|---:|---:|---|")
    scores = []
    with tempfile.TemporaryDirectory(prefix="quickstart_") as tmp:
        for seed in args.seeds:
            device, miou, wall, span = one_run(seed, args, Path(tmp))
            scores.append(miou)
            print(f"| {seed} | {miou:.4f} | {wall:.1f} | {span:.1f} | {device} |", flush=True)
    print(f"\nmin {min(scores):.4f} · mean {sum(scores) / len(scores):.4f} over {len(scores)} seeds; {load_line()} at the end")


if __name__ == "__main__":
    main()
