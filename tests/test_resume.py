"""Exact resume through the real CLI: SIGKILL mid-epoch or SIGTERM, then ``trainer.resume=auto``.

One uninterrupted reference run per ``dataset.num_workers`` (0 and 2); the interrupted runs must end
with bitwise-identical weights, optimizer state and logged losses. All runs go in parallel.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pytest
import torch
from cli_helpers import cli_env, tiny
from conftest import REPO

from segdeconv.engine.checkpoint import load_checkpoint
from segdeconv.engine.resume import find_resumable

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips

STEPS_PER_EPOCH, EPOCHS, EVERY = 6, 3, 4  # 18 steps; step checkpoints 4, 8, 12, 16 (8 is mid-epoch 2)


def train_args(workers: int) -> list[str]:
    return tiny(dataset__train__length=4 * STEPS_PER_EPOCH, dataset__val__length=4, dataset__num_workers=workers,
                trainer__deterministic="true", trainer__max_epochs=EPOCHS, trainer__checkpoint_every_steps=EVERY,
                trainer__keep_last=2, trainer__log_every_steps=1)


def start(run_dir: Path, args: list[str], tag: str = "first") -> subprocess.Popen:
    """``python train.py <args> hydra.run.dir=<run_dir>``, output to ``<run_dir>.<tag>.out``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.parent / f"{run_dir.name}.{tag}.out"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                                env=cli_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text()  # type: ignore[attr-defined]


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``proc``; its exit code must be 0. Returns its output."""
    rc = proc.wait(timeout=timeout)
    assert rc == 0, output(proc)[-3000:]
    return output(proc)


def interrupt(run_dir: Path, args: list[str], sig: int, after: str) -> tuple[subprocess.Popen, Optional[dict]]:
    """Start a run, wait until ``checkpoints/<after>`` exists, send ``sig`` (SIGKILL: to the main process;
    SIGTERM: to the whole process group, DataLoader workers included, as a batch scheduler does); returns
    the process and (SIGKILL) the checkpoint resume=auto will pick."""
    proc = start(run_dir, args)
    target, deadline = run_dir / "checkpoints" / after, time.monotonic() + 300
    while not target.exists():
        assert proc.poll() is None, f"run ended before {after}: " + output(proc)
        assert time.monotonic() < deadline, f"{after} never appeared"
        time.sleep(0.005)
    (os.kill if sig == signal.SIGKILL else os.killpg)(proc.pid, sig)
    if sig != signal.SIGKILL:
        return proc, None
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    found = find_resumable(run_dir / "checkpoints")
    assert found is not None
    return proc, found[1]


def kill_and_resume(tmp: Path, workers: int) -> dict:
    args, run = train_args(workers), tmp / f"killed_w{workers}"
    _, point = interrupt(run, args, signal.SIGKILL, f"step_{2 * EVERY:07d}.pt")
    out = finish(start(run, args + ["trainer.resume=auto"], "resumed"))
    return {"dir": run, "point": point, "out": out}


def sigterm_and_resume(tmp: Path) -> dict:
    # labelled as an experiment does (run_name: camvid_segnet_cpu): still a training run that may resume
    args, run = train_args(2) + ["run_name=sigterm_case"], tmp / "sigterm"
    proc, _ = interrupt(run, args, signal.SIGTERM, f"step_{EVERY:07d}.pt")
    stopped = finish(proc)
    point = load_checkpoint(run / "checkpoints" / "last.pt")
    finish(start(run, args + ["trainer.resume=auto"], "resumed"))
    return {"dir": run, "point": point, "out": stopped}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Reference, SIGKILLed+resumed (workers 0 and 2) and SIGTERMed+resumed runs, 3 at a time."""
    tmp = tmp_path_factory.mktemp("resume")

    def reference(workers: int) -> Path:
        run = tmp / f"ref_w{workers}"
        finish(start(run, train_args(workers)))
        return run

    with ThreadPoolExecutor(3) as pool:
        jobs = {("ref", 0): pool.submit(reference, 0), ("ref", 2): pool.submit(reference, 2),
                ("kill", 0): pool.submit(kill_and_resume, tmp, 0), ("kill", 2): pool.submit(kill_and_resume, tmp, 2),
                ("term", 2): pool.submit(sigterm_and_resume, tmp)}
        return {k: f.result() for k, f in jobs.items()}


def assert_same_run(ref_dir: Path, other_dir: Path, resumed_at: int) -> None:
    """Bitwise-equal weights (BN statistics included), optimizer state and losses at the end."""
    a, b = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (ref_dir, other_dir))
    assert a["step"] == b["step"] == STEPS_PER_EPOCH * EPOCHS
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), f"weights differ: {k}"
    for i, st in a["optimizer"]["state"].items():
        for name, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][i][name]), f"optimizer state {i}.{name} differs"
    assert len(a["losses"]) == len(b["losses"]) == a["step"]
    assert a["losses"][resumed_at:] == b["losses"][resumed_at:]  # exact floats from the resume point on
    assert [h["mIoU"] for h in a["history"]] == [h["mIoU"] for h in b["history"]]


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_then_resume_is_bit_exact(runs: dict, workers: int) -> None:
    killed = runs[("kill", workers)]
    point = killed["point"]
    assert 0 < point["batch_in_epoch"] < STEPS_PER_EPOCH, "the kill should land mid-epoch"
    assert f"resumed from {killed['dir'] / 'checkpoints'}" in killed["out"]
    assert_same_run(runs[("ref", workers)], killed["dir"], point["step"])


def test_sigterm_to_the_process_group_finishes_the_step_saves_and_exits_0(runs: dict) -> None:
    term = runs[("term", 2)]  # workers 2: they get the signal too and must not crash the main process
    assert "received SIGTERM" in term["out"] and "Resume with" in term["out"]
    assert f"trainer.resume=auto hydra.run.dir={term['dir']}" in term["out"]
    assert term["point"]["step"] >= EVERY
    assert_same_run(runs[("ref", 2)], term["dir"], term["point"]["step"])


def test_keep_last_step_checkpoints(runs: dict) -> None:
    names = sorted(p.name for p in (runs[("ref", 0)] / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step_0000012.pt", "step_0000016.pt"]
    ckpt = load_checkpoint(runs[("ref", 0)] / "checkpoints" / "step_0000016.pt")
    for key in ("model", "optimizer", "scheduler", "epoch", "step", "batch_in_epoch", "rng", "best_metric",
                "losses", "history"):
        assert key in ckpt, key
    assert (ckpt["epoch"], ckpt["step"], ckpt["batch_in_epoch"]) == (2, 16, 4)
