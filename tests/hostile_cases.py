"""Issue #17's hostile inputs and their neighbours, as :class:`Case` rows for test_bad_inputs.py.

Each is one CLI call that must end in ONE ``error:`` line holding all ``words``, exit code 2, no
traceback, and leave the user tree (``{u}``, built by :func:`make_hostile_tree`) unchanged — including
the fabricated training run ``{u}/run`` (its ``.hydra`` record, checkpoints and log) and the copy of it
each case that trains in it gets (``{own}``: a run dir has one trainer at a time). ``{ro}`` is a
read-only folder (``chattr +i`` as root, where permissions do not stop writes; ``chmod`` otherwise).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from cli_helpers import tiny
from data_helpers import rand_image, write_png
from omegaconf import OmegaConf


class Case(NamedTuple):
    script: str
    args: tuple[str, ...]  # {u} user tree, {r} this case's run dir, {ro} a read-only folder, {own} a copy of {u}/run
    words: tuple[str, ...]  # all must appear in the error line
    env: tuple[tuple[str, str], ...] = ()  # extra environment ({u}, {r} formatted too)
    code: int = 2  # the exit code; 1 (check_data's "problems found"): words are looked for in its PROBLEM lines
    absent: tuple[str, ...] = ()  # none may appear in the error line (a wrong diagnosis)


TRAIN = tuple(tiny(trainer__max_epochs=1))
FOLDER = ("dataset=folder", "dataset.num_classes=5", "dataset.class_names=[c0,c1,c2,c3,c4]",
          "dataset.image_size=[64,80]", "dataset.batch_size=2", "dataset.num_workers=0", "trainer.max_epochs=1",
          "trainer.progress=false", "model.encoder.width=0.125", "trainer.precision=fp32")
CAMVID_TINY = ("dataset=camvid", "dataset.image_size=[64,80]", "dataset.batch_size=2", "trainer.max_epochs=1",
               "trainer.progress=false", "model.encoder.width=0.125")
RUN, BEST = "{u}/run", "{u}/run/checkpoints/best.pt"

HOSTILE: dict[str, Case] = {
    # data loss: an export over its own input or another checkpoint, into a folder or a read-only place
    "export_torchscript_over_its_checkpoint": Case("export.py", (f"ckpt_path={BEST}", "format=torchscript",
                                                                 f"output={BEST}"), ("best.pt is this task's input",)),
    "export_onnx_over_its_checkpoint": Case("export.py", (f"ckpt_path={BEST}", "format=onnx", f"output={BEST}"),
                                            ("best.pt is this task's input", "never overwritten")),
    "export_over_another_checkpoint": Case("export.py", (f"ckpt_path={BEST}", "format=onnx",
                                                         f"output={RUN}/checkpoints/last.pt"),
                                           ("last.pt is an existing checkpoint",)),
    "export_torchscript_to_a_folder": Case("export.py", (f"ckpt_path={BEST}", "format=torchscript",
                                                         "output={u}/images"), ("images is a folder",)),
    "export_torchscript_read_only": Case("export.py", (f"ckpt_path={BEST}", "format=torchscript",
                                                       "output={ro}/m.torchscript.pt"), ("read-only", "output=")),
    "export_verify_image_as_output": Case("export.py", (f"ckpt_path={BEST}", "verify_image={u}/images/street.png",
                                                        "output={u}/images/street.png"), ("street.png is this task's input",)),
    # another run's directory and record
    "evaluate_into_a_training_run": Case("evaluate.py", (f"ckpt_path={BEST}", f"hydra.run.dir={RUN}"),
                                         ("already holds the .hydra/ record of a train run", "hydra.run.dir=")),
    "evaluate_output_dir_into_a_training_run": Case("evaluate.py", (f"ckpt_path={BEST}", f"output_dir={RUN}"),
                                                    ("output_dir=", "already holds")),
    "train_over_a_finished_run": Case("train.py", (*TRAIN, f"hydra.run.dir={RUN}"),
                                      ("already holds", "trainer.resume=auto")),
    "predict_output_read_only": Case("predict.py", (f"ckpt_path={BEST}", "input={u}/images",
                                                                     "output={ro}/pred"), ("read-only", "output=")),
    "train_run_dir_read_only": Case("train.py", (*TRAIN, "hydra.run.dir={ro}"), ("read-only", "hydra.run.dir=")),
    "resume_auto_other_model": Case("train.py", (*TRAIN, "model.encoder.width=0.25", "trainer.resume=auto",
                                                 "hydra.run.dir={own}"), ("width 0.125", "width 0.25")),
    "resume_auto_new_lr": Case("train.py", (*TRAIN, "optimizer.lr=0.01", "trainer.resume=auto", "hydra.run.dir={own}"),
                               ("optimizer.lr (0.002 → 0.01)", "cannot change")),
    "resume_auto_other_dataset": Case("train.py", (*FOLDER, "dataset.root={u}/folder_ok", "trainer.resume=auto",
                                                   "hydra.run.dir={own}"), ("dataset.name ('synthetic' → 'folder')",)),
    "resume_other_run_into_this_one": Case("train.py", (*TRAIN, "trainer.resume={u}/ckpt/good.pt",
                                                        "hydra.run.dir={own}"), ("already holds",)),
    # ranges: one table for every numeric knob
    "grad_clip_negative": Case("train.py", (*TRAIN, "trainer.grad_clip=-1"), ("trainer.grad_clip=-1", "> 0")),
    "class_weights_negative": Case("train.py", (*TRAIN, "loss.class_weights=[1,-1,1,1,1]"),
                                   ("loss.class_weights", ">= 0")),
    "lr_negative": Case("train.py", (*TRAIN, "optimizer.lr=-0.1"), ("optimizer.lr=-0.1", "> 0")),
    "lr_nan": Case("train.py", (*TRAIN, "optimizer.lr=nan"), ("optimizer.lr=nan", "finite")),
    "momentum_one": Case("train.py", (*TRAIN, "optimizer=sgd", "optimizer.momentum=1.0"), ("optimizer.momentum=1.0", "< 1")),
    "weight_decay_negative": Case("train.py", (*TRAIN, "optimizer.weight_decay=-1e-4"), ("optimizer.weight_decay",)),
    "class_weight_power_negative": Case("train.py", (*TRAIN, "loss.class_weight_power=-0.5"),
                                        ("loss.class_weight_power=-0.5", "≥ 0")),
    "width_zero": Case("train.py", (*TRAIN, "model.encoder.width=0"), ("model.encoder.width=0", "> 0")),
    "num_stages_too_deep": Case("train.py", (*TRAIN, "model.encoder.num_stages=6"),
                                ("model.encoder.num_stages=6", "from 1 to 5")),
    "max_shapes_zero": Case("train.py", (*TRAIN, "dataset.max_shapes=0"), ("dataset.max_shapes=0", "≥ 1")),
    "workers_negative": Case("train.py", (*TRAIN, "dataset.num_workers=-1"), ("dataset.num_workers=-1",)),
    "image_size_one_number": Case("train.py", (*TRAIN, "dataset.image_size=[64]"), ("dataset.image_size=[64]", "2 integers")),
    "boolean_typo": Case("train.py", (*TRAIN, "trainer.compile=flase"), ("trainer.compile='flase'", "true or false")),
    "seed_not_a_number": Case("train.py", (*TRAIN, "trainer.seed=abc"), ("trainer.seed='abc'", "integer")),
    "poly_power_zero": Case("train.py", (*TRAIN, "scheduler.power=0"), ("scheduler.power=0", "> 0")),
    "evaluate_batch_size_zero": Case("evaluate.py", (f"ckpt_path={BEST}", "batch_size=0"), ("batch_size=0", "≥ 1")),
    "evaluate_sliding_stride_negative": Case("evaluate.py", (f"ckpt_path={BEST}", "sliding.window=[32,32]",
                                                             "sliding.stride=-4"), ("sliding.stride=-4",)),
    "predict_alpha_above_one": Case("predict.py", (f"ckpt_path={BEST}", "input={u}/images", "output={r}/out",
                                                   "alpha=1.5"), ("alpha=1.5", "≤ 1")),
    "predict_tta_scale_zero": Case("predict.py", (f"ckpt_path={BEST}", "input={u}/images", "output={r}/out",
                                                  "tta.scales=[0,1]"), ("tta.scales=[0, 1]", "> 0")),
    "export_tolerance_zero": Case("export.py", (f"ckpt_path={BEST}", "tolerance=0", "output={r}/m.onnx"),
                                  ("tolerance=0", "> 0")),
    "export_opset_too_old": Case("export.py", (f"ckpt_path={BEST}", "opset=7", "output={r}/m.onnx"), ("opset=7", "≥ 11")),
    "visualize_unknown_class": Case("visualize.py", (f"ckpt_path={BEST}", "layers=[]", "evidence.enabled=true",
                                                     "classes=[Cat]"), ("classes=", "'Cat' is unknown", "use one of")),
    "visualize_occlusion_patch_zero": Case("visualize.py", (f"ckpt_path={BEST}", "occlusion.enabled=true",
                                                            "occlusion.patch=0"), ("occlusion.patch=0", "≥ 1")),
    "accumulate_more_than_an_epoch": Case("train.py", (*TRAIN, "trainer.accumulate_grad_batches=8", "trainer.max_steps=2"),
                                          ("trainer.accumulate_grad_batches=8", "an epoch has 4")),
    # data: same stem, val inside train, an empty split named
    "folder_two_files_one_stem": Case("train.py", (*FOLDER, "dataset.root={u}/folder_stem"),
                                      ("a.jpg", "a.png", "same stem")),
    "folder_val_entries_in_train": Case("train.py", (*FOLDER, "dataset.root={u}/folder_overlap"),
                                        ("contains 1 images of dataset.val", "b.png")),
    "camvid_val_split_is_the_train_split": Case("train.py", (*CAMVID_TINY, "dataset.root={u}/camvid_ok",
                                                             "dataset.val.split=train"),
                                                ("contains 2 images of dataset.val (split 'train')",)),
    "camvid_val_list_lists_a_train_image": Case("train.py", (*CAMVID_TINY, "dataset.root={u}/camvid_leak"),
                                                ("contains 1 frames of the val list", "train_001.png")),
    "folder_empty_split_names_the_folder": Case("train.py", (*FOLDER, "dataset.root={u}/folder_empty"),
                                                ("folder_empty/train/images", "no image/mask pairs")),
}


def _pair(root: Path, name: str, seed: int = 0, suffix: str = ".png") -> None:
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rand_image(64, 80, seed)).save(root / "images" / f"{name}{suffix}")
    write_png(root / "masks" / f"{name}.png", np.random.default_rng(seed).integers(0, 5, (64, 80)))


def make_folders(u: Path) -> None:
    """folder_ok (train a, b; val c), folder_stem (a.png + a.jpg), folder_overlap (lists sharing b),
    folder_empty (no training pairs)."""
    for split, names in (("train", "ab"), ("val", "c")):
        for k, n in enumerate(names):
            _pair(u / "folder_ok" / split, n, k)
    shutil.copytree(u / "folder_ok", u / "folder_stem")
    _pair(u / "folder_stem" / "train", "a", 5, ".jpg")
    for k, n in enumerate("abc"):
        _pair(u / "folder_overlap", n, k)
    (u / "folder_overlap" / "train.txt").write_text("a\nb\n")
    (u / "folder_overlap" / "val.txt").write_text("b\nc\n")
    shutil.copytree(u / "folder_ok", u / "folder_empty")
    for p in (u / "folder_empty" / "train").rglob("*.png"):
        p.unlink()


def make_run(run: Path, good: Path, cfg) -> None:
    """What a finished train.py run leaves in ``run``: record, checkpoints, log, metrics."""
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        shutil.copy(good, run / "checkpoints" / name)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=1\n")
    (run / "train.log").write_text("[2026-11-30 10:00:00][segdeconv][INFO] - the original run\n")
    (run / "val_metrics.json").write_text("[]\n")


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (with one file in it) made read-only for this user for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keep.txt").write_text("a file in a read-only folder")
    root = os.geteuid() == 0
    subprocess.run(["chattr", "+i", str(folder)], check=True) if root else folder.chmod(0o555)
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True) if root else folder.chmod(0o755)
