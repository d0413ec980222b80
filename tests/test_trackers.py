"""MLflow and W&B trackers record what TensorBoard records; logger=[…] selects them; errors are one line.

The trainer builds its loggers with ``TBLogger(...)`` until it is wired to
``segdeconv.engine.trackers.open_loggers`` (a one-line change in engine/trainer.py); until then
:func:`train_with_loggers` puts ``open_loggers`` behind that name, so a real training makes the real calls.
"""
from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import cli_env, tiny
from conftest import REPO, compose_cfg

from segdeconv.engine.trackers import Loggers, logger_spec, open_loggers
from segdeconv.errors import ConfigError

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips

PALETTE = [[0, 0, 0], [255, 0, 0]]


def train_with_loggers(tmp_path: Path, monkeypatch, loggers: str, *extra: str) -> Path:
    """A 1-epoch tiny training (4 steps, loss logged every step) with ``logger=<loggers>``; its run dir."""
    from segdeconv.tasks.train import fit

    out = tmp_path / "run"
    cfg = compose_cfg(tiny(trainer__max_epochs=1, trainer__log_every_steps=1) +
                      [f"logger={loggers}", f"output_dir={out}", *extra])
    fit(cfg)
    return out


def tensorboard_scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def last_val_miou(run: Path) -> tuple[int, float]:
    last = json.loads((run / "val_metrics.json").read_text())[-1]
    return last["step"], last["mIoU"]


# ---------------------------------------------------------------- MLflow
def test_mlflow_store_holds_the_params_metric_history_image_and_best_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = train_with_loggers(tmp_path, monkeypatch, "[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}")
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("segdeconv").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_id == json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    params = run.data.params
    assert params["model.encoder.width"] == "0.125" and params["dataset.batch_size"] == "4"
    assert params["logger.mlflow.tracking_uri"] == uri and params["dataset.image_size"] == "[64, 80]"

    loss = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")]
    tb_loss = tensorboard_scalars(run_dir, "train/loss")
    assert [s for s, _ in loss] == [s for s, _ in tb_loss] == [1, 2, 3, 4]
    assert [v for _, v in loss] == pytest.approx([v for _, v in tb_loss], rel=1e-6)
    [miou] = client.get_metric_history(run.info.run_id, "val/mIoU")
    assert (miou.step, miou.value) == pytest.approx(last_val_miou(run_dir))

    images = [a.path for a in client.list_artifacts(run.info.run_id, "val/image_label_prediction")]
    assert images == ["val/image_label_prediction/step_00000004.png"]
    best = Path(client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(tmp_path / "dl")))
    assert best.read_bytes() == (run_dir / "checkpoints" / "best.pt").read_bytes()


def test_mlflow_resumed_run_continues_the_same_run_without_relogging_params(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {"logger": {"mlflow": {"tracking_uri": uri}}, "trainer": {"resume": None}}
    first = open_loggers(config, tmp_path, PALETTE)
    first.scalars({"train/loss": 2.0}, 1)
    first.close()
    resumed = {**config, "trainer": {"resume": "auto"}}  # a changed param value would make MLflow refuse it
    second = open_loggers(resumed, tmp_path, PALETTE, purge_step=2)
    second.scalars({"train/loss": 1.0}, 2)
    second.close()
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("segdeconv").experiment_id])
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == [(1, 2.0), (2, 1.0)]
    assert run.data.params["trainer.resume"] == "None" and run.info.status == "FINISHED"


def test_train_cli_with_mlflow_logger_fills_the_store(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *tiny(trainer__max_epochs=1),
                        "logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=cli_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("segdeconv").experiment_id])
    assert client.get_metric_history(run.info.run_id, "val/mIoU")[-1].value == pytest.approx(
        last_val_miou(tmp_path / "run")[1])
    assert "checkpoints/best.pt" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]


# ---------------------------------------------------------------- Weights & Biases
def wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` run file (LevelDB log format: 7-byte file header, 32 KiB blocks of
    ``crc32 u32 | length u16 | type u8`` chunks, type 1 = full, 2/3/4 = first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunks, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7]) if room >= 7 else (0, 0, 0)
        if kind == 0:  # block padding
            pos += room
            continue
        chunks += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def test_wandb_offline_run_dir_holds_the_config_and_logged_history(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = train_with_loggers(tmp_path, monkeypatch, "[tensorboard,wandb]")
    [offline] = list((run_dir / "wandb").glob("offline-run-*"))
    records = wandb_records(next(offline.glob("run-*.wandb")))
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    loss = [(h["_step"], h["train/loss"]) for h in history if "train/loss" in h]
    tb_loss = tensorboard_scalars(run_dir, "train/loss")
    assert [s for s, _ in loss] == [s for s, _ in tb_loss] == [1, 2, 3, 4]
    assert [v for _, v in loss] == pytest.approx([v for _, v in tb_loss], rel=1e-6)
    [miou] = [(h["_step"], h["val/mIoU"]) for h in history if "val/mIoU" in h]
    assert miou == pytest.approx(last_val_miou(run_dir))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["model"]["encoder"]["width"] == 0.125 and config["logger"]["wandb"]["mode"] == "offline"
    assert list((offline / "files" / "media" / "images").rglob("*.png"))


# ---------------------------------------------------------------- selection, fan-out, errors
def test_default_config_selects_tensorboard_only_and_a_config_without_logger_means_tensorboard():
    assert dict(compose_cfg([]).logger) == {"tensorboard": {}}
    assert logger_spec({}) == {"tensorboard": {}}
    assert set(compose_cfg(["logger=[tensorboard,mlflow,wandb]"]).logger) == {"tensorboard", "mlflow", "wandb"}


def test_tensorboard_only_loggers_write_tb_events_like_tblogger(tmp_path):
    loggers = open_loggers({"logger": {"tensorboard": {}}}, tmp_path, PALETTE)
    loggers.scalars({"train/loss": 0.5, "train/lr": math.nan, "note": "text"}, 3)
    loggers.close()
    assert tensorboard_scalars(tmp_path, "train/loss") == [(3, 0.5)]


def test_selected_tracker_that_is_not_installed_is_one_config_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # how Python marks a module as not importable
    with pytest.raises(ConfigError) as e:
        logger_spec({"logger": {"tensorboard": {}, "mlflow": {}}})
    assert str(e.value) == ('logger=mlflow needs the mlflow package, which is not installed; '
                            'pip install "segdeconv[mlflow]" (or drop mlflow from logger=[…])')


def test_misspelled_tracker_option_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"logger\.mlflow\.trackin_uri is not a mlflow option; use one of: "
                                          r"experiment, log_checkpoint, run_name, tracking_uri"):
        logger_spec({"logger": {"mlflow": {"trackin_uri": "x"}}})


def test_unknown_logger_on_the_command_line_is_one_error_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "logger=[tensorboard,mlfow]", f"hydra.run.dir={tmp_path}"],
                       cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert line == "error: logger=mlfow is not a known logger option; choose one of: mlflow, tensorboard, wandb"


class Recorder:
    def __init__(self, calls: list, name: str, fail_close: bool = False) -> None:
        self.calls, self.name, self.fail_close = calls, name, fail_close

    def scalars(self, values, step):
        self.calls.append((self.name, "scalars", step))

    def metrics(self, m, step):
        self.calls.append((self.name, "metrics", step))

    def images(self, triples, step, tag="val/image_label_prediction"):
        self.calls.append((self.name, "images", tag))

    def close(self):
        self.calls.append((self.name, "close", None))
        if self.fail_close:
            raise OSError("disk full")


def test_loggers_fan_every_call_out_and_close_all_before_reraising_a_close_error():
    calls: list = []
    fan = Loggers([Recorder(calls, "a", fail_close=True), Recorder(calls, "b")])
    fan.scalars({"train/loss": 1.0}, 1)
    fan.metrics({}, 2)
    fan.images([], 2, tag="t")
    with pytest.raises(OSError, match="disk full"):
        fan.close()
    assert calls == [("a", "scalars", 1), ("b", "scalars", 1), ("a", "metrics", 2), ("b", "metrics", 2),
                     ("a", "images", "t"), ("b", "images", "t"), ("a", "close", None), ("b", "close", None)]


def test_image_grid_stacks_one_image_label_prediction_row_per_triple():
    from segdeconv.engine.logger import image_grid

    img, mask = torch.zeros(3, 4, 5), torch.zeros(4, 5, dtype=torch.long)
    grid = image_grid([(img, mask, mask), (img, mask, mask)], PALETTE)
    assert grid.shape == (8, 15, 3) and grid.dtype.name == "uint8"
    assert image_grid([], PALETTE) is None
