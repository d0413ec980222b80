"""``model.encoder.weights`` (issue #29 item 1): torchvision's plain ``vgg*`` and ``vgg*_bn`` state dicts,
``imagenet``/``imagenet_bn`` from the torch hub cache, and one-line errors for anything else.

Every file here is generated with torchvision's exact keys and shapes and random values (BN included,
so that loaded and fresh BN differ); no real weights are used or downloaded."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision
from cli_helpers import run_cli, tiny
from conftest import compose_cfg
from torch import Tensor, nn

from segdeconv.config import model_from_config
from segdeconv.errors import CheckpointError, ConfigError
from segdeconv.models import DeconvNet, SegNet, VGGEncoder
from segdeconv.models import pretrained as pt

BUILDERS = {"vgg11": torchvision.models.vgg11, "vgg11_bn": torchvision.models.vgg11_bn,
            "vgg16": torchvision.models.vgg16, "vgg16_bn": torchvision.models.vgg16_bn}


def random_state(name: str, features_only: bool = False) -> dict[str, Tensor]:
    """torchvision's ``<name>().state_dict()`` keys and shapes, random values (running_var > 0)."""
    with torch.device("meta"):
        shapes = {k: v for k, v in BUILDERS[name]().state_dict().items()
                  if not features_only or k.startswith("features.")}
    gen = torch.Generator().manual_seed(len(name))
    out = {}
    for k, v in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(1234)
        else:
            t = torch.randn(v.shape, generator=gen)
            out[k] = t.abs() + 0.5 if k.endswith("running_var") else t
    return out


def tv_convs(name: str) -> list[int]:
    """``features.N`` of every conv in torchvision's own module (the oracle, not pretrained.conv_indices)."""
    with torch.device("meta"):
        return [i for i, m in enumerate(BUILDERS[name]().features) if isinstance(m, nn.Conv2d)]


@pytest.fixture(scope="module")
def vgg16_files(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Tensor]]]:
    """Full vgg16 and vgg16_bn state dicts (features + classifier) written once: name -> (path, features)."""
    d = tmp_path_factory.mktemp("vgg16")
    out = {}
    for name in ("vgg16", "vgg16_bn"):
        state = random_state(name)
        torch.save(state, d / f"{name}.pth")
        out[name] = (d / f"{name}.pth", {k: v for k, v in state.items() if k.startswith("features.")})
        del state
    return out


def bns(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def assert_plain_loaded(enc: VGGEncoder, feats: dict[str, Tensor], name: str) -> None:
    """The encoder's convs are the file's, by order, bit for bit; its BN is fresh."""
    mine = [m for m in enc.features if isinstance(m, nn.Conv2d)]
    assert 0 < len(mine) <= len(tv_convs(name))
    for conv, i in zip(mine, tv_convs(name)):
        assert torch.equal(conv.weight, feats[f"features.{i}.weight"]), i
        assert torch.equal(conv.bias, feats[f"features.{i}.bias"]), i
    assert enc.weights_layout == name and not enc.pretrained_bn
    for b in bns(enc):
        assert torch.equal(b.weight, torch.ones_like(b.weight)) and torch.equal(b.bias, torch.zeros_like(b.bias))
        assert torch.equal(b.running_mean, torch.zeros_like(b.running_mean))
        assert torch.equal(b.running_var, torch.ones_like(b.running_var)) and b.num_batches_tracked == 0


def test_tables_are_torchvisions():
    """Layouts and file names as torchvision/models/vgg.py has them (cfgs A/B/D/E, the weights' URLs)."""
    from torchvision.models import vgg

    assert [pt.TORCHVISION_CFGS[a] for a in ("vgg11", "vgg13", "vgg16", "vgg19")] == [vgg.cfgs[c] for c in "ABDE"]
    for (arch, bn), name in pt.IMAGENET_FILES.items():
        enum = getattr(vgg, f"{arch.upper()}{'_BN' if bn else ''}_Weights").IMAGENET1K_V1
        assert enum.url == pt.URL + name
    for name in BUILDERS:
        arch, bn = name.split("_")[0], name.endswith("_bn")
        assert pt.conv_indices(pt.TORCHVISION_CFGS[arch], bn) == tv_convs(name)


@pytest.mark.parametrize("model", ["segnet", "bayesian_segnet", "segnet_3_stages"])
@pytest.mark.slow
def test_plain_vgg16_loads_its_convs_with_fresh_bn(vgg16_files, model):
    """SegNet's start (Badrinarayanan et al. 2017, §3): VGG16's 13 convs, BN fresh. Bayesian SegNet is
    built from its config group (model=bayesian_segnet); num_stages=3 takes the first 7 convs."""
    path, feats = vgg16_files["vgg16"]
    if model == "bayesian_segnet":
        cfg = compose_cfg(["model=bayesian_segnet", "dataset.num_classes=11", f"model.encoder.weights={path}"])
        m = model_from_config(cfg.model, pretrained=True)
        assert m.dropout == 0.5
    else:
        m = SegNet(11, VGGEncoder(num_stages=3 if model == "segnet_3_stages" else None, weights=path))
    assert_plain_loaded(m.encoder, feats, "vgg16")
    assert len(bns(m.encoder)) == (7 if model == "segnet_3_stages" else 13)


def test_vgg16_bn_loads_convs_and_bn_as_before(vgg16_files, caplog):
    path, feats = vgg16_files["vgg16_bn"]
    with caplog.at_level("INFO", logger="segdeconv"):
        m = SegNet(11, VGGEncoder(weights=path))
    assert m.encoder.features.state_dict().keys() == {k[len("features."):] for k in feats}
    for k, v in m.encoder.features.state_dict().items():
        assert torch.equal(v, feats[f"features.{k}"]), k
    assert m.encoder.weights_layout == "vgg16_bn" and m.encoder.pretrained_bn
    assert f"model.encoder.weights={path}: torchvision vgg16_bn layout loaded: 13 convs + BatchNorm" in caplog.text


def test_plain_file_into_an_encoder_without_bn_and_the_log_line(vgg16_files, caplog):
    path, feats = vgg16_files["vgg16"]
    with caplog.at_level("INFO", logger="segdeconv"):
        enc = VGGEncoder(batch_norm=False, weights=path)
    assert enc.features.state_dict().keys() == {k[len("features."):] for k in feats}
    for k, v in enc.features.state_dict().items():
        assert torch.equal(v, feats[f"features.{k}"]), k
    with caplog.at_level("INFO", logger="segdeconv"):
        VGGEncoder(weights=path)
    assert f"weights={path}: torchvision vgg16 layout loaded: 13 convs\n" in caplog.text + "\n"
    assert "vgg16 layout loaded: 13 convs; BatchNorm fresh (scale 1, shift 0, running mean 0, var 1)" in caplog.text


@pytest.mark.slow
def test_deconvnet_at_full_vgg16_shapes_from_imagenet(vgg16_files, tmp_path, monkeypatch):
    """DeconvNet (Noh et al. 2015, §4.1) from torchvision's plain VGG16 via weights=imagenet: 13 convs, fresh
    BN, fc6 = classifier.0 reshaped to 4096×512×7×7 and fc7 = classifier.3 as 4096×4096×1×1 (252M params)."""
    path, feats = vgg16_files["vgg16"]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth").symlink_to(path)
    torch.manual_seed(0)
    d = DeconvNet(21, VGGEncoder(weights="imagenet"))
    assert_plain_loaded(d.encoder, feats, "vgg16")
    state = torch.load(path, mmap=True, weights_only=True)
    w6, b6, w7, b7 = (state[f"classifier.{i}.{p}"] for i in (0, 3) for p in ("weight", "bias"))
    assert d.fc6[0].weight.shape == (4096, 512, 7, 7) and d.fc7[0].weight.shape == (4096, 4096, 1, 1)
    assert torch.equal(d.fc6[0].weight, w6.view(4096, 512, 7, 7)) and torch.equal(d.fc6[0].bias, b6)
    assert torch.equal(d.fc7[0].weight, w7.view(4096, 4096, 1, 1)) and torch.equal(d.fc7[0].bias, b7)
    x = torch.randn(1, 512, 7, 7)  # fc6 as a conv == the Linear layer on the flattened pool5 map
    torch.testing.assert_close(d.fc6[0](x).flatten(), x.flatten() @ w6.T + b6, rtol=1e-4, atol=1e-3)


def hub(tmp_path: Path, monkeypatch, name: str, legacy: bool = False) -> dict[str, Tensor]:
    """A generated torchvision file (features only) at $TORCH_HOME/hub/checkpoints/<its name>."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    arch, bn = name.split("_")[0], name.endswith("_bn")
    state = random_state(name, features_only=True)
    d = tmp_path / "hub" / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    torch.save(state, d / pt.IMAGENET_FILES[(arch, bn)], _use_new_zipfile_serialization=not legacy)
    return state


def test_imagenet_and_imagenet_bn_come_from_the_hub_cache(tmp_path, monkeypatch):
    plain, bn = hub(tmp_path, monkeypatch, "vgg11"), hub(tmp_path, monkeypatch, "vgg11_bn", legacy=True)
    assert pt.hub_file("vgg11", False) == tmp_path / "hub" / "checkpoints" / "vgg11-8a719046.pth"
    assert_plain_loaded(VGGEncoder("vgg11", weights="imagenet"), plain, "vgg11")
    enc = VGGEncoder("vgg11", weights="imagenet_bn")  # a legacy (pickle, not zip) file, as torchvision's are
    for k, v in enc.features.state_dict().items():
        assert torch.equal(v, bn[f"features.{k}"]), k
    del bn["features.1.num_batches_tracked"]  # torchvision's real *_bn files predate num_batches_tracked
    torch.save(bn, pt.hub_file("vgg11", True))
    assert VGGEncoder("vgg11", weights="imagenet_bn").features[1].num_batches_tracked == 0


def test_missing_hub_file_names_the_path_and_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    file = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    msg = (f"model.encoder.weights=imagenet: {file} not found; nothing is downloaded: place torchvision's "
           f"vgg16-397923af.pth there (from https://download.pytorch.org/models/vgg16-397923af.pth; TORCH_HOME "
           f"moves the directory) or set model.encoder.weights=null")
    with pytest.raises(ConfigError, match=f"^{re.escape(msg)}$"):
        VGGEncoder(weights="imagenet")
    with pytest.raises(ConfigError, match=re.escape("place torchvision's vgg13_bn-abd245e5.pth there")):
        VGGEncoder("vgg13", weights="imagenet_bn")
    with pytest.raises(CheckpointError, match=r"nope\.pth: file not found\. Nothing is downloaded.*vgg16-397923af"):
        VGGEncoder(weights=tmp_path / "nope.pth")


@pytest.mark.parametrize("kwargs,match", [
    (dict(arch="basic", weights="imagenet"), "SegNet-Basic (model.encoder.arch=basic, 7×7 filters) has no ImageNet "
                                             "weights; set model.encoder.weights=null"),
    (dict(arch="vgg11", width=0.5, weights="imagenet"), "model.encoder.weights=imagenet fits model.encoder.width=1.0 "
                                                        "only (got 0.5)"),
    (dict(arch="vgg11", batch_norm=False, weights="imagenet_bn"), "imagenet_bn holds BatchNorm but "
                                                                   "model.encoder.batch_norm=false"),
])
def test_impossible_imagenet_requests_are_config_errors_before_any_file(tmp_path, monkeypatch, kwargs, match):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty: the config is refused first
    with pytest.raises(ConfigError, match=re.escape(match)):
        VGGEncoder(**kwargs)


def test_files_that_do_not_fit_name_the_reason(tmp_path):
    path = tmp_path / "vgg11.pth"
    torch.save(random_state("vgg11", features_only=True), path)
    bn_path = tmp_path / "vgg11_bn.pth"
    torch.save(random_state("vgg11_bn", features_only=True), bn_path)
    cases = [
        (dict(arch="vgg16", weights=path), "holds torchvision's vgg11 layout, which does not fit model.encoder.arch="
                                           "vgg16; pass vgg16's file (vgg16-397923af.pth)"),
        (dict(arch="vgg11", width=0.5, weights=path), "holds torchvision's vgg11 layout, which fits "
                                                      "model.encoder.width=1.0 only (got 0.5)"),
        (dict(arch="vgg11", batch_norm=False, weights=bn_path), "holds torchvision's vgg11_bn layout (with BatchNorm) "
                                                                "but model.encoder.batch_norm=false"),
        (dict(arch="basic", weights=path), "SegNet-Basic (model.encoder.arch=basic) has no ImageNet weights"),
    ]
    for kwargs, match in cases:
        with pytest.raises(CheckpointError, match=re.escape(match)):
            VGGEncoder(**kwargs)


def test_caffe_and_other_non_torch_files_are_named_as_such(tmp_path):
    caffe = tmp_path / "VGG_ILSVRC_16_layers_conv.caffemodel"
    caffe.write_bytes(b"\x0a\x14VGG_ILSVRC_16_layers\xa2\x06\x00")  # NetParameter: name, then a layer
    renamed = tmp_path / "vgg16.bin"
    renamed.write_bytes(caffe.read_bytes())
    for path in (caffe, renamed):
        with pytest.raises(CheckpointError) as e:
            VGGEncoder(weights=path)
        assert str(e.value).startswith(f"model.encoder.weights={path} is a Caffe model; convert it to a "
                                       f"torchvision state dict")
        assert "or use model.encoder.weights=imagenet" in str(e.value) and "weights_only" not in str(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=re.escape(f"{junk} cannot be read: not a PyTorch file (it starts "
                                                        f"with b'not '")):
        VGGEncoder(weights=junk)
    whole = tmp_path / "model.pth"
    torch.save(nn.Conv2d(1, 1, 1), whole)  # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match="cannot be read as a state dict: it pickles Python objects") as e:
        VGGEncoder(weights=whole)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_train_cli_with_weights_imagenet(tmp_path):
    """``python train.py model=segnet_small model.encoder.width=1.0 model.encoder.weights=imagenet`` with
    TORCH_HOME holding a generated vgg11 file: the log names the layout; without the file: one error line."""
    home = tmp_path / "torch"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(random_state("vgg11", features_only=True), home / "hub" / "checkpoints" / "vgg11-8a719046.pth")
    args = tiny(trainer__max_epochs=1, model__encoder__width=1.0, model__encoder__weights="imagenet")
    r = run_cli("train.py", [*args, f"hydra.run.dir={tmp_path / 'run'}"], TORCH_HOME=str(home))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torchvision vgg11 layout loaded: 4 of 8 convs; BatchNorm fresh" in r.stdout + r.stderr
    r = run_cli("train.py", [*args, f"hydra.run.dir={tmp_path / 'run2'}"], TORCH_HOME=str(tmp_path / "empty"))
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-3000:]
    assert "model.encoder.weights=imagenet: " in errors[0] and "vgg11-8a719046.pth not found" in errors[0]
