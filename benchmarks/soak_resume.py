"""Soak test (not CI): repeated train / kill / resume cycles must end bit-identical to an uninterrupted run.

    python benchmarks/soak_resume.py --minutes 30            # the full soak
    python benchmarks/soak_resume.py --minutes 5 --epochs 20  # a short one on a shared CPU

1. A reference run trains ``--epochs`` epochs uninterrupted (``python train.py``, synthetic data, tiny
   SegNet, ``trainer.deterministic=true``); its resident memory (RSS) is sampled at every validation
   and printed as a table — it must stay flat after the first epochs (``--rss-slack-mb``).
2. Rounds, until the time is up: a fresh run dir; start ``train.py … trainer.resume=auto``, wait
   until a new checkpoint appears plus a random delay (0..``--max-delay`` s), then SIGKILL it (every
   ``--term-every``-th cycle SIGTERM, which must exit 0); repeat until a run finishes by itself.
   Rounds alternate ``dataset.num_workers`` 0 and 2. The final weights, optimizer state and logged
   losses must equal the reference's bit for bit.

Exit code 0 when every round matched and RSS stayed flat.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from segdeconv.engine.checkpoint import load_checkpoint  # noqa: E402

VAL_LINE = re.compile(r"\bepoch (\d+) step (\d+): val")


def train_args(a: argparse.Namespace, workers: int) -> list[str]:
    return ["trainer.progress=false", "dataset.image_size=[64,80]", f"dataset.train.length={4 * a.steps_per_epoch}",
            "dataset.val.length=4", "dataset.batch_size=4", f"dataset.num_workers={workers}",
            "model.encoder.width=0.125", "model.encoder.compact_switches=false", "trainer.precision=fp32",
            "trainer.deterministic=true", f"trainer.max_epochs={a.epochs}", f"trainer.checkpoint_every_steps={a.every}",
            "trainer.keep_last=2", "trainer.log_every_steps=1"]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` plus its children (DataLoader workers), MiB."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            total += next(int(ln.split()[1]) for ln in open(f"/proc/{p}/status") if ln.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


class Run:
    """One ``train.py`` process whose output lines are collected (and RSS sampled at validations)."""

    def __init__(self, args: list[str], run_dir: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.rss: list[tuple[int, int, float]] = []  # (epoch, step, MiB)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line)
            m = VAL_LINE.search(line)
            if m:
                self.rss.append((int(m.group(1)), int(m.group(2)), rss_mb(self.proc.pid)))

    def wait(self) -> int:
        rc = self.proc.wait()
        self.reader.join()
        return rc


def newest_mtime(ckpt_dir: Path) -> float:
    return max((p.stat().st_mtime for p in ckpt_dir.glob("*.pt")), default=0.0)


def one_cycle(a: argparse.Namespace, run_dir: Path, workers: int, sig: int, rng: random.Random) -> Optional[int]:
    """Start/resume; after a new checkpoint + a random delay send ``sig``. Returns the exit code, or
    None if the run finished before the signal."""
    ckpt_dir, t0 = run_dir / "checkpoints", newest_mtime(run_dir / "checkpoints")
    run = Run(train_args(a, workers) + ["trainer.resume=auto"], run_dir)
    while newest_mtime(ckpt_dir) <= t0:
        if run.proc.poll() is not None:
            break
        time.sleep(0.02)
    time.sleep(rng.uniform(0, a.max_delay))
    if run.proc.poll() is not None:
        rc = run.wait()
        assert rc == 0, "".join(run.lines[-30:])
        return None
    run.proc.send_signal(sig)
    rc = run.wait()
    if sig == signal.SIGTERM:
        assert rc == 0 and "Resume with" in "".join(run.lines), "".join(run.lines[-30:])
    return rc


def same_run(ref: Path, other: Path) -> list[str]:
    """Differences between two runs' final checkpoints (empty: bit-identical)."""
    a, b = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (ref, other))
    diffs = [f"weights {k}" for k, v in a["model"].items() if not torch.equal(v, b["model"][k])]
    diffs += [f"optimizer {i}.{n}" for i, st in a["optimizer"]["state"].items() for n, v in st.items()
              if not torch.equal(v, b["optimizer"]["state"][i][n])]
    if a["losses"] != b["losses"]:
        diffs.append("losses")
    if a["step"] != b["step"]:
        diffs.append(f"step {a['step']} vs {b['step']}")
    return diffs


def rss_table(samples: list[tuple[int, int, float]], warmup: int, slack: float) -> bool:
    print(f"\n{'epoch':>5} {'step':>6} {'RSS MiB':>9}")
    for epoch, step, mb in samples:
        print(f"{epoch:>5} {step:>6} {mb:>9.1f}")
    steady = [mb for e, _, mb in samples if e > warmup]
    growth = (max(steady) - steady[0]) if len(steady) > 1 else 0.0
    ok = growth <= slack
    print(f"RSS growth after epoch {warmup}: {growth:+.1f} MiB (limit {slack} MiB) -> {'flat' if ok else 'GROWING'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--steps-per-epoch", type=int, default=6)
    ap.add_argument("--every", type=int, default=3, help="trainer.checkpoint_every_steps")
    ap.add_argument("--max-delay", type=float, default=1.5, help="seconds after a new checkpoint before the kill")
    ap.add_argument("--term-every", type=int, default=4, help="every N-th signal is SIGTERM instead of SIGKILL")
    ap.add_argument("--rss-warmup", type=int, default=3)
    ap.add_argument("--rss-slack-mb", type=float, default=32.0)
    ap.add_argument("--out", type=Path, default=Path(f"/tmp/soak_resume_{int(time.time())}"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    deadline, rng = time.monotonic() + 60 * a.minutes, random.Random(a.seed)

    t0 = time.monotonic()
    ref = Run(train_args(a, 0), a.out / "reference")
    assert ref.wait() == 0, "".join(ref.lines[-30:])
    print(f"reference: {a.epochs} epochs × {a.steps_per_epoch} steps in {time.monotonic() - t0:.0f} s")
    flat = rss_table(ref.rss, a.rss_warmup, a.rss_slack_mb)

    rounds, kills, terms, failures = 0, 0, 0, 0
    while time.monotonic() < deadline:
        run_dir, workers = a.out / f"round_{rounds:03d}", 2 * (rounds % 2)
        cycles, t1 = 0, time.monotonic()
        while True:
            sig = signal.SIGTERM if (kills + terms + 1) % a.term_every == 0 else signal.SIGKILL
            rc = one_cycle(a, run_dir, workers, sig, rng)
            if rc is None:
                break
            cycles, kills, terms = cycles + 1, kills + (sig == signal.SIGKILL), terms + (sig == signal.SIGTERM)
        diffs = same_run(a.out / "reference", run_dir)
        failures += bool(diffs)
        print(f"round {rounds}: workers {workers}, {cycles} interruptions, {time.monotonic() - t1:.0f} s -> "
              f"{'bit-identical' if not diffs else 'DIFFERENT: ' + ', '.join(diffs[:5])}", flush=True)
        rounds += 1
    print(f"\n{rounds} rounds, {kills} SIGKILLs, {terms} SIGTERMs, {failures} mismatches; RSS {'flat' if flat else 'GROWING'}")
    return 0 if failures == 0 and flat and rounds > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
