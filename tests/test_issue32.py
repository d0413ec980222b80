"""Issue #32's five mechanisms in-process: the one writer (segdeconv/engine/writer.py), checks where user
values meet MLflow/W&B/Optuna/ONNX, the rules across keys (segdeconv/rules.py), the "no labelled pixel"
check (segdeconv/data/labelled.py) and file kinds by signature (segdeconv/filekind.py). The CLI cases
are in hostile_cases_32.py."""
from __future__ import annotations

import errno
import json
import os
import stat

import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf

from segdeconv import filekind
from segdeconv.config import check_config
from segdeconv.data.labelled import LabelWatch, require_labelled
from segdeconv.engine.checkpoint import load_checkpoint, save_checkpoint
from segdeconv.engine.tracker_checks import check_mlflow, check_wandb, read_run_record
from segdeconv.engine.writer import json_safe, write_bytes, write_image, write_json
from segdeconv.errors import CheckpointError, ConfigError, DataError, UserError
from segdeconv.sweep import _check_intervals, check_sweeper


def enospc_after(monkeypatch, n: int) -> None:
    """``os.write`` fails with ENOSPC after ``n`` bytes, as on a full disk."""
    real, written = os.write, [0]

    def write(fd, data):
        if written[0] + len(data) > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += len(data)
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_a_full_disk_is_one_line_with_the_free_space_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint({"model": {"w": torch.zeros(3)}, "step": 1}, tmp_path / "last.pt")
    enospc_after(monkeypatch, 1000)  # torch's zip writer gets the OSError from Python I/O, mid-file
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*last\.pt: No space left on device "
                                              r"\([\d,]+ MiB free in .*\); free disk space"):
        save_checkpoint({"model": {"w": torch.ones(100_000)}, "step": 2}, path)
    with pytest.raises(UserError, match="cannot write the torchscript export .*No space left"):
        write_bytes(tmp_path / "m.torchscript.pt", bytes(5000), "the torchscript export")
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_the_writer_refuses_devices_and_fifos_and_keeps_permissions(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UserError, match="fifo is a FIFO, not a regular file"):
        write_bytes(tmp_path / "fifo", b"x")
    with pytest.raises(UserError, match="output=/dev/null is a character device"):
        from segdeconv.engine.outputs import check_output_file

        check_output_file("/dev/null", [], "output")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    (tmp_path / "shared.json").write_text("{}")
    os.chmod(tmp_path / "shared.json", 0o640)
    write_json(tmp_path / "shared.json", {"a": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "shared.json").st_mode) == 0o640
    write_json(tmp_path / "new.json", {"a": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) & 0o044  # readable like open() makes it


def test_json_is_strict_nan_becomes_null_with_a_reason(tmp_path):
    m = {"mIoU": 0.5, "per_class_iou": {"road": float("nan"), "sky": 0.5}, "history": [{"x": float("inf")}]}
    write_json(tmp_path / "m.json", m, null_reason="undefined (0/0)")
    data = json.loads((tmp_path / "m.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["per_class_iou"]["road"] is None and data["nulls"] == {"keys": ["per_class_iou.road"],
                                                                       "reason": "undefined (0/0)"}
    assert data["history"][0] == {"x": None, "nulls": {"keys": ["x"], "reason": "undefined (0/0)"}}
    assert json_safe([1.0, float("nan")], "r") == [1.0, None]


def test_an_image_output_needs_a_suffix_that_names_a_format(tmp_path):
    from PIL import Image

    with pytest.raises(UserError, match="figure_out=.*figure: no file suffix"):
        write_image(tmp_path / "figure", Image.new("RGB", (4, 4)), key="figure_out")
    assert write_image(tmp_path / "f.png", Image.new("RGB", (4, 4))).read_bytes().startswith(b"\x89PNG")


def test_files_are_told_apart_by_signature(tmp_path):
    torch.save({"model": {}}, tmp_path / "ckpt.pt")
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(tmp_path / "ts.pt"))
    (tmp_path / "notes.txt").write_text("c__builtin__\nhello")  # pickle's GLOBAL opcode is 'c'
    (tmp_path / "m.bin").write_bytes(b"\x08\x08\x12\x07pytorch")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ckpt.pt").read_bytes()[:200])
    kinds = {n: filekind.file_kind(tmp_path / n) for n in ("ckpt.pt", "ts.pt", "notes.txt", "m.bin", "cut.pt")}
    assert kinds == {"ckpt.pt": filekind.TORCH, "ts.pt": filekind.TORCHSCRIPT, "notes.txt": filekind.OTHER,
                     "m.bin": filekind.ONNX, "cut.pt": filekind.BROKEN_ZIP}
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "notes.txt")
    assert "not a PyTorch file" in str(e.value) and "execute code" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"is an ONNX model \(protobuf\), not a checkpoint; pass ckpt_path= the checkpoint"):
        load_checkpoint(tmp_path / "m.bin")


def train_cfg(*overrides: str):
    return compose_cfg(["trainer.progress=false", *overrides])


@pytest.mark.parametrize("overrides, words", [
    (["loss.ignore_index=0"], "loss.ignore_index=0 but the data's void label is dataset.ignore_index=255"),
    (["model=deconvnet", "dataset.image_size=[224,224]", "dataset.batch_size=1"], "fc6/fc7 are 1×1"),
    (["loss.criterion.weights=[0,0]"], "loss.criterion.weights=[0, 0] are all 0"),
    (["+model.init_from="], "model.init_from is empty (an unset shell variable?)"),
    (["trainer.resume=' '"], "trainer.resume is empty"),
    (["logger=[mlflow]", "logger.mlflow.experiment="], "logger.mlflow.experiment='' is empty"),
])
def test_rules_across_keys_refuse_before_anything_is_built(overrides, words):
    with pytest.raises(ConfigError) as e:
        check_config(train_cfg(*overrides))
    assert words in str(e.value)


def test_rules_let_the_working_combinations_through():
    check_config(train_cfg("loss.ignore_index=255", "loss.criterion.weights=[0,1]"))
    check_config(train_cfg("model=deconvnet", "dataset.image_size=[320,320]", "dataset.batch_size=1"))


def test_tracker_checks_need_no_network(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"tracking_uri=http://127.0.0.1:9/ is unreachable"):
        check_mlflow({"tracking_uri": "http://127.0.0.1:9/", "experiment": "e"}, None)
    with pytest.raises(ConfigError, match="no tracking store for ftp://"):
        check_mlflow({"tracking_uri": "ftp://x/y", "experiment": "e"}, None)
    (tmp_path / "mlflow_run.json").write_text('{"run_')
    with pytest.raises(ConfigError, match="mlflow_run.json is unreadable .*delete it"):
        read_run_record(tmp_path / "mlflow_run.json")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="logger.wandb.mode=online needs a W&B API key"):
        check_wandb({"mode": "online"})
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    check_wandb({"mode": "online"})


def sweep_cfg(**sweeper):
    return OmegaConf.create({"hydra": {"sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper."
                                                   "OptunaSweeper", "n_trials": 2, "direction": "maximize",
                                                   "storage": None, "params": None, **sweeper},
                                       "overrides": {"task": [], "hydra": []}}})


def test_sweeper_settings_are_checked_before_the_first_trial(tmp_path):
    for bad, words in (({"n_trials": 0}, "n_trials=0 must be an integer ≥ 1"),
                       ({"direction": "maximise"}, "direction=maximise is not an Optuna direction")):
        with pytest.raises(ConfigError, match=words):
            check_sweeper(sweep_cfg(**bad))
    with pytest.raises(ConfigError, match=r"optimizer.lr=interval\(0.01, 0.0001\) is inverted"):
        _check_intervals(["optimizer.lr=interval(1e-2,1e-4)"])
    cfg = sweep_cfg()
    check_sweeper(cfg)
    assert cfg.hydra.sweeper.max_failure_rate == 1.0  # a failed trial is counted, the sweep goes on


def test_no_labelled_pixel_is_a_data_error_and_the_watch_stops_looking():
    with pytest.raises(DataError, match="has no labelled pixel: every pixel of its masks is the void label 255"):
        require_labelled(0, "dataset.val", 255)
    watch = LabelWatch(255)
    batches = [(None, torch.full((2, 4), 255)), (None, torch.zeros(2, 4)), (None, torch.full((2, 4), 255))]
    assert len(list(watch(batches))) == 3 and watch.seen and watch.batches == 2
