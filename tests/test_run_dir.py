"""A run directory has one owner (issue #17, #28): the trainer's lock (filelock, no fcntl), refused second
trainers, the record of each start, and that nothing rewrites another run's ``.hydra`` record."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli, tiny, tree_digest
from conftest import REPO

from segdeconv.engine.checkpoint import load_checkpoint
from segdeconv.engine.rundir import HOLDER_NAME, LOCK_NAME, RunLock, lock_holder
from segdeconv.run_dir_guard import _fresh_dir

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]


def test_a_second_lock_in_another_process_is_refused_and_a_clean_exit_removes_the_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = f"from segdeconv.engine.rundir import RunLock\nwith RunLock(__import__('pathlib').Path({str(run)!r})): pass"
    with RunLock(run), RunLock(run):  # re-entrant within a process
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True)
        assert r.returncode == 1 and f"is in use by another training run (pid {os.getpid()} on host " \
            f"{socket.gethostname()} since" in r.stderr, r.stderr
        assert lock_holder(run) is None  # this process
    assert not (run / LOCK_NAME).exists() and not (run / HOLDER_NAME).exists() and lock_holder(run) is None


def test_trainer_on_a_locked_run_dir_is_refused_naming_the_holder_and_writes_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunLock(run):
        r = run_cli("train.py", [*tiny(trainer__max_epochs=1), f"hydra.run.dir={run}"])
        after = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = error_lines(r)
    assert f"{run} is in use by another training run (pid {os.getpid()} on host {socket.gethostname()}" in line
    assert "hydra.run.dir=" in line and after == [LOCK_NAME, HOLDER_NAME]  # no .hydra, no log: refused before Hydra wrote


def test_lock_of_a_killed_trainer_is_taken_over_by_its_resume(tmp_path: Path) -> None:
    run, args = tmp_path / "run", tiny(trainer__max_epochs=2)
    proc = subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={run}"], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / HOLDER_NAME).is_file():  # written (atomically) once the lock is held
        assert proc.poll() is None and time.monotonic() < deadline, "the trainer never took its lock"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert json.loads((run / HOLDER_NAME).read_text())["pid"] == proc.pid  # left behind by the crash
    assert lock_holder(run) is None  # but nobody holds it
    r = run_cli("train.py", [*args, "trainer.resume=auto", f"hydra.run.dir={run}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"taking over the lock of a run that ended without releasing it (pid {proc.pid}" in r.stdout + r.stderr
    assert not (run / LOCK_NAME).exists() and not (run / HOLDER_NAME).exists() and load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8


def test_three_trainers_started_at_once_on_one_run_dir_one_trains_two_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    procs = {seed: subprocess.Popen([sys.executable, "train.py", *tiny(trainer__max_epochs=3, trainer__seed=seed),
                                     f"hydra.run.dir={run}"], cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for seed in (1, 2, 3)}
    results = {seed: (p.wait(timeout=600), p.stderr.read()) for seed, p in procs.items()}
    winners = [seed for seed, (rc, _) in results.items() if rc == 0]
    assert len(winners) == 1, {s: (rc, err[-800:]) for s, (rc, err) in results.items()}
    (seed,) = winners
    for other, (rc, err) in results.items():
        if other != seed:
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert rc == 2 and len(lines) == 1 and str(run) in lines[0], err[-2000:]
            assert "in use by another training run" in lines[0] or "already holds" in lines[0], lines[0]
    assert f"trainer.seed={seed}" in (run / ".hydra" / "overrides.yaml").read_text()  # the winner's record
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["trainer"]["seed"] == seed
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]


def test_resume_keeps_the_first_record_and_adds_one_per_accepted_start(tmp_path: Path) -> None:
    run, args = tmp_path / "run", tiny(trainer__max_epochs=1)
    assert run_cli("train.py", [*args, f"hydra.run.dir={run}"]).returncode == 0
    first = tree_digest(run / ".hydra")
    refused = run_cli("train.py", [*args, "trainer.resume=auto", "optimizer.lr=0.5", f"hydra.run.dir={run}"])
    assert refused.returncode == 2 and tree_digest(run / ".hydra") == first
    r = run_cli("train.py", [*args, "trainer.max_epochs=2", "trainer.resume=auto", f"hydra.run.dir={run}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trainer.resume: trainer.max_epochs changes from 1 to 2: the resumed run uses the new value" in r.stdout
    record = tree_digest(run / ".hydra")
    assert {k: v for k, v in record.items() if not k.startswith("resume_")} == first
    assert sorted(k for k in record if k.startswith("resume_")) == [
        "resume_1/config.yaml", "resume_1/hydra.yaml", "resume_1/overrides.yaml"]
    assert "trainer.max_epochs=2" in (run / ".hydra" / "resume_1" / "overrides.yaml").read_text()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["trainer"]["max_epochs"] == 2  # in effect


def test_default_run_dirs_started_in_the_same_second_are_distinct(tmp_path: Path) -> None:
    stamp = tmp_path / "outputs" / "evaluate" / "2026-12-01_10-00-00"
    assert [_fresh_dir(stamp), _fresh_dir(stamp), _fresh_dir(stamp)] == [
        stamp, stamp.with_name(stamp.name + "_2"), stamp.with_name(stamp.name + "_3")]
