"""Checkpoints name their model by a stable registry name + keyword arguments (format 2), load with no
Hydra import, survive a rename of the code, and older files (format 1, the shipped model) migrate."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF, REPO, compose_cfg
from torch import nn

from segdeconv.config import model_from_config
from segdeconv.engine.checkpoint import FORMAT, load_checkpoint, upgrade
from segdeconv.errors import CheckpointError, ConfigError
from segdeconv.models import SegNet, registry
from segdeconv.trained import load_trained

SHIPPED = REPO / "checkpoints" / "camvid_segnet_cpu.pt"
TINY_ARCH = {"name": "segnet", "num_classes": 3, "classifier_kernel": 3,
             "encoder": {"name": "vgg", "arch": "vgg11", "width": 0.125, "num_stages": 2}}


def _format1(ckpt: dict) -> dict:
    """``ckpt`` as segdeconv 0.1.0 wrote it: no ``format``/``arch``, ``_target_`` code paths in the config."""
    old = {k: v for k, v in ckpt.items() if k not in ("format", "arch")}
    model = dict(old["config"]["model"])
    model["_target_"] = {"segnet": "segdeconv.models.SegNet", "segnet_basic": "segdeconv.models.segnet_basic",
                         "deconvnet": "segdeconv.models.DeconvNet"}[model.pop("name")]
    if isinstance(model.get("encoder"), dict):
        enc = dict(model["encoder"])
        enc.pop("name")
        model["encoder"] = {"_target_": "segdeconv.models.VGGEncoder", **enc}
    old["config"] = {**old["config"], "model": model}
    return old


def test_a_checkpoint_records_a_registry_name_and_no_code_path(tiny_ckpt):
    raw = torch.load(tiny_ckpt, weights_only=True)
    assert raw["format"] == FORMAT == 2
    assert raw["arch"]["name"] == "segnet" and raw["arch"]["encoder"]["name"] == "vgg"
    assert "segdeconv." not in repr(raw["arch"]) and "_target_" not in repr(raw["config"]["model"])
    assert raw["arch"]["encoder"]["weights"] is None and "init_from" not in raw["arch"]


def test_a_renamed_class_still_loads_every_checkpoint(tiny_ckpt, monkeypatch):
    class MovedSegNet(SegNet):  # the class moved/renamed: only the registry entry follows it
        pass

    monkeypatch.setitem(registry.MODELS, "segnet", MovedSegNet)
    monkeypatch.delattr("segdeconv.models.SegNet")  # the old code path is gone
    t = load_trained(tiny_ckpt)
    assert type(t.model) is MovedSegNet
    ref = load_checkpoint(tiny_ckpt)["model"]
    assert all(torch.equal(v, ref[k]) for k, v in t.model.state_dict().items())


def test_a_format_1_checkpoint_migrates_and_predicts_the_same(tiny_ckpt, tmp_path):
    ckpt = load_checkpoint(tiny_ckpt)
    path = tmp_path / "old.pt"
    torch.save(_format1(ckpt), path)
    new, old = load_trained(tiny_ckpt), load_trained(path)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(new.model(x), old.model(x))
    migrated = load_checkpoint(path)
    assert migrated["format"] == 2 and migrated["arch"] == ckpt["arch"]
    assert migrated["config"]["model"]["name"] == "segnet"  # a resume compares like with like


@pytest.mark.skipif(not SHIPPED.is_file(), reason="checkpoints/camvid_segnet_cpu.pt is not in this checkout")
def test_the_shipped_format_1_model_loads_through_the_migration():
    raw = torch.load(SHIPPED, weights_only=True)
    assert "format" not in raw and raw["config"]["model"]["_target_"] == "segdeconv.models.SegNet"
    t = load_trained(SHIPPED)
    assert type(t.model) is SegNet and t.num_classes == 11 and t.model.encoder.width == 0.25
    with torch.no_grad():
        assert t.model(torch.zeros(1, 3, 64, 96)).shape == (1, 11, 64, 96)


def test_a_newer_format_is_refused_with_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match=r"x\.pt has format 3, newer than this segdeconv reads \(2\); upgrade"):
        upgrade({"format": 3, "model": {}}, tmp_path / "x.pt")


def test_inference_imports_no_hydra_and_predicts_with_the_shipped_model():
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('hydra', 'omegaconf'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import numpy as np
import segdeconv.inference
from segdeconv import Predictor
p = Predictor.from_checkpoint({str(SHIPPED)!r}, device='cpu')
mask = p.predict(np.zeros((90, 120, 3), np.uint8))
assert mask.shape == (90, 120), mask.shape
assert not [m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')]
print('ok')
"""
    if not SHIPPED.is_file():
        pytest.skip("checkpoints/camvid_segnet_cpu.pt is not in this checkout")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_build_names_the_key_of_an_unknown_model_or_option():
    with pytest.raises(ConfigError, match=r"model\.name='segnett' is unknown; use one of deconvnet, segnet, "):
        registry.build({"name": "segnett", "num_classes": 3})
    with pytest.raises(ConfigError, match=r"model\.encoder\.widht is not an option of vgg; its options are arch, "):
        registry.build({**TINY_ARCH, "encoder": {"name": "vgg", "widht": 0.5}})
    with pytest.raises(ConfigError, match=r"model\.name is not set; choose a model group"):
        registry.build({"num_classes": 3})
    with pytest.raises(ConfigError, match=r"model\.name='nope_mod:X' cannot be imported"):
        registry.build({"name": "nope_mod:X", "num_classes": 3})


class Tiny(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, num_classes, 1)


def test_a_model_of_your_own_by_import_path_or_registration(monkeypatch):
    assert type(registry.build({"name": "test_registry:Tiny", "num_classes": 4})) is Tiny
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    registry.register_model("tiny")(Tiny)
    assert registry.build({"name": "tiny", "num_classes": 2}).num_classes == 2
    with pytest.raises(ValueError, match="'tiny' is already registered"):
        registry.register_model("tiny")(SegNet)


def test_pretrained_false_never_reads_the_encoder_weights_file():
    arch = {**TINY_ARCH, "encoder": {**TINY_ARCH["encoder"], "weights": "/no/such/vgg.pth"}}
    assert registry.build(arch).encoder.weights is None  # rebuilding a trained model
    assert registry.arch_of({**arch, "init_from": "x.pt"}) == {**TINY_ARCH, "encoder": {**TINY_ARCH["encoder"],
                                                                                          "weights": None}}


@pytest.mark.parametrize("group", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_group_builds_through_the_registry(group):
    cfg = compose_cfg([f"model={group}", "dataset.image_size=[64,64]"])
    assert "_target_" not in cfg.model and registry.builder(cfg.model.name)
    if group == "deconvnet":
        cfg.model.fc_channels, cfg.model.encoder.width = 8, 0.0625  # the real one is 250M parameters
    model = model_from_config(cfg.model)
    assert model.num_classes == cfg.dataset.num_classes


def test_a_legacy_target_in_a_config_still_builds_with_a_deprecation_line(caplog):
    legacy = {"_target_": "segdeconv.models.segnet_basic", "num_classes": 3, "width": 0.125}
    with caplog.at_level("WARNING", logger="segdeconv"):
        model = model_from_config(legacy)
    assert type(model) is SegNet and model.encoder.arch == "basic"
    assert "model._target_ is deprecated" in caplog.text and "model.name=segnet" in caplog.text


def test_registry_module_imports_no_hydra():
    src = Path(registry.__file__).read_text() + (REPO / "segdeconv" / "trained.py").read_text()
    assert "hydra" not in src.replace("Hydra", "").lower() and "omegaconf" not in src.lower()
