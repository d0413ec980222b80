"""Bad inputs through the real CLIs: each gives exit code 2, ONE ``error:`` line naming the thing
and the fix, no traceback (unless HYDRA_FULL_ERROR=1), and leaves every user file untouched (issue #17's
cases and their neighbours: hostile_cases.py; issue #32's: hostile_cases_32.py). "One line" is what
``grep '^error:'`` sees: lines split at newlines only (a progress bar's ``\r`` residue does not count).

The selected cases run in parallel in one fixture (each CLI start costs a few seconds of imports); the
parametrized test then checks them one by one. ``-k <case>`` runs only the cases selected.
"""
from __future__ import annotations

import json
import shutil
import stat
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
from hostile_cases_32 import HOSTILE_32, make_tree_32
from test_reliability import RunsCode

from segdeconv.engine.checkpoint import save_checkpoint

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips

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
    **HOSTILE_32,  # issue #32 and its neighbours
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
    make_tree_32(u, u / "owned")


def run_case(name: str, u: Path, runs: Path, **env: str) -> subprocess.CompletedProcess:
    case, r = CASES[name], runs / name
    fill = dict(u=u, r=r, ro=u / "readonly", own=u / "owned" / name)
    args = [a.format(**fill) for a in case.args]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={r}")
    return run_cli(case.script, args, timeout=600, **{k: v.format(**fill) for k, v in case.env}, **env)


def selected_cases(request: pytest.FixtureRequest) -> list[str]:
    """The cases whose test this session runs (``-k``), all of them when no case test is selected."""
    names = [item.callspec.params["name"] for item in request.session.items
             if item.module is request.module and hasattr(item, "callspec") and "name" in item.callspec.params]
    return [n for n in CASES if n in names] or list(CASES)


@pytest.fixture(scope="module")
def results(tmp_path_factory, request) -> dict:
    """Every selected case's CompletedProcess (+ "full_error": one case with HYDRA_FULL_ERROR=1), and the
    user tree's digests before and after."""
    u, runs = tmp_path_factory.mktemp("user"), tmp_path_factory.mktemp("runs")
    make_user_tree(u)
    with read_only(u / "readonly"):
        before = tree_digest(u)
        with ThreadPoolExecutor(3) as pool:
            jobs = {name: pool.submit(run_case, name, u, runs) for name in selected_cases(request)}
            jobs["full_error"] = pool.submit(run_case, "corrupt_resume_checkpoint", u, runs / "full",
                                             HYDRA_FULL_ERROR="1")
            out = {name: job.result() for name, job in jobs.items()}
        after = tree_digest(u)
    return {"runs": out, "before": before, "after": after, "user": u, "run_dirs": runs}


def error_lines(text: str) -> list[str]:
    """The lines ``grep '^error:'`` finds: split at newlines only."""
    return [line for line in text.split("\n") if line.startswith("error:")]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clean_error_line(results: dict, name: str) -> None:
    r, case = results["runs"][name], CASES[name]
    assert r.returncode == case.code, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    if case.code == 1:  # check_data: problems found, each a PROBLEM line on stdout
        lines = [line for line in r.stdout.split("\n") if "PROBLEM:" in line]
        assert not error_lines(r.stderr) and any(all(w in line for w in case.words) for line in lines), r.stdout
        return
    errors = error_lines(r.stderr)
    assert len(errors) == 1, r.stderr[-3000:]
    missing = [w for w in case.words if w not in errors[0]]
    assert not missing, f"{errors[0]!r} lacks {missing}"
    wrong = [w for w in case.absent if w in errors[0]]
    assert not wrong, f"{errors[0]!r} blames {wrong}"


def test_no_user_file_was_modified_or_created(results: dict) -> None:
    assert results["after"] == results["before"]
    assert not (results["user"] / "PWNED").exists()  # the code-executing pickle never ran
    devices = results["user"] / "devices"
    if devices.exists():  # neither device node was replaced by a regular file
        assert not stat.S_ISREG((devices / "null").stat().st_mode) and stat.S_ISFIFO((devices / "fifo").stat().st_mode)


def test_a_refused_run_leaves_no_run_dir(results: dict) -> None:
    """Refused before writing anything of its own, a run leaves no run dir (no .hydra/ record, no log) to
    refuse the corrected command; a training run that wrote checkpoints stays, to be resumed."""
    left = sorted(p.name for p in results["run_dirs"].iterdir()
                  if p.name in results["runs"] and p.name not in KEEPS_RUN_DIR)
    assert not left, {n: sorted(q.name for q in (results["run_dirs"] / n).rglob("*"))[:8] for n in left}


def test_a_full_disk_leaves_the_previous_files_and_no_temp_file(results: dict) -> None:
    runs = results["run_dirs"]
    if "train_on_a_full_disk" in results["runs"]:  # the epoch's last.pt was saved, its second write failed
        from segdeconv.engine.checkpoint import load_checkpoint

        assert load_checkpoint(runs / "train_on_a_full_disk" / "checkpoints" / "last.pt")["epoch"] == 1
    assert not [p for p in runs.rglob(".*.tmp")]


def test_the_corrected_command_runs_in_the_refused_run_dir(results: dict) -> None:
    """``evaluate.py ckpt_path=<missing>`` refused, then the corrected command into the same run dir."""
    if "evaluate_missing_checkpoint" not in results["runs"]:
        pytest.skip("case not selected")
    u, r = results["user"], results["run_dirs"] / "evaluate_missing_checkpoint"
    done = run_cli("evaluate.py", [f"ckpt_path={u}/ckpt/good.pt", f"hydra.run.dir={r}", "report.figures=false",
                                   "report.tensorboard=false"], timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((r / "metrics.json").read_text(), parse_constant=_no_nan)
    assert 0 <= metrics["mIoU"] <= 1


def _no_nan(token: str) -> None:
    raise AssertionError(f"metrics.json holds {token}: not JSON")


# cases whose run dir holds what the run wrote before failing (checkpoints to resume, a sweep's trials), a
# report that is no refusal (check_data's, exit 1), or is no run dir
KEEPS_RUN_DIR = {"train_on_a_full_disk", "train_with_an_all_void_validation_split", "optuna_every_trial_diverges",
                 "check_data_on_all_void_labels", "full"}


def test_hydra_full_error_shows_the_traceback(results: dict) -> None:
    r = results["runs"]["full_error"]
    assert r.returncode != 0 and "Traceback" in r.stderr and "CheckpointError" in r.stderr
