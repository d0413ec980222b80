"""Atomic checkpoint writes, resume=auto's choice of file, the NaN guard, and safe loading."""
from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from cli_helpers import cli_env, tiny, tree_digest
from conftest import REPO, compose_cfg
from torch import nn

from segdeconv.engine.checkpoint import load_checkpoint, prune_step_checkpoints, save_checkpoint, step_checkpoint_path
from segdeconv.engine.resume import RESUME_KEYS, find_resumable, resume_candidates
from segdeconv.engine.step import LoopState, NonFiniteLoss, StepConfig, StopRequest, train_batches
from segdeconv.engine.trainer import Trainer
from segdeconv.errors import CheckpointError
from segdeconv.tasks.train import build_trainer


@pytest.fixture
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fake_ckpt(step: int) -> dict:
    return {**{k: {} for k in RESUME_KEYS}, "model": {"w": torch.full((4,), float(step))}, "epoch": 0, "step": step}


# ------------------------------------------------------------------ atomic writes
KILL_IN_SAVE = """
import io, os, signal, sys, torch
from segdeconv.engine.checkpoint import save_checkpoint
path = sys.argv[1]
save_checkpoint({"model": {"w": torch.zeros(10000)}, "step": 1}, path)
real_save = torch.save
def half_then_die(obj, f, *a, **k):  # the process dies half-way through writing the new file
    buf = io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
    f.write(data[: len(data) // 2]); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
torch.save = half_then_die
save_checkpoint({"model": {"w": torch.ones(10000)}, "step": 2}, path)
"""


def test_sigkill_during_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    r = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, str(ckpt_dir / "last.pt")], cwd=REPO, env=cli_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    old = load_checkpoint(ckpt_dir / "last.pt")
    assert old["step"] == 1 and torch.equal(old["model"]["w"], torch.zeros(10000))
    leftovers = list(ckpt_dir.glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the torn write, never under the real name
    assert resume_candidates(ckpt_dir) == [ckpt_dir / "last.pt"]  # resume=auto never looks at temp files


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint({"model": {"w": torch.zeros(3)}, "step": 1}, tmp_path / "last.pt")

    def disk_full(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="cannot write checkpoint .*No space left"):
        save_checkpoint({"model": {"w": torch.ones(3)}, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# ------------------------------------------------------------------ resume=auto
def test_auto_resume_skips_a_truncated_newest_checkpoint(tmp_path: Path, caplog) -> None:
    for step in (4, 8):
        save_checkpoint(fake_ckpt(step), step_checkpoint_path(tmp_path, step))
    newest = step_checkpoint_path(tmp_path, 8)
    newest.write_bytes(newest.read_bytes()[:300])
    with caplog.at_level(logging.WARNING, logger="segdeconv"):
        path, ckpt = find_resumable(tmp_path)
    assert path.name == "step_0000004.pt" and ckpt["step"] == 4
    assert "skipping" in caplog.text and "step_0000008.pt" in caplog.text and "truncated" in caplog.text
    step_checkpoint_path(tmp_path, 4).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints"):
        find_resumable(tmp_path)
    (tmp_path / "empty").mkdir()
    assert find_resumable(tmp_path / "empty") is None


def test_auto_resume_prefers_the_newest_file_and_needs_training_state(tmp_path: Path) -> None:
    save_checkpoint(fake_ckpt(8), step_checkpoint_path(tmp_path, 8))
    save_checkpoint(fake_ckpt(10), tmp_path / "last.pt")  # e.g. written on SIGTERM after step 10
    assert find_resumable(tmp_path)[0].name == "last.pt"
    save_checkpoint({"model": {}, "step": 12}, step_checkpoint_path(tmp_path, 12))  # weights only
    assert find_resumable(tmp_path)[0].name == "last.pt"


def test_prune_keeps_the_newest_and_files_ahead_of_the_run(tmp_path: Path) -> None:
    for step in (4, 8, 12, 16):
        save_checkpoint(fake_ckpt(step), step_checkpoint_path(tmp_path, step))
    (tmp_path / "step_notes.pt").write_text("user file")
    deleted = prune_step_checkpoints(tmp_path, keep=2, current_step=12)
    assert [p.name for p in deleted] == ["step_0000004.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_0000008.pt", "step_0000012.pt", "step_0000016.pt", "step_notes.pt"]


# ------------------------------------------------------------------ NaN guard
def tiny_trainer(out: Path, **values: object) -> Trainer:
    args = tiny(**{"dataset__train__length": 8, "dataset__val__length": 4, "trainer__max_epochs": 2, **values})
    return build_trainer(compose_cfg(args + [f"output_dir={out}"]))


def poison(model: nn.Module, steps: set[int], where: str = "input") -> None:
    """Make training forward pass k (= optimizer step k) produce NaN (input) or NaN gradients (grad)."""
    calls = {"n": 0}

    def count(module: nn.Module, args: tuple) -> None:
        if module.training:
            calls["n"] += 1

    def nan_input(module: nn.Module, args: tuple):
        return (args[0] * float("nan"),) if module.training and calls["n"] in steps else None

    model.register_forward_pre_hook(count)
    if where == "input":
        model.register_forward_pre_hook(nan_input)
    else:
        w = next(model.parameters())
        w.register_hook(lambda g: g * float("nan") if calls["n"] in steps else g)


def bn_batches(model: nn.Module) -> int:
    return int(next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)).num_batches_tracked)


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("where, words", [("input", "loss is nan at step 3"),
                                          ("grad", "gradients are not finite (loss")])
def test_nonfinite_step_stops_and_keeps_checkpoints(tmp_path: Path, one_thread, where: str, words: str) -> None:
    tr = tiny_trainer(tmp_path)
    poison(tr.model, {3}, where)  # 2 steps per epoch: epoch 1 is saved, the first step of epoch 2 is bad
    ckpts = tmp_path / "checkpoints"
    with pytest.raises(NonFiniteLoss) as info:
        tr.fit()
    msg = str(info.value)
    assert words in msg and "(lr " in msg and "optimizer.lr" in msg and "skip_nonfinite_steps" in msg, msg
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "last.pt"]
    last = load_checkpoint(ckpts / "last.pt")
    assert last["step"] == 2 and all_finite(last["model"])
    assert all_finite(tr.model.state_dict()) and bn_batches(tr.model) == 2  # the bad pass left no trace


def test_skip_nonfinite_steps_tolerates_isolated_bad_batches(tmp_path: Path, one_thread) -> None:
    tr = tiny_trainer(tmp_path, trainer__skip_nonfinite_steps=1, trainer__max_epochs=3)
    poison(tr.model, {3, 5})  # two isolated bad steps, never two in a row
    tr.fit()
    assert tr.state.step == 6 and tr.state.skipped_steps == 2
    assert all_finite(tr.model.state_dict()) and bn_batches(tr.model) == 4  # BN statistics restored
    assert [v != v for v in tr.state.losses] == [False, False, True, False, True, False]


def test_skip_nonfinite_steps_stops_when_bad_steps_follow_each_other(tmp_path: Path, one_thread) -> None:
    tr = tiny_trainer(tmp_path, trainer__skip_nonfinite_steps=1)
    poison(tr.model, {3, 4})
    with pytest.raises(NonFiniteLoss, match="at step 4 .*2 bad steps in a row"):
        tr.fit()


def test_divergence_never_overwrites_a_checkpoint_with_nonfinite_weights(tmp_path: Path, one_thread) -> None:
    tr = tiny_trainer(tmp_path, optimizer__lr=1e30, trainer__checkpoint_every_steps=1)
    with pytest.raises(NonFiniteLoss, match="optimizer.lr"):
        tr.fit()
    for p in (tmp_path / "checkpoints").glob("*.pt"):
        assert all_finite(load_checkpoint(p)["model"]), p


def engine_run(scaler, skip: int = 0) -> tuple[nn.Module, LoopState]:
    """Three SGD steps of a conv+BN net; the second batch is NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 2, (2, 8, 8))
    state = LoopState()
    train_batches(model, [(x, y), (x * float("nan"), y), (x, y)], nn.CrossEntropyLoss(), opt, sched, scaler,
                  StepConfig(torch.device("cpu"), skip_nonfinite=skip), state)
    return model, state


def test_fp16_scaler_skips_nonfinite_steps_itself() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    model, state = engine_run(scaler)  # no error although skip_nonfinite=0: the scaler owns the decision
    assert state.step == 3 and state.skipped_steps == 1 and scaler.get_scale() == 512.0
    assert all_finite(model.state_dict()) and bn_batches(model) == 2


# ------------------------------------------------------------------ safe loading
class RunsCode:
    """Unpickling this calls ``open(path, "w")``: a pickle that executes code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable, tuple]:
        return open, (self.path, "w")


def test_code_executing_pickle_is_refused(tmp_path: Path) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": RunsCode(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="could execute code; refused"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_resume_with_another_architecture_names_both(tmp_path: Path, one_thread) -> None:
    tr = tiny_trainer(tmp_path / "a")
    save_checkpoint(tr.checkpoint_state(), tmp_path / "a.pt")
    before = tree_digest(tmp_path)
    wider = tiny_trainer(tmp_path / "b", model__encoder__width=0.25, trainer__resume=tmp_path / "a.pt")
    with pytest.raises(CheckpointError) as info:
        wider.fit()
    msg = str(info.value)
    assert "a.pt was trained with model segnet (5 classes, vgg11 encoder, width 0.125)" in msg
    assert "this run builds segnet (5 classes, vgg11 encoder, width 0.25)" in msg and "\n" not in msg
    assert tree_digest(tmp_path) == before


def test_first_stop_signal_only_sets_a_flag_second_aborts() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: no KeyboardInterrupt, the loop will stop itself
        assert stop.signum == signal.SIGINT and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
