"""A run that stopped part-way through its epoch end is completed by its resume (issue #17): killed right
after the final step checkpoint, stopped by a corrupt validation image, or by a full disk."""
from __future__ import annotations

import errno
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli, tiny, tree_digest
from conftest import compose_cfg
from hostile_cases import FOLDER, _pair

from segdeconv.cli import run_task
from segdeconv.engine.checkpoint import load_checkpoint, save_checkpoint
from segdeconv.errors import CheckpointError
from segdeconv.tasks.train import fit

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips


def ckpts(run: Path) -> dict[str, dict]:
    return {p.name: load_checkpoint(p) for p in sorted((run / "checkpoints").glob("*.pt"))}


def test_resume_after_a_kill_right_after_the_final_step_checkpoint_validates_and_saves(tmp_path: Path) -> None:
    run, args = tmp_path / "run", tiny(trainer__max_epochs=1, trainer__checkpoint_every_steps=4)  # 4 steps
    assert run_cli("train.py", [*args, f"hydra.run.dir={run}"]).returncode == 0
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "val_metrics.json"):
        (run / name).unlink()  # what a SIGKILL right after step_0000004.pt leaves: the epoch end never ran
    r = run_cli("train.py", [*args, "trainer.resume=auto", f"hydra.run.dir={run}"])
    assert r.returncode == 0, r.stderr[-3000:]
    saved = ckpts(run)
    assert sorted(saved) == ["best.pt", "last.pt", "step_0000004.pt"]
    history = __import__("json").loads((run / "val_metrics.json").read_text())
    assert [h["step"] for h in history] == [4] and saved["last.pt"]["history"] == history
    assert saved["best.pt"]["step"] == saved["last.pt"]["step"] == 4
    assert saved["last.pt"]["best_metric"] == history[0]["mIoU"]


def test_corrupt_val_image_keeps_the_epochs_training_and_the_resume_validates_it(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    for split, names in (("train", "ab"), ("val", "cd")):
        for k, n in enumerate(names):
            _pair(data / split, n, k)
    bad = data / "val" / "images" / "d.png"
    good = bad.read_bytes()
    bad.write_bytes(good[:80])
    before = tree_digest(data)
    r = run_cli("train.py", [*FOLDER, f"dataset.root={data}", f"hydra.run.dir={run}"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "val/images/d.png" in [ln for ln in r.stderr.splitlines() if ln.startswith("error:")][0]
    assert tree_digest(data) == before
    last = load_checkpoint(run / "checkpoints" / "last.pt")  # saved before validation read a file
    assert (last["epoch"], last["step"], last["history"]) == (1, 1, [])
    bad.write_bytes(good)
    r = run_cli("train.py", [*FOLDER, f"dataset.root={data}", "trainer.resume=auto", f"hydra.run.dir={run}"])
    assert r.returncode == 0, r.stderr[-3000:]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 1 and [h["step"] for h in last["history"]] == [1]  # validated, no step retrained
    assert (run / "checkpoints" / "best.pt").is_file()


def failing_torch_save(monkeypatch, fail_call: int) -> None:
    """torch.save fails at call ``fail_call`` as it does on a full disk: the writer's Python file raises
    OSError(ENOSPC) mid-file, and torch's zip writer passes it on."""
    real, calls = torch.save, {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == fail_call:
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_while_saving_best_is_one_error_line_and_no_false_new_best(tmp_path, monkeypatch, capsys) -> None:
    """In-process (a tiny tmpfs is not available): torch.save monkeypatched to fail like a full disk."""
    run = tmp_path / "run"
    cfg = compose_cfg(tiny(trainer__max_epochs=1, dataset__train__length=8, dataset__val__length=4) +
                      [f"output_dir={run}"])
    failing_torch_save(monkeypatch, fail_call=2)  # 1: last.pt before validation, 2: best.pt after it
    with pytest.raises(SystemExit) as exit_info:
        run_task(fit, cfg)
    monkeypatch.undo()
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"cannot write checkpoint {run / 'checkpoints' / 'best.pt'}: " in line and "MiB free" in line
    assert "previous checkpoint files are intact" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]  # no best.pt, no temp file
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["history"] == [] and last["best_metric"] == -math.inf  # the failed validation is not recorded
    cfg.trainer.resume = "auto"
    fit(cfg)  # completes the validation and writes best.pt
    saved = ckpts(run)
    assert [h["step"] for h in saved["last.pt"]["history"]] == [2]
    assert saved["best.pt"]["best_metric"] == saved["last.pt"]["best_metric"] == saved["last.pt"]["history"][0]["mIoU"]


def test_save_checkpoint_turns_a_full_disk_into_a_checkpoint_error(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint({"model": {"w": torch.zeros(3)}, "step": 1}, tmp_path / "last.pt")
    failing_torch_save(monkeypatch, fail_call=1)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*last.pt: No space left on device.*MiB free"):
        save_checkpoint({"model": {"w": torch.ones(3)}, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_runtime_error_that_is_not_a_write_failure_still_raises(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        save_checkpoint({"model": {}}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_resuming_a_complete_run_changes_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = compose_cfg(tiny(trainer__max_epochs=1, dataset__train__length=8, dataset__val__length=4) +
                      [f"output_dir={run}"])
    fit(cfg)
    shutil.rmtree(run / "tb")
    before = tree_digest(run)
    cfg.trainer.resume = "auto"
    fit(cfg)
    shutil.rmtree(run / "tb")
    assert tree_digest(run) == before
