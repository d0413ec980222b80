"""Issue #32's hostile inputs (the third pass) and their neighbours, as :class:`Case` rows for
test_bad_inputs.py, by the mechanism each one exercises: one writer (1), third-party clients (2), rules
across keys (3), "no labelled pixel" (4), diagnoses by type and signature (5).

A full disk is simulated in the child process (``tests/helpers/enospc/sitecustomize.py``: ``os.write``
into matching files raises ENOSPC); an unreachable MLflow server is ``http://127.0.0.1:9/`` (nothing
listens on the discard port: the connect fails at once); no case contacts any host.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
from conftest import REPO
from data_helpers import write_png
from hostile_cases import BEST, CAMVID_TINY, TRAIN, Case

ENOSPC = str(REPO / "tests" / "helpers" / "enospc")
VOID = ("dataset=folder", "dataset.num_classes=5", "dataset.class_names=[c0,c1,c2,c3,c4]",
        "dataset.image_size=[64,80]", "dataset.batch_size=2", "dataset.num_workers=0", "trainer.max_epochs=1",
        "trainer.progress=false", "model.encoder.width=0.125", "trainer.precision=fp32")
FOLDER_DATA = ("dataset=folder", "dataset.num_classes=5", "dataset.class_names=[c0,c1,c2,c3,c4]")
MLFLOW = ("logger=[tensorboard,mlflow]",)
OPTUNA = ("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", "hydra.sweeper.direction=maximize",
          "hydra.sweep.dir={r}/sweep")


def full_disk(pattern: str, allowed: int = 0) -> tuple[tuple[str, str], ...]:
    """The environment that fills the disk for writes into files whose path holds ``pattern``."""
    return (("PYTHONPATH", ENOSPC), ("SEGDECONV_TEST_ENOSPC", f"{pattern}:{allowed}"))


HOSTILE_32: dict[str, Case] = {
    # 1 — one writer: never over a device or an input; a full disk is one line with the free space
    "export_onnx_to_a_character_device": Case("export.py", (f"ckpt_path={BEST}", "output={u}/devices/null"),
                                              ("output=", "devices/null", "not a regular file")),
    "export_torchscript_to_a_fifo": Case("export.py", (f"ckpt_path={BEST}", "format=torchscript",
                                                       "output={u}/devices/fifo"), ("is a FIFO", "regular file")),
    "predict_into_a_fifo_named_like_its_output": Case("predict.py", (f"ckpt_path={BEST}", "input={u}/images",
                                                                     "output={u}/fifo_out"),
                                                      ("fifo_out/index/street.png is a FIFO",)),
    "visualize_figure_out_is_a_dataset_image": Case("visualize.py", (f"ckpt_path={BEST}", *FOLDER_DATA,
                                                                     "dataset.root={u}/folder_ok", "topk=1",
                                                                     "channels=[0]", "figure_out={u}/folder_ok/val/images/c.png"),
                                                    ("figure_out=", "folder_ok", "reads its data from")),
    "evaluate_into_an_image_folder_it_reads": Case("evaluate.py", (f"ckpt_path={BEST}", *FOLDER_DATA,
                                                                  "dataset.root={u}/folder_ok",
                                                                  "hydra.run.dir={u}/folder_ok/val/images/eval"),
                                                   ("output_dir=", "folder_ok/val", "reads its data from")),
    "visualize_figure_out_without_suffix": Case("visualize.py", (f"ckpt_path={BEST}", "topk=1", "channels=[0]",
                                                                 "figure_out={r}/figure"),
                                                ("figure_out=", "no file suffix", ".png")),
    "train_on_a_full_disk": Case("train.py", TRAIN, ("cannot write checkpoint", "last.pt", "No space left on device",
                                                     "MiB free"), env=full_disk("/checkpoints/.last.pt.", 1)),
    "export_torchscript_on_a_full_disk": Case("export.py", (f"ckpt_path={BEST}", "format=torchscript",
                                                            "output={r}/m.torchscript.pt"),
                                              ("cannot write the torchscript export", "No space left", "MiB free"),
                                              env=full_disk("m.torchscript.pt.")),
    "export_onnx_on_a_full_disk": Case("export.py", (f"ckpt_path={BEST}", "output={r}/m.onnx", "verify=false"),
                                       ("cannot write the onnx export", "No space left", "MiB free"),
                                       env=full_disk("m.onnx.")),
    "evaluate_on_a_full_disk": Case("evaluate.py", (f"ckpt_path={BEST}", "report.figures=false"),
                                    ("cannot write metrics", "metrics.json", "No space left"),
                                    env=full_disk("metrics.json.")),
    # 2 — third-party clients: checked before any work, their failures one line naming the key
    "mlflow_unreachable_server": Case("train.py", (*TRAIN, *MLFLOW, "logger.mlflow.tracking_uri=http://127.0.0.1:9/"),
                                      ("logger.mlflow.tracking_uri=http://127.0.0.1:9/", "unreachable")),
    "mlflow_unsupported_uri": Case("train.py", (*TRAIN, *MLFLOW, "logger.mlflow.tracking_uri=ftp://example.invalid/m"),
                                   ("logger.mlflow.tracking_uri=ftp://example.invalid/m", "no tracking store")),
    "mlflow_read_only_store": Case("train.py", (*TRAIN, *MLFLOW, "logger.mlflow.tracking_uri=sqlite:///{ro}/m.db"),
                                   ("logger.mlflow.tracking_uri=", "read-only")),
    "mlflow_empty_experiment": Case("train.py", (*TRAIN, *MLFLOW, "logger.mlflow.tracking_uri=sqlite:///{r}/m.db",
                                                 "logger.mlflow.experiment="), ("logger.mlflow.experiment", "empty")),
    "mlflow_deleted_experiment": Case("train.py", (*TRAIN, *MLFLOW, "logger.mlflow.tracking_uri=sqlite:///{u}/mlflow/m.db",
                                                   "logger.mlflow.experiment=gone"),
                                      ("logger.mlflow.experiment=gone", "deleted")),
    "mlflow_truncated_run_record_on_resume": Case("train.py", (*TRAIN, *MLFLOW, "trainer.max_epochs=2",
                                                               "logger.mlflow.tracking_uri=sqlite:///{r}/m.db",
                                                               "trainer.resume=auto", "hydra.run.dir={own}"),
                                                  ("mlflow_run.json is unreadable", "delete it")),
    "wandb_online_without_a_key": Case("train.py", (*TRAIN, "logger=[tensorboard,wandb]", "logger.wandb.mode=online"),
                                       ("logger.wandb.mode=online", "WANDB_API_KEY"),
                                       env=(("WANDB_API_KEY", ""), ("NETRC", "{u}/no_netrc"))),
    "optuna_inverted_interval": Case("train.py", (*OPTUNA, *TRAIN, "optimizer.lr=interval(1e-2,1e-4)"),
                                     ("optimizer.lr=interval(0.01, 0.0001) is inverted",)),
    "optuna_unknown_direction": Case("train.py", (*OPTUNA, *TRAIN, "hydra.sweeper.direction=maximise",
                                                  "optimizer.lr=interval(1e-4,1e-2)"),
                                     ("hydra.sweeper.direction=maximise", "maximize")),
    "optuna_zero_trials": Case("train.py", (*OPTUNA, *TRAIN, "hydra.sweeper.n_trials=0", "optimizer.lr=interval(1e-4,1e-2)"),
                               ("hydra.sweeper.n_trials=0", "≥ 1")),
    "optuna_read_only_storage": Case("train.py", (*OPTUNA, *TRAIN, "hydra.sweeper.storage=sqlite:///{ro}/optuna.db",
                                                  "optimizer.lr=interval(1e-4,1e-2)"),
                                     ("hydra.sweeper.storage=", "read-only")),
    "optuna_log_interval_from_zero": Case("train.py", (*OPTUNA, *TRAIN, "optimizer.lr=tag(log,interval(0,1e-2))"),
                                          ("optimizer.lr", "log interval needs low > 0")),
    "optuna_every_trial_diverges": Case("train.py", (*OPTUNA, *TRAIN, "optimizer.lr=choice(1e30,1e31)"),
                                        ("every job of the sweep failed", "loss is nan")),
    "export_onnx_opset_99": Case("export.py", (f"ckpt_path={BEST}", "opset=99", "output={r}/m.onnx"),
                                 ("opset=99", "opsets up to")),
    # 3 — rules across keys and against degenerate values, before anything is built
    "loss_ignore_index_is_not_the_void_label": Case("train.py", (*TRAIN, "loss.ignore_index=0"),
                                                    ("loss.ignore_index=0", "dataset.ignore_index=255")),
    "deconvnet_at_batch_one": Case("train.py", (*TRAIN, "model=deconvnet", "dataset.image_size=[224,224]",
                                                "dataset.batch_size=1", "model.fc_channels=32", "model.encoder.width=0.125"),
                                   ("dataset.batch_size=1", "BatchNorm", "≥ 2")),
    "combined_loss_weights_all_zero": Case("train.py", (*TRAIN, "loss.criterion.weights=[0,0]"),
                                           ("loss.criterion.weights=[0, 0]", "all 0")),
    "class_weights_all_zero": Case("train.py", (*TRAIN, "loss.class_weights=[0,0,0,0,0]"),
                                   ("loss.class_weights=[0, 0, 0, 0, 0]", "all 0")),
    "init_from_an_unset_shell_variable": Case("train.py", (*TRAIN, "+model.init_from="),
                                              ("model.init_from is empty", "unset shell variable")),
    "resume_from_an_unset_shell_variable": Case("train.py", (*TRAIN, "trainer.resume="), ("trainer.resume is empty",)),
    "evaluate_ckpt_path_empty": Case("evaluate.py", ("ckpt_path=",), ("ckpt_path is empty",)),
    "dataset_root_empty": Case("train.py", (*CAMVID_TINY, "dataset.root="), ("dataset.root is empty",)),
    "evaluate_root_on_a_synthetic_checkpoint": Case("evaluate.py", (f"ckpt_path={BEST}", "dataset.root=/no/such/dir"),
                                                    ("dataset.root=/no/such/dir", "synthetic")),
    # 4 — no labelled pixel is a data problem, never a result
    "train_on_an_all_void_split": Case("train.py", (*VOID, "dataset.root={u}/folder_void"),
                                       ("dataset.train", "no labelled pixel", "255")),
    "train_with_an_all_void_validation_split": Case("train.py", (*VOID, "dataset.root={u}/folder_void_val"),
                                                    ("dataset.val", "no labelled pixel")),
    "evaluate_an_all_void_split": Case("evaluate.py", (f"ckpt_path={BEST}", *FOLDER_DATA,
                                                      "dataset.root={u}/folder_void_val"), ("no labelled pixel",)),
    "check_data_on_all_void_labels": Case("check_data.py", (*FOLDER_DATA, "dataset.root={u}/folder_void"),
                                          ("no labelled pixel",), code=1),
    # 5 — files told apart by signature, errors by type, every helper names its own key
    "evaluate_a_text_file_as_checkpoint": Case("evaluate.py", ("ckpt_path={u}/ckpt/notes.txt",),
                                               ("notes.txt", "not a PyTorch file"), absent=("execute code",)),
    "evaluate_an_onnx_file_as_checkpoint": Case("evaluate.py", ("ckpt_path={u}/ckpt/model.onnx",),
                                                ("model.onnx is an ONNX model", "exported from"),
                                                absent=("execute code",)),
    "evaluate_a_torchscript_export_as_checkpoint": Case("evaluate.py", ("ckpt_path={u}/ckpt/model.torchscript.pt",),
                                                        ("TorchScript export", "exported from"),
                                                        absent=("execute code",)),
    "init_from_a_text_file": Case("train.py", (*TRAIN, "+model.init_from={u}/ckpt/notes.txt"),
                                  ("notes.txt", "not a PyTorch file"), absent=("execute code",)),
    "predict_int8_calibration_missing": Case("predict.py", (f"ckpt_path={BEST}", "input={u}/images", "output={r}/out",
                                                            "quantize=int8", "calibration={u}/no/such"),
                                             ("calibration=", "does not exist"), absent=("input=",)),
    "recompute_bn_output_read_only": Case("recompute_bn.py", (f"ckpt_path={BEST}", "output={ro}/bn.pt"),
                                          ("output=", "read-only"), absent=("hydra.run.dir",)),
    "nan_with_the_progress_bar_on": Case("train.py", (*TRAIN, "trainer.progress=true", "optimizer.lr=1e30"),
                                         ("loss is nan at step",)),
}


def make_tree_32(u: Path, owned: Path) -> None:
    """What issue #32's cases read: devices, all-void folders, non-checkpoint files, an MLflow store."""
    (u / "devices").mkdir()
    if os.geteuid() == 0:  # a character device like /dev/null (mknod needs root), else a FIFO
        os.mknod(u / "devices" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    else:
        os.mkfifo(u / "devices" / "null")
    os.mkfifo(u / "devices" / "fifo")
    os.makedirs(u / "fifo_out" / "index")
    os.mkfifo(u / "fifo_out" / "index" / "street.png")
    for name, void in (("folder_void", ("train", "val")), ("folder_void_val", ("val",))):
        shutil.copytree(u / "folder_ok", u / name)
        for mask in (p for s in void for p in (u / name / s / "masks").glob("*.png")):
            write_png(mask, np.full((64, 80), 255))
    (u / "ckpt" / "notes.txt").write_text("hello: this is a text file, not a checkpoint\n")
    (u / "ckpt" / "model.onnx").write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x032.0" + bytes(64))
    _torchscript(u / "ckpt" / "model.torchscript.pt")
    _mlflow_store(u / "mlflow")
    record = owned / "mlflow_truncated_run_record_on_resume" / "mlflow_run.json"
    record.write_text('{"tracking_uri": "sqlite:///x.db", "run_')


def _torchscript(path: Path) -> None:
    import torch

    torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 5, 1), torch.zeros(1, 3, 8, 8)), str(path))


def _mlflow_store(folder: Path) -> None:
    """An sqlite MLflow store holding the deleted experiment ``gone`` (skipped without mlflow)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return
    folder.mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'm.db'}")
    client.delete_experiment(client.create_experiment("gone", artifact_location=str(folder / "artifacts")))

