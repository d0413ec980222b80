"""Every recipe in conf/experiment composes, its settings reach the optimizer/loss/loop, and it runs
2 steps (debug=default) on generated data."""
import pytest
import torch
from conftest import CONF, compose_cfg
from data_helpers import make_ade20k, make_camvid, make_cityscapes, make_sunrgbd, make_voc
from omegaconf import OmegaConf

from segdeconv.data.balance import SEGNET_TUTORIAL_CAMVID_WEIGHTS, median_frequency_weights
from segdeconv.data.sunrgbd import SEGNET_TUTORIAL_SUN_WEIGHTS
from segdeconv.losses import CrossEntropy
from segdeconv.tasks.train import build_trainer, fit

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# keep the CPU cost of the smoke run small; the full-size models are tested in test_models.py
# (ImageNet weights fit width 1 only: the paper recipes' weights=imagenet is tested in test_faithful.py)
SHRINK = {
    "segnet": ["model.encoder.width=0.125", "model.encoder.weights=null"],
    "segnet_basic": ["model.width=0.25"],
    "deconvnet": ["model.encoder.width=0.0625", "model.fc_channels=64", "model.encoder.weights=null"],
}


def test_expected_recipes_exist():
    assert {"camvid_segnet_cpu", "camvid_segnet", "camvid_segnet_plus", "camvid_segnet_basic",
            "camvid_bayesian_segnet", "voc_segnet", "voc_deconvnet_stage1", "voc_deconvnet_stage2",
            "cityscapes_segnet", "ade20k_segnet", "sunrgbd_segnet", "sunrgbd_segnet_plus"} <= set(EXPERIMENTS)
    assert "voc_deconvnet" not in EXPERIMENTS  # the one-stage schedule neither paper used (issue #29)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("recipe_data")
    return {"camvid": make_camvid(base / "camvid", n=12, size=(96, 128)), "voc": make_voc(base / "voc", n=64),
            "cityscapes": make_cityscapes(base / "cityscapes", n=8), "ade20k": make_ade20k(base / "ade20k", n=16),
            "sunrgbd": make_sunrgbd(base / "sunrgbd", n=8)}


# smoke-run input sizes (H, W) of the datasets whose recipes resize to a fixed size
SIZES = {"camvid": "[96,128]", "cityscapes": "[64,128]", "ade20k": "[64,64]", "sunrgbd": "[64,96]"}


def overrides(experiment: str, roots: dict, stage1=None) -> list[str]:
    """What makes ``experiment`` run on the generated data at smoke-test cost."""
    cfg = compose_cfg([f"experiment={experiment}"])
    name = cfg.dataset.name
    extra = SHRINK[cfg.model.name] + [f"dataset.root={roots[name]}", "dataset.num_workers=0", "trainer.progress=false"]
    extra += ["dataset.val_min_size=256"] if name == "voc" else []
    extra += [f"dataset.image_size={SIZES[name]}"] if name in SIZES else []
    if "object_crops" in str(cfg.dataset.train.get("_target_")):
        extra += ["dataset.train.min_area=1", "dataset.train.box_scale=8"]  # make_voc's masks are pixel noise
    if OmegaConf.is_missing(cfg.model, "init_from") and stage1 is not None:
        extra.append(f"model.init_from={stage1}")
    return extra


# the recipes that start from another recipe's checkpoint (model.init_from) → that recipe
STAGE1 = {"voc_deconvnet_stage2": "voc_deconvnet_stage1", "camvid_segnet_cpu_full": "camvid_segnet_cpu"}


@pytest.fixture(scope="module")
def stage1(roots, tmp_path_factory):
    """``stage1(experiment)``: a shrunk checkpoint of the recipe ``experiment`` starts from (None if none),
    trained once per module in debug mode."""
    made: dict = {}

    def get(experiment: str):
        first = STAGE1.get(experiment)
        if first is not None and first not in made:
            out = tmp_path_factory.mktemp(first)
            fit(compose_cfg([f"experiment={first}", "debug=default", f"output_dir={out}", *overrides(first, roots)]))
            made[first] = out / "checkpoints" / "last.pt"
        return made.get(first)

    return get


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_recipe_runs_in_debug_mode(experiment, roots, stage1, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}", "debug=default", f"output_dir={tmp_path}",
                       *overrides(experiment, roots, stage1(experiment))])
    metrics = fit(cfg)
    assert 0.0 <= metrics["mIoU"] <= 1.0
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_stage2_without_a_stage1_checkpoint_names_the_key(roots, tmp_path):
    from segdeconv.errors import ConfigError

    cfg = compose_cfg(["experiment=voc_deconvnet_stage2", "debug=default", f"output_dir={tmp_path}",
                       *overrides("voc_deconvnet_stage2", roots)])
    with pytest.raises(ConfigError, match="model.init_from is required"):
        fit(cfg)


# What each recipe promises (its YAML comments and README): optimizer, lr, accumulation, loss.
PROMISES = {
    "camvid_segnet_cpu": dict(opt="AdamW", lr=2e-3, wd=2e-4, accumulate=1, batch=8, normalize="weight",
                              weights=("median_freq", 0.5), plus=("LovaszSoftmax", 1.0)),
    "camvid_segnet": dict(opt="SGD", lr=1e-3, wd=5e-4, momentum=0.9, accumulate=1, batch=4, normalize="valid",
                          weights=("segnet_tutorial", 1.0)),
    "camvid_segnet_basic": dict(opt="SGD", lr=0.1, wd=5e-4, momentum=0.9, accumulate=1, batch=12,
                                normalize="valid", weights=("segnet_tutorial", 1.0)),
    "camvid_segnet_plus": dict(opt="SGD", lr=1e-3, wd=5e-4, momentum=0.9, accumulate=1, batch=4, normalize="valid",
                               weights=("segnet_tutorial", 1.0)),
    "camvid_bayesian_segnet": dict(opt="SGD", lr=1e-3, wd=5e-4, momentum=0.9, accumulate=1, batch=4,
                                   normalize="valid", weights=("segnet_tutorial", 1.0)),
    "voc_segnet": dict(opt="SGD", lr=0.01, wd=5e-4, momentum=0.9, accumulate=1, batch=16, normalize="weight",
                       weights=None),
    "cityscapes_segnet": dict(opt="SGD", lr=0.01, wd=5e-4, momentum=0.9, accumulate=1, batch=8, normalize="weight",
                              weights=None),
    "ade20k_segnet": dict(opt="SGD", lr=0.01, wd=5e-4, momentum=0.9, accumulate=1, batch=16, normalize="weight",
                          weights=None),
    "sunrgbd_segnet": dict(opt="SGD", lr=1e-3, wd=5e-4, momentum=0.9, accumulate=1, batch=4, normalize="valid",
                           weights=(SEGNET_TUTORIAL_SUN_WEIGHTS, 1.0)),
    "sunrgbd_segnet_plus": dict(opt="SGD", lr=1e-3, wd=5e-4, momentum=0.9, accumulate=1, batch=4, normalize="valid",
                                weights=(SEGNET_TUTORIAL_SUN_WEIGHTS, 1.0)),
    "camvid_segnet_cpu_full": dict(opt="AdamW", lr=5e-4, wd=2e-4, accumulate=1, batch=4, normalize="weight",
                                   weights=("median_freq", 0.5), plus=("LovaszSoftmax", 1.0)),
    "voc_deconvnet_stage1": dict(opt="SGD", lr=0.01, wd=5e-4, momentum=0.9, accumulate=8, batch=8,
                                 normalize="weight", weights=None),
    "voc_deconvnet_stage2": dict(opt="SGD", lr=0.01, wd=5e-4, momentum=0.9, accumulate=8, batch=8,
                                 normalize="weight", weights=None),
}


def test_every_recipe_has_its_promises_listed():
    assert set(PROMISES) == set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_recipe_settings_reach_the_optimizer_loss_and_loop(experiment, roots, stage1, tmp_path):
    p = PROMISES[experiment]
    tr = build_trainer(compose_cfg([f"experiment={experiment}", f"output_dir={tmp_path}",
                                    *overrides(experiment, roots, stage1(experiment))]))
    group = tr.optimizer.param_groups[0]
    assert type(tr.optimizer).__name__ == p["opt"]
    assert group["initial_lr"] == pytest.approx(p["lr"]) and group["weight_decay"] == pytest.approx(p["wd"])
    if "momentum" in p:
        assert group["momentum"] == pytest.approx(p["momentum"])
    assert tr.settings.accumulate_grad_batches == p["accumulate"] and tr.settings.batch_size == p["batch"]
    ce = tr.criterion
    if "plus" in p:  # 1·CE + w·<other term> (conf/loss/ce_lovasz.yaml)
        assert [type(t).__name__ for t in ce.terms] == ["CrossEntropy", p["plus"][0]]
        assert ce.weights == [1.0, p["plus"][1]]
        ce = ce.terms[0]
    assert isinstance(ce, CrossEntropy) and ce.normalize == p["normalize"]
    got = ce.class_weights
    if p["weights"] is None:
        assert got is None
    else:
        spec, power = p["weights"]
        expected = (torch.tensor(SEGNET_TUTORIAL_CAMVID_WEIGHTS) if spec == "segnet_tutorial"
                    else torch.tensor(spec) if isinstance(spec, tuple)
                    else torch.as_tensor(median_frequency_weights(tr.train_ds.dataset)).float() ** power)
        assert torch.allclose(got.cpu().float(), expected.float(), rtol=1e-5)


def test_accumulation_takes_one_optimizer_step_per_k_micro_batches(roots, tmp_path):
    """DeconvNet's batch 64 = 8 × iter_size 8: one optimizer step consumes 8 micro-batches."""
    cfg = compose_cfg(["experiment=voc_deconvnet_stage2", "model.init_from=null", *SHRINK["deconvnet"],
                       f"dataset.root={roots['voc']}",
                       "dataset.val_min_size=256", "dataset.batch_size=2", "dataset.num_workers=0",
                       "trainer.max_steps=1", "trainer.progress=false", "trainer.limit_val_images=1",
                       f"output_dir={tmp_path}"])
    tr = build_trainer(cfg)
    calls = []
    inner = tr.criterion
    tr.criterion = lambda logits, target: calls.append(1) or inner(logits, target)
    tr.fit()
    assert tr.state.step == 1 and len(calls) == 8  # 12 micro-batches in the epoch, one step of 8 taken
