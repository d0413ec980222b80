"""The quick start's first run, measured (issue #16 item 8): ``python train.py trainer.seed=S`` for each
seed, its final synthetic val mIoU and wall time, as a user runs it.

    python benchmarks/quickstart.py [--seeds 42 1 2] [--avx2] [--threads 2] [--no-decoder] [key=value …]

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
from omegaconf import OmegaConf  # noqa: E402

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", re.M)
DEVICE = re.compile(r"\] - device (.*)")  # the trainer's first line: what precision/layout/ISA it picked
FINAL = re.compile(r"\] - done \(last val mIoU ([0-9.]+|nan)\)")


def log_span_s(log: str) -> float:
    """Seconds from the first to the last time-stamped line of a train.log."""
    stamps = [datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in STAMP.findall(log)]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else float("nan")


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """Threads, the optional AVX2 cap, and this folder on PYTHONPATH for ``--no-decoder``."""
    env = {"OMP_NUM_THREADS": str(args.threads), **(AVX2 if args.avx2 else {})}
    if args.no_decoder:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "benchmarks"), os.environ.get("PYTHONPATH")) if p)
    return env


def one_run(seed: int, args: argparse.Namespace, work: Path) -> tuple[str, str, float, float, float]:
    """(model class, device line, final val mIoU, wall s, log span s) of one ``train.py`` run in ``work``."""
    run_dir = work / f"seed{seed}"
    cmd = [PY, "train.py", f"trainer.seed={seed}", "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    cmd += ["model.name=no_decoder:NoDecoder"] if args.no_decoder else []
    m = run_measured(cmd + list(args.overrides))  # the children's env: set once in main()
    log_file = run_dir / "train.log"
    log = log_file.read_text()
    device, final = DEVICE.search(log), FINAL.search(log)
    if not device or not final:
        missing = "the 'device …' line" if not device else "the final 'done (last val mIoU …)' line"
        raise SystemExit(f"seed {seed}: {log_file} has no {missing}:\n{log[-1500:]}")
    model = str(OmegaConf.load(run_dir / ".hydra" / "config.yaml").model.name).rsplit(":", 1)[-1]
    return model, device.group(1).strip(), float(final.group(1)), m.wall_s, log_span_s(log)


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if len(set(args.seeds)) != len(args.seeds):
        ap.error(f"--seeds {' '.join(map(str, args.seeds))}: each seed once (every run gets its own folder)")
    for o in args.overrides:
        if o.split("=", 1)[0].lstrip("+~") in ("hydra.run.dir", "trainer.seed", "trainer.progress"):
            ap.error(f"{o}: set by this script per run; drop it")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Any key=value argument is passed to every train.py run.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    ap.add_argument("--avx2", action="store_true", help="cap ATen and oneDNN at AVX2 (fp32 by precision=auto)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-decoder", action="store_true", help="the same encoder, a bilinear head instead of the decoder")
    argv = [a for a in sys.argv[1:] if a != "--"]
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]  # key=value anywhere, even after --seeds
    args = ap.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    check_args(ap, args)
    os.environ.update(child_env(args))  # every run's, and the header's ISA/threads (torch not imported yet)
    print(machine_line())
    print(f"`python benchmarks/quickstart.py {' '.join(sys.argv[1:])}` · {load_line()} at the start\n")
    print("| seed | model | val mIoU | wall s | run s (log) | device line |\n|---:|---|---:|---:|---:|---|")
    scores = []
    with tempfile.TemporaryDirectory(prefix="quickstart_") as tmp:
        for seed in args.seeds:
            model, device, miou, wall, span = one_run(seed, args, Path(tmp))
            scores.append(miou)
            print(f"| {seed} | {model} | {miou:.4f} | {wall:.1f} | {span:.1f} | {device} |", flush=True)
    print(f"\nmin {min(scores):.4f} · mean {sum(scores) / len(scores):.4f} over {len(scores)} seeds; {load_line()} at the end")


if __name__ == "__main__":
    main()
