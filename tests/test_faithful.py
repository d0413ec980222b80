"""The paper recipes (issue #29 item 2): each one's resolved settings pinned to a table transcribed from the
released files — data pipeline, init source, BN ε, per-parameter lr/decay groups, solver and schedule.

Sources: alexgkendall/SegNet-Tutorial Models/{segnet,segnet_basic,bayesian_segnet}_train.prototxt and their
*_solver.prototxt, Example_Models/train_segnet_sun.prototxt; caffe-segnet's BN layer (ε 1e-9; blobs scale,
shift); HyeonwooNoh/DeconvNet training/00{1,2}_stage_*/{solver,stage_*_train}.prototxt. Values the repo could
not check against a release file are marked "unverified" (README "How faithful is it").
"""
from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from conftest import CONF, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from segdeconv.config import model_from_config
from segdeconv.engine.param_groups import check_mults, param_groups, param_kinds, with_param_mults
from segdeconv.errors import ConfigError
from segdeconv.models.initialization import set_bn_eps
from segdeconv.tasks.train import optimizer_factory, warn_if_not_the_papers

NO_TRANSFORM_360 = [("Resize", 360, 480)]  # DenseImageData: no transform_param (the resize is a no-op on CamVid)
NOH = [("Resize", 250, 250), ("PadIfNeeded", 224, 224), ("RandomCrop", 224, 224), ("HorizontalFlip", 0.5)]
# (lr_mult, decay_mult) per parameter kind. caffe-segnet prototxts: Convolution param {1 1} {2 0}, BN {1 1} {1 0}.
CAFFE_SEGNET = {"conv.weight": (1, 1), "conv.bias": (2, 0), "bn.weight": (1, 1), "bn.bias": (1, 0)}
# DeconvNet: blobs_lr 1 2 / weight_decay 1 0 on the (de)convolutions; its BN layers' multipliers: unverified (1 1).
DECONVNET = {"conv.weight": (1, 1), "conv.bias": (2, 0), "bn.weight": (1, 1), "bn.bias": (1, 1)}

SEGNET_SOLVER = dict(lr=1e-3, momentum=0.9, wd=5e-4, schedule=("fixed",))
RELEASED: dict[str, dict[str, Any]] = {
    "camvid_segnet": dict(  # segnet_train.prototxt + segnet_solver.prototxt
        model="segnet", dropout=0.0, init="paper", input="imagenet", lrn=False, start="imagenet", eps=1e-9,
        transforms=NO_TRANSFORM_360, batch=4, accumulate=1, **SEGNET_SOLVER, max_steps=40000, mults=CAFFE_SEGNET,
        loss="valid", weights="segnet_tutorial"),
    "camvid_segnet_basic": dict(  # segnet_basic_train.prototxt (batch 4 there; 12: the paper's text)
        model="segnet_basic", dropout=0.0, init="paper", input="caffe_bgr", lrn=True, start="scratch", eps=1e-9,
        transforms=NO_TRANSFORM_360, batch=12, accumulate=1, lr=0.1, momentum=0.9, wd=5e-4, schedule=("fixed",),
        max_steps=10000, mults=CAFFE_SEGNET, loss="valid", weights="segnet_tutorial"),
    "camvid_bayesian_segnet": dict(  # bayesian_segnet_train.prototxt + bayesian_segnet_solver.prototxt (60k)
        model="segnet", dropout=0.5, init="paper", input="imagenet", lrn=False, start="imagenet", eps=1e-9,
        transforms=NO_TRANSFORM_360, batch=4, accumulate=1, **SEGNET_SOLVER, max_steps=60000, mults=CAFFE_SEGNET,
        loss="valid", weights="segnet_tutorial"),
    "sunrgbd_segnet": dict(  # train_segnet_sun.prototxt (six dropouts) + segnet_solver.prototxt
        model="segnet", dropout=0.5, init="paper", input="imagenet", lrn=False, start="imagenet", eps=1e-9,
        transforms=NO_TRANSFORM_360, batch=4, accumulate=1, **SEGNET_SOLVER, max_steps=140000,
        mults=CAFFE_SEGNET, loss="valid", weights="sun"),
    "voc_deconvnet_stage1": dict(  # 001_stage_1: batch 8 × iter_size 8, stepsize 9000, max_iter 20000
        model="deconvnet", dropout=None, init="paper", input="imagenet", lrn=None, start="imagenet", eps=1e-5,
        transforms=NOH, batch=8, accumulate=8, lr=0.01, momentum=0.9, wd=5e-4, schedule=("step", 9000, 0.1),
        max_steps=20000, mults=DECONVNET, loss="weight", weights=None),
    "voc_deconvnet_stage2": dict(  # 002_stage_2: stepsize 10000, max_iter 40000, from stage 1
        model="deconvnet", dropout=None, init="paper", input="imagenet", lrn=None, start="init_from", eps=1e-5,
        transforms=NOH, batch=8, accumulate=8, lr=0.01, momentum=0.9, wd=5e-4, schedule=("step", 10000, 0.1),
        max_steps=40000, mults=DECONVNET, loss="weight", weights=None),
}
# What a ``…_plus`` recipe may change from its paper recipe (anything else must stay the release's).
PLUS = {"camvid_segnet_plus": "camvid_segnet", "sunrgbd_segnet_plus": "sunrgbd_segnet"}
PLUS_KEYS = {"task", "run_name", "paper", "trainer.precision", "dataset.train.transform.scale",
             "dataset.train.transform.color_jitter", "dataset.train.transform.hflip"}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def recipe(name: str, *extra: str):
    return compose_cfg([f"experiment={name}", "dataset.root=/nonexistent", "output_dir=/tmp/unused", *extra])


def transform_rows(cfg) -> list[tuple]:
    """The training transform the recipe builds, as (name, size or p) rows."""
    rows = []
    for t in instantiate(cfg.dataset.train.transform).transforms:
        name = type(t).__name__
        size = {"Resize": ("height", "width"), "RandomCrop": ("height", "width"),
                "PadIfNeeded": ("min_height", "min_width")}.get(name)
        rows.append((name, *(getattr(t, a) for a in size)) if size else (name, t.p))
    return rows


def lr_at(cfg, steps: list[int]) -> list[float]:
    """The recipe's scheduler over max_steps, as lr multipliers at ``steps``."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = instantiate(cfg.scheduler)(opt, total_steps=int(cfg.trainer.max_steps))
    return [sched.lr_lambdas[0](s) for s in steps]


def meta_model(cfg) -> nn.Module:
    with torch.device("meta"):
        return model_from_config(cfg.model)  # the architecture only: encoder.weights is not read


def group_settings(cfg, model: nn.Module) -> dict[str, tuple[float, float]]:
    """kind → (lr, weight decay) of the optimizer groups the recipe builds for ``model``."""
    mults = OmegaConf.to_container(cfg.optimizer.get("param_mults") or {})
    lr, wd = float(cfg.optimizer.lr), float(cfg.optimizer.weight_decay)
    groups = list(with_param_mults(lambda g: g, model, mults, lr, wd)(model.parameters()))
    groups = groups if isinstance(groups[0], dict) else [{"params": groups}]
    kinds, out = param_kinds(model), {}
    for g in groups:
        for p in g["params"]:
            setting = (g.get("lr", lr), g.get("weight_decay", wd))
            assert out.setdefault(kinds[id(p)], setting) == setting, kinds[id(p)]
    return out


def test_every_paper_recipe_is_in_the_table_and_only_those_name_a_paper():
    papers = {e for e in EXPERIMENTS if recipe(e).get("paper")}
    assert papers == set(RELEASED)
    assert set(PLUS) <= set(EXPERIMENTS) and "voc_deconvnet" not in EXPERIMENTS


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_paper_recipe_resolves_to_its_release(name):
    want, cfg = RELEASED[name], recipe(name)
    m = cfg.model
    assert (m.name, m.get("dropout"), m.init, m.get("input"), m.get("input_lrn")) == (
        want["model"], want["dropout"], want["init"], want["input"], want["lrn"])
    assert cfg.paper.init == want["start"]
    assert (m.get("encoder") or {}).get("weights") == ("imagenet" if want["start"] == "imagenet" else None)
    assert transform_rows(cfg) == want["transforms"]
    assert (cfg.dataset.batch_size, cfg.trainer.accumulate_grad_batches) == (want["batch"], want["accumulate"])
    o = cfg.optimizer
    assert (o._target_, o.lr, o.momentum, o.weight_decay) == ("torch.optim.SGD", want["lr"], want["momentum"], want["wd"])
    assert not o.get("nesterov") and not o.get("dampening")
    assert cfg.trainer.max_steps == want["max_steps"] and cfg.trainer.precision == "fp32"
    assert cfg.trainer.grad_clip is None and cfg.trainer.ema_decay is None
    assert (cfg.loss.criterion.normalize, cfg.loss.get("class_weight_power", 1.0)) == (want["loss"], 1.0)
    spec = cfg.loss.class_weights
    assert (spec if isinstance(spec, (str, type(None))) else "sun") == want["weights"]


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_paper_recipe_schedule_is_the_solvers(name):
    want, cfg = RELEASED[name], recipe(name)
    if want["schedule"] == ("fixed",):
        assert lr_at(cfg, [0, 1, want["max_steps"] // 2, want["max_steps"] - 1]) == [1.0] * 4
        return
    _, stepsize, gamma = want["schedule"]
    steps = [s for k in range(1, want["max_steps"] // stepsize + 1) for s in (k * stepsize - 1, k * stepsize)]
    expected = [gamma ** (s // stepsize) for s in steps if s < want["max_steps"]]
    assert lr_at(cfg, [s for s in steps if s < want["max_steps"]]) == pytest.approx(expected)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_paper_recipe_model_has_the_releases_eps_and_decay_groups(name):
    want = RELEASED[name]
    cfg = recipe(name, *(["model.init_from=null"] if want["start"] == "init_from" else []))  # the architecture
    model = meta_model(cfg)
    bns = [b for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    assert bns and {b.eps for b in bns} == {want["eps"]}
    lr, wd = want["lr"], want["wd"]
    assert group_settings(cfg, model) == {k: (lr * a, wd * b) for k, (a, b) in want["mults"].items()}


@pytest.mark.parametrize("plus", sorted(PLUS))
def test_plus_recipes_change_only_what_they_say(plus):
    def flat(node, prefix=""):
        return ({f"{prefix}{k}": v for key, val in node.items() for k, v in flat(val, f"{key}.").items()}
                if isinstance(node, dict) else {prefix.rstrip("."): node})

    a = flat(OmegaConf.to_container(recipe(PLUS[plus]), resolve=False))
    b = flat(OmegaConf.to_container(recipe(plus), resolve=False))
    changed = {k.split(".")[0] if k.startswith("paper") else k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert changed <= PLUS_KEYS and "trainer.precision" in changed
    assert recipe(plus).trainer.precision == "auto" and transform_rows(recipe(plus))[-1][0] == "ColorJitter"


# ----------------------------------------------------------------------------- init source
def test_paper_recipe_loads_imagenet_vgg16_and_gives_its_fresh_bn_the_prototxt_filler(tmp_path, monkeypatch):
    """camvid_segnet at full size from a generated torchvision vgg16 file in $TORCH_HOME."""
    from test_pretrained import random_state

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    state = random_state("vgg16", features_only=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    model = model_from_config(recipe("camvid_segnet").model, pretrained=True)
    convs = [m for m in model.encoder.features if isinstance(m, nn.Conv2d)]
    assert torch.equal(convs[0].weight, state["features.0.weight"])
    assert torch.equal(convs[-1].weight, state["features.28.weight"])
    bns = [m for m in model.encoder.features if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(b.bias == 1e-3) and torch.all(b.weight == 1) and b.eps == 1e-9 for b in bns)


@pytest.mark.parametrize("name", ["camvid_segnet", "voc_deconvnet_stage1"])
def test_paper_recipe_without_the_weights_file_is_one_clear_error(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no hub/checkpoints: the file is missing
    with pytest.raises(ConfigError, match=r"model.encoder.weights=imagenet: .*vgg16-397923af.pth not found"):
        model_from_config(recipe(name).model, pretrained=True)


@pytest.mark.parametrize("name,override,key", [
    ("camvid_segnet", "model.encoder.weights=null", "model.encoder.weights=null"),
    ("sunrgbd_segnet", "model.encoder.weights=null", "model.encoder.weights=null"),
    ("voc_deconvnet_stage2", "model.init_from=null", "model.init_from=null"),
])
def test_paper_recipe_from_scratch_warns_that_it_is_not_comparable(name, override, key, caplog):
    with caplog.at_level(logging.WARNING, logger="segdeconv"):
        warn_if_not_the_papers(recipe(name, override))
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(key) and "NOT comparable" in line and recipe(name).paper.reports in line


@pytest.mark.parametrize("name,extra", [("camvid_segnet", ()), ("camvid_segnet_plus", ("model.encoder.weights=null",)),
                                        ("camvid_segnet_basic", ()), ("voc_deconvnet_stage2", ())])
def test_no_warning_with_the_papers_start_or_outside_paper_recipes(name, extra, caplog):
    with caplog.at_level(logging.WARNING, logger="segdeconv"):
        warn_if_not_the_papers(recipe(name, *extra))  # stage 2's ??? init_from is refused later, not warned
    assert caplog.records == []


# ----------------------------------------------------------------------------- param groups, BN ε
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.ConvTranspose2d(4, 2, 1))


def test_param_groups_follow_the_caffe_multipliers_and_are_deterministic():
    model = tiny()
    mults = check_mults({"conv.bias": [2, 0], "bn.bias": [1, 0]})
    groups = param_groups(model.parameters(), param_kinds(model), mults, 0.1, 1e-3)
    assert [g["name"] for g in groups] == ["bn.weight,conv.weight", "bn.bias", "conv.bias"]
    assert [(g.get("lr"), g.get("weight_decay")) for g in groups] == [(None, None), (0.1, 0.0), (0.2, 0.0)]
    assert [len(g["params"]) for g in groups] == [3, 1, 2]
    again = param_groups(model.parameters(), param_kinds(model), mults, 0.1, 1e-3)
    assert [[id(p) for p in g["params"]] for g in again] == [[id(p) for p in g["params"]] for g in groups]


def test_optimizer_factory_builds_groups_that_train_and_resume():
    cfg = recipe("camvid_segnet")
    model = tiny()
    opt = optimizer_factory(cfg.optimizer, model)(model.parameters())
    assert type(opt).__name__ == "SGD" and len(opt.param_groups) == 3
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 5e-4
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    fresh = optimizer_factory(cfg.optimizer, model)(model.parameters())
    fresh.load_state_dict(opt.state_dict())  # a resume rebuilds the same groups
    assert [g["name"] for g in fresh.param_groups] == [g["name"] for g in opt.param_groups]


def test_without_param_mults_the_optimizer_has_one_group():
    model = tiny()
    opt = optimizer_factory(compose_cfg(["output_dir=/tmp/x"]).optimizer, model)(model.parameters())
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("mults,match", [({"conv.shift": [1, 0]}, r"param_mults.conv.shift is not a parameter kind"),
                                         ({"bn.bias": [1]}, r"param_mults.bn.bias=\[1\] must be \[lr_mult, decay_mult\]"),
                                         ({"bn.bias": [1, -1]}, r"two numbers ≥ 0")])
def test_bad_param_mults_are_one_line_config_errors(mults, match):
    with pytest.raises(ConfigError, match=match):
        check_mults(mults)


def test_bn_eps_reaches_every_batchnorm_and_is_checked():
    model = set_bn_eps(tiny(), 1e-9)
    assert model[1].eps == 1e-9
    with pytest.raises(ConfigError, match=r"model.bn_eps=0 must be a number in \(0, 1\)"):
        set_bn_eps(tiny(), 0)
