"""Every writer follows one rule (segdeconv/engine/outputs.py): never over an input or a checkpoint;
predict lists every file it skipped; check_data reports same-stem files and train/val overlap; the
resume policy table (issue #17)."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli, tree_digest
from hostile_cases import _pair

from segdeconv.engine.checkpoint import strip_checkpoint
from segdeconv.engine.outputs import check_output_file, is_checkpoint, run_dir_owner
from segdeconv.engine.resume import check_resume_config
from segdeconv.errors import CheckpointError, UserError
from segdeconv.schema import FREE, REFUSE, WARN, resume_policy


def test_is_checkpoint_tells_torch_save_files_from_torchscript_and_other_files(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "zip.pt")
    torch.save({"model": {}}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(tmp_path / "ts.pt"))
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07 not a zip")
    assert [is_checkpoint(tmp_path / n) for n in ("zip.pt", "legacy.pt", "ts.pt", "model.onnx", "absent.pt")] == [
        True, True, False, False, False]


def test_output_file_rule_refuses_inputs_checkpoints_and_folders(tmp_path: Path) -> None:
    ckpt = tmp_path / "best.pt"
    torch.save({"model": {}}, ckpt)
    os.link(ckpt, tmp_path / "hardlink.pt")
    for dst, words in ((ckpt, "is this task's input"), (tmp_path / "sub" / ".." / "best.pt", "is this task's input"),
                       (tmp_path / "hardlink.pt", "is this task's input"), (tmp_path, "is a folder")):
        with pytest.raises(UserError, match=words):
            check_output_file(dst, [ckpt])
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="other.pt is an existing checkpoint"):
        check_output_file(tmp_path / "other.pt", [ckpt])
    assert check_output_file(tmp_path / "best.onnx", [ckpt]) == tmp_path / "best.onnx"


def test_strip_checkpoint_never_writes_over_its_source(tiny_ckpt: Path, tmp_path: Path) -> None:
    before = tiny_ckpt.read_bytes()
    with pytest.raises(UserError, match="is this task's input"):
        strip_checkpoint(tiny_ckpt, tiny_ckpt)
    assert tiny_ckpt.read_bytes() == before
    strip_checkpoint(tiny_ckpt, tmp_path / "small.pt")
    assert is_checkpoint(tmp_path / "small.pt")


def test_run_dir_owner_names_a_record_or_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "a" / ".hydra").mkdir(parents=True)
    (tmp_path / "a" / ".hydra" / "config.yaml").write_text("model: {}\ntask: evaluate\n")
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    torch.save({}, tmp_path / "b" / "checkpoints" / "last.pt")
    (tmp_path / "c").mkdir()
    assert run_dir_owner(tmp_path / "a") == ("evaluate", "the .hydra/ record of an evaluate run")
    assert run_dir_owner(tmp_path / "b") == ("train", "the checkpoints of a training run")
    assert run_dir_owner(tmp_path / "c") is None and run_dir_owner(tmp_path / "none") is None


@pytest.mark.slow
def test_export_writes_beside_the_checkpoint_and_may_replace_its_own_export(tiny_ckpt: Path, tmp_path: Path) -> None:
    run = tmp_path / "checkpoints"
    run.mkdir()
    tiny_ckpt = Path(shutil.copy(tiny_ckpt, run / "best.pt"))
    before = {k: v for k, v in tree_digest(run).items() if not k.endswith(".torchscript.pt")}
    for attempt in (1, 2):
        r = run_cli("export.py", [f"ckpt_path={tiny_ckpt}", "format=torchscript", "verify=false",
                                  f"hydra.run.dir={tmp_path / f'export{attempt}'}"])
        assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "best.torchscript.pt").is_file() and not is_checkpoint(run / "best.torchscript.pt")
    assert {k: v for k, v in tree_digest(run).items() if not k.endswith(".torchscript.pt")} == before
    assert not list(run.glob(".*.tmp*"))


@pytest.mark.slow
def test_predict_lists_a_broken_symlink_among_the_skipped_files(tiny_ckpt: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    _pair(tmp_path / "data", "a")
    src.mkdir()
    os.replace(tmp_path / "data" / "images" / "a.png", src / "a.png")
    (src / "gone.png").symlink_to(tmp_path / "deleted.png")
    r = run_cli("predict.py", [f"ckpt_path={tiny_ckpt}", f"input={src}", f"output={tmp_path / 'out'}", "progress=false",
                               f"hydra.run.dir={tmp_path / 'hydra'}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "predicted 1 image(s)" in r.stdout and f"skipped 1 unreadable: {src / 'gone.png'}" in r.stdout
    assert "gone.png is a broken symbolic link" in r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "index").iterdir()) == ["a.png"]


def check_data(root: Path, tmp_path: Path, *extra: str):
    return run_cli("check_data.py", ["dataset=folder", f"dataset.root={root}", "dataset.num_classes=5",
                                     "dataset.class_names=[c0,c1,c2,c3,c4]", *extra,
                                     f"hydra.run.dir={tmp_path / 'hydra' / root.name}"])


@pytest.mark.slow
def test_check_data_reports_two_files_with_one_stem_and_train_val_overlap(tmp_path: Path) -> None:
    stem, overlap = tmp_path / "stem", tmp_path / "overlap"
    for split, names in (("train", "ab"), ("val", "c")):
        for k, n in enumerate(names):
            _pair(stem / split, n, k)
    _pair(stem / "train", "a", 7, ".jpg")
    for k, n in enumerate("abc"):
        _pair(overlap, n, k)
    (overlap / "train.txt").write_text("a\nb\n")
    (overlap / "val.txt").write_text("b\nc\n")
    r = check_data(stem, tmp_path)
    assert r.returncode == 1 and "[train] PROBLEM:" in r.stdout and "FAILED" in r.stdout, r.stdout + r.stderr
    problem = next(ln for ln in r.stdout.splitlines() if "PROBLEM" in ln)
    assert "a.jpg" in problem and "a.png" in problem and "same stem 'a'" in problem
    r = check_data(overlap, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "PROBLEM: split 'train': contains 1 images of split 'val' (e.g." in r.stdout and "b.png" in r.stdout


@pytest.mark.parametrize("key, policy", [
    ("optimizer.lr", REFUSE), ("scheduler.power", REFUSE), ("model.encoder.width", REFUSE), ("dataset.name", REFUSE),
    ("dataset.batch_size", REFUSE), ("trainer.seed", REFUSE), ("dataset.root", WARN), ("dataset.val.root", WARN),
    ("loss.class_weight_power", WARN), ("trainer.max_epochs", WARN), ("some.new_key", WARN),
    ("model.checkpoint", FREE), ("dataset.num_workers", FREE), ("trainer.log_every_steps", FREE)])
def test_resume_policy_of_each_key(key: str, policy: str) -> None:
    assert resume_policy(key) == policy


def test_check_resume_config_refuses_names_old_and_new_and_returns_warnings() -> None:
    was = {"optimizer": {"lr": 0.002}, "dataset": {"root": "/a", "num_workers": 0}, "trainer": {"max_epochs": 1},
           "model": {"dropout": 0.0}}
    warn = check_resume_config("ck.pt", was, {**was, "dataset": {"root": "/b", "num_workers": 4},
                                              "trainer": {"max_epochs": 3}, "model": {}})
    assert warn == ["dataset.root changes from '/a' to '/b': the resumed run uses the new value",
                    "trainer.max_epochs changes from 1 to 3: the resumed run uses the new value"]
    with pytest.raises(CheckpointError, match=r"ck.pt was trained with other options: .*optimizer.lr \(0.002 → nan\)"):
        check_resume_config("ck.pt", was, {**was, "optimizer": {"lr": math.nan}})


def test_val_images_in_train_are_refused_unless_allowed_then_warned(tmp_path: Path, caplog) -> None:
    from conftest import compose_cfg
    from data_helpers import make_camvid

    from segdeconv.errors import DataError
    from segdeconv.tasks.train import build_trainer

    root = make_camvid(tmp_path / "camvid")
    args = ["dataset=camvid", f"dataset.root={root}", "dataset.val.split=train", "dataset.batch_size=2",
            "model.encoder.width=0.125", f"output_dir={tmp_path / 'run'}"]
    with pytest.raises(DataError, match=r"contains 2 images of dataset.val \(split 'train'\).*allow_val_in_train"):
        build_trainer(compose_cfg(args))
    with caplog.at_level("WARNING", logger="segdeconv"):
        build_trainer(compose_cfg([*args, "trainer.allow_val_in_train=true"]))
    assert "trainer.allow_val_in_train=true: dataset.train (split 'train'): contains 2 images" in caplog.text
