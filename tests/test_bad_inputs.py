"""Bad inputs through the real CLIs: each gives exit code 2, ONE ``error:`` line naming the thing
and the fix, no traceback (unless HYDRA_FULL_ERROR=1), and leaves every user file untouched (issue #17's
cases and their neighbours: hostile_cases.py).

All cases run in parallel in one fixture (each CLI start costs a few seconds of imports); the
parametrized test then checks them one by one.
"""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_cli, tree_digest
from conftest import compose_cfg
from data_helpers import make_camvid, rand_image, write_png
from hostile_cases import HOSTILE, TRAIN, Case, make_folders, make_run, read_only
from segdeconv.engine.checkpoint import save_checkpoint
from test_reliability import RunsCode

CAMVID = ("dataset=camvid", "dataset.image_size=[64,80]", "dataset.batch_size=2", "trainer.max_epochs=1",
          "trainer.progress=false", "model.encoder.width=0.125", "model.encoder.compact_switches=false")
CASES: dict[str, Case] = {
    "unknown_group_option": Case("train.py", ("model=segnett",), ("model=segnett", "segnet_lite")),
    "unknown_list_group_option": Case("train.py", ("logger=[tensorboard,mlfow]",),
                                      ("logger=mlfow is not a known logger option", "mlflow, tensorboard, wandb")),
    "misspelled_key": Case("train.py", ("trainer.max_epoch=3",), ("trainer.max_epoch", "did you mean trainer.max_epochs")),
    "unparsable_override": Case("train.py", ("trainer.max_epochs=[1",), ("cannot parse", "trainer.max_epochs=[1")),
    "negative_batch_size": Case("train.py", (*TRAIN, "dataset.batch_size=-4"), ("dataset.batch_size=-4", "≥ 1")),
    "dataset_root_not_set": Case("train.py", ("dataset=camvid",), ("dataset.root is required", "dataset.root=")),
    "missing_dataset_root": Case("train.py", (*CAMVID, "dataset.root={u}/nowhere"), ("nowhere", "does not exist")),
    "empty_split": Case("train.py", (*CAMVID, "dataset.root={u}/camvid_empty"), ("train.txt", "empty")),
    "image_mask_size_mismatch": Case("train.py", (*CAMVID, "dataset.root={u}/camvid_size", "dataset.num_workers=2"),
                                     ("trainannot/train_001.png", "16x10", "fix:")),
    "label_out_of_range": Case("train.py", (*CAMVID, "dataset.root={u}/camvid_label", "dataset.num_workers=0"),
                               ("train_000.png", "[37]", "fix:")),
    "corrupt_image": Case("train.py", (*CAMVID, "dataset.root={u}/camvid_corrupt", "dataset.num_workers=2"),
                          ("train/train_001.png", "cannot be decoded", "fix:")),
    "missing_resume_checkpoint": Case("train.py", (*TRAIN, "trainer.resume={u}/ckpt/missing.pt"),
                                      ("missing.pt not found", "trainer.resume=")),
    "corrupt_resume_checkpoint": Case("train.py", (*TRAIN, "trainer.resume={u}/ckpt/truncated.pt"),
                                      ("truncated.pt", "unreadable or truncated")),
    "foreign_resume_checkpoint": Case("train.py", (*TRAIN, "trainer.resume={u}/ckpt/foreign.pt"),
                                      ("foreign.pt", "not a segdeconv checkpoint")),
    "resume_other_architecture": Case("train.py", (*TRAIN, "model.encoder.width=0.25", "trainer.resume={u}/ckpt/good.pt"),
                                      ("width 0.125", "width 0.25", "without trainer.resume")),
    "unwritable_output_dir": Case("train.py", (*TRAIN, "hydra.run.dir={u}/a_file/run"), ("a_file", "hydra.run.dir=")),
    "input_smaller_than_model": Case("train.py", (*TRAIN, "model=deconvnet", "dataset.image_size=[64,64]",
                                                  "model.fc_channels=32", "model.encoder.width=0.125"),
                                     ("64×64 is too small", "≥ 193")),
    "num_classes_model_vs_dataset": Case("train.py", (*TRAIN, "model.num_classes=7"),
                                         ("model.num_classes=7", "dataset.num_classes=5")),
    "cuda_without_gpu": Case("train.py", (*TRAIN, "trainer.device=cuda"), ("no CUDA GPU", "trainer.device=cpu")),
    "nan_from_huge_lr": Case("train.py", (*TRAIN, "optimizer.lr=1e30"), ("loss is nan at step", "Lower optimizer.lr")),
    "evaluate_ckpt_not_given": Case("evaluate.py", (), ("ckpt_path is required",)),
    "evaluate_missing_checkpoint": Case("evaluate.py", ("ckpt_path={u}/ckpt/missing.pt",), ("missing.pt not found",)),
    "evaluate_code_executing_pickle": Case("evaluate.py", ("ckpt_path={u}/ckpt/evil.pt",), ("could execute code", "refused")),
    "evaluate_num_classes_mismatch": Case("evaluate.py", ("ckpt_path={u}/ckpt/good.pt", "dataset=camvid",
                                                          "dataset.root={u}/camvid_ok"), ("11 classes", "trained with 5")),
    "predict_missing_input": Case("predict.py", ("ckpt_path={u}/ckpt/good.pt", "input={u}/no_images", "output={r}/out"),
                                  ("no_images does not exist", "input=")),
    "predict_output_is_input": Case("predict.py", ("ckpt_path={u}/ckpt/good.pt", "input={u}/images", "output={u}/images"),
                                    ("is the input folder", "choose another folder")),
    "predict_only_corrupt_images": Case("predict.py", ("ckpt_path={u}/ckpt/good.pt", "input={u}/bad_images",
                                                       "output={r}/out"), ("none of the 1 input files", "broken.png")),
    "export_corrupt_checkpoint": Case("export.py", ("ckpt_path={u}/ckpt/truncated.pt", "output={r}/m.onnx"),
                                      ("truncated.pt", "unreadable or truncated")),
    "export_unknown_format": Case("export.py", ("ckpt_path={u}/ckpt/good.pt", "format=tflite", "output={r}/m.x"),
                                  ("format='tflite'", "onnx or torchscript")),
    **HOSTILE,  # issue #17 and its neighbours
}


def make_user_tree(u: Path) -> None:
    """Small broken CamVid trees, checkpoints (good, truncated, foreign, code-executing), images."""
    make_camvid(u / "camvid_ok")
    for name in ("camvid_empty", "camvid_size", "camvid_label", "camvid_corrupt"):
        shutil.copytree(u / "camvid_ok", u / name)
    (u / "camvid_empty" / "train.txt").write_text("")
    shutil.copytree(u / "camvid_ok", u / "camvid_leak")
    with open(u / "camvid_leak" / "val.txt", "a") as f:
        f.write("train/train_001.png trainannot/train_001.png\n")  # a training image listed for validation
    write_png(u / "camvid_size" / "trainannot" / "train_001.png", np.zeros((10, 16)))
    write_png(u / "camvid_label" / "trainannot" / "train_000.png", np.full((12, 16), 37))
    img = u / "camvid_corrupt" / "train" / "train_001.png"
    img.write_bytes(img.read_bytes()[:60])
    from segdeconv.tasks.train import build_trainer

    cfg = compose_cfg([*TRAIN, f"output_dir={u / 'unused'}"])
    good = save_checkpoint(build_trainer(cfg).checkpoint_state(), u / "ckpt" / "good.pt")
    shutil.rmtree(u / "unused", ignore_errors=True)
    make_run(u / "run", good, cfg)
    for name, case in CASES.items():
        if any("{own}" in a for a in case.args):
            make_run(u / "owned" / name, good, cfg)
    make_folders(u)
    (u / "ckpt" / "truncated.pt").write_bytes(good.read_bytes()[:5000])
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3)}, u / "ckpt" / "foreign.pt")
    torch.save({"model": {}, "payload": RunsCode(str(u / "PWNED"))}, u / "ckpt" / "evil.pt")
    write_png(u / "images" / "street.png", rand_image(64, 80))
    (u / "bad_images").mkdir()
    (u / "bad_images" / "broken.png").write_bytes(b"\x89PNG not really")
    (u / "a_file").write_text("a regular file where a directory is expected")


def run_case(name: str, u: Path, runs: Path, **env: str) -> subprocess.CompletedProcess:
    case, r = CASES[name], runs / name
    args = [a.format(u=u, r=r, ro=u / "readonly", own=u / "owned" / name) for a in case.args]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={r}")
    return run_cli(case.script, args, timeout=600, **env)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Every case's CompletedProcess (+ "full_error": one case with HYDRA_FULL_ERROR=1), and the user
    tree's digests before and after."""
    u, runs = tmp_path_factory.mktemp("user"), tmp_path_factory.mktemp("runs")
    make_user_tree(u)
    with read_only(u / "readonly"):
        before = tree_digest(u)
        with ThreadPoolExecutor(3) as pool:
            jobs = {name: pool.submit(run_case, name, u, runs) for name in CASES}
            jobs["full_error"] = pool.submit(run_case, "corrupt_resume_checkpoint", u, runs / "full",
                                             HYDRA_FULL_ERROR="1")
            out = {name: job.result() for name, job in jobs.items()}
        after = tree_digest(u)
    return {"runs": out, "before": before, "after": after, "user": u}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clean_error_line(results: dict, name: str) -> None:
    r = results["runs"][name]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(errors) == 1 and "\n" not in errors[0], r.stderr[-3000:]
    missing = [w for w in CASES[name].words if w not in errors[0]]
    assert not missing, f"{errors[0]!r} lacks {missing}"


def test_no_user_file_was_modified_or_created(results: dict) -> None:
    assert results["after"] == results["before"]
    assert not (results["user"] / "PWNED").exists()  # the code-executing pickle never ran


def test_hydra_full_error_shows_the_traceback(results: dict) -> None:
    r = results["runs"]["full_error"]
    assert r.returncode != 0 and "Traceback" in r.stderr and "CheckpointError" in r.stderr
