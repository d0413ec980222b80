"""Monte-Carlo dropout inference (Bayesian SegNet): seeding, the mean/variance/entropy, BatchNorm left
alone, BN folding, uncertainty PNGs from predict.py, mc_samples in evaluate.py's metrics.json, bad values."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli
from conftest import TINY, compose_cfg
from PIL import Image
from torch import nn

from segdeconv import Predictor
from segdeconv.engine.checkpoint import load_checkpoint
from segdeconv.engine.step import to_device
from segdeconv.errors import ConfigError, UserError
from segdeconv.inference.montecarlo import MCDropout, mc_predict_fn, uncertainty_image
from segdeconv.inference.strategies import make_predict_fn
from segdeconv.models import mc_dropout, segnet_basic

NAMES, PALETTE = [f"c{i}" for i in range(5)], [[i * 50, 0, 0] for i in range(5)]


@pytest.fixture(scope="module")
def bayes_ckpt(tmp_path_factory) -> Path:
    """best.pt of a 1-epoch Bayesian SegNet-Basic (1/8 width, fp32) on the tiny synthetic data."""
    from segdeconv.tasks.train import fit

    out = tmp_path_factory.mktemp("bayes_run")
    fit(compose_cfg(TINY + ["model=bayesian_segnet_basic", "model.width=0.125", "trainer.max_epochs=1",
                            "trainer.precision=fp32", f"output_dir={out}"]))
    return out / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8)


def mc(ckpt: Path, samples: int = 4, seed: int = 0, **kw) -> Predictor:
    return Predictor.from_checkpoint(ckpt, device="cpu", precision="fp32", mc_samples=samples, mc_seed=seed, **kw)


def bayes_model(p: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    model = segnet_basic(5, width=0.125, dropout=0.5).eval()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    return model


# ----------------------------------------------------------------------------- seeding and the mean
def test_same_seed_same_output_other_seed_differs_and_caller_rng_untouched(bayes_ckpt, image):
    p = mc(bayes_ckpt, seed=0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = p.predict_proba(image)
    assert torch.equal(torch.get_rng_state(), state)  # the passes run in a forked RNG
    assert np.array_equal(a, mc(bayes_ckpt, seed=0).predict_proba(image))
    assert np.abs(a - mc(bayes_ckpt, seed=1).predict_proba(image)).max() > 1e-3


def test_mc_mean_and_variance_equal_a_hand_loop_over_mc_dropout_passes():
    model, x = bayes_model(), torch.randn(2, 3, 32, 40)
    mean, var = MCDropout(4, seed=3).stats(model, x)
    for i in range(2):  # every image is sampled on its own from manual_seed(seed)
        torch.manual_seed(3)
        with torch.no_grad(), mc_dropout(model):
            probs = torch.stack([model(x[i:i + 1]).softmax(1) for _ in range(4)])
        torch.testing.assert_close(mean[i:i + 1], probs.mean(0))
        torch.testing.assert_close(var[i:i + 1], probs.var(0, unbiased=False), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(MCDropout(4, seed=3)(model, x).exp(), mean)
    assert var.max() > 0 and not model.training


def test_batched_mc_prediction_equals_one_image_at_a_time(bayes_ckpt, image):
    p, other = mc(bayes_ckpt), image[::-1].copy()
    batch = p.predict_batch([image, other], batch_size=2)
    assert np.array_equal(batch[0], p.predict(image)) and np.array_equal(batch[1], p.predict(other))


def test_one_sample_with_p0_dropout_equals_the_plain_pass(image):
    model = bayes_model(p=0.0)
    plain = Predictor(model, NAMES, PALETTE, torch.device("cpu"))
    one = Predictor(model, NAMES, PALETTE, torch.device("cpu"), mc_samples=1)
    np.testing.assert_allclose(one.predict_proba(image), plain.predict_proba(image), atol=1e-6, rtol=0)
    assert np.array_equal(one.predict(image), plain.predict(image))


def test_mc_inference_leaves_batchnorm_stats_and_modes_unchanged(bayes_ckpt, image):
    p = mc(bayes_ckpt, optimize=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in p.model.modules())
    stats = {k: v.clone() for k, v in p.model.state_dict().items()}
    p.predict_uncertainty(image)
    assert all(torch.equal(stats[k], v) for k, v in p.model.state_dict().items())
    assert not any(m.training for m in p.model.modules())


def test_bn_folding_keeps_dropout_sampling(bayes_ckpt, image, monkeypatch):
    # NCHW for both: dropout draws its mask in memory order, so NHWC samples other (equally valid) masks
    monkeypatch.setattr("segdeconv.inference.predictor.resolve_channels_last", lambda *a, **k: False)
    fast, exact = mc(bayes_ckpt), mc(bayes_ckpt, optimize=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    assert sum(isinstance(m, nn.Dropout) for m in fast.model.modules()) == 4
    np.testing.assert_allclose(fast.predict_proba(image), exact.predict_proba(image), atol=1e-4, rtol=0)
    plain = Predictor.from_checkpoint(bayes_ckpt, device="cpu", precision="fp32").predict_proba(image)
    assert np.abs(fast.predict_proba(image) - plain).max() > 1e-3  # the masks really are sampled


# ----------------------------------------------------------------------------- uncertainty maps
def test_predict_uncertainty_returns_mean_mask_variance_and_entropy(bayes_ckpt):
    p = mc(bayes_ckpt)
    img = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)  # the training size: no resize
    u = p.predict_uncertainty(img)
    assert u["mean"].shape == (5, 64, 80) and u["variance"].shape == u["entropy"].shape == (64, 80)
    np.testing.assert_allclose(u["mean"], p.predict_proba(img), atol=1e-6)
    assert np.array_equal(u["mask"], p.predict(img))
    entropy = -(u["mean"] * np.log(np.clip(u["mean"], 1e-12, None))).sum(0)
    np.testing.assert_allclose(u["entropy"], entropy, atol=1e-5)
    assert 0 < u["entropy"].max() <= np.log(5) + 1e-6
    _, var = p.mc.stats(p.model, to_device(p._prepare(img)[None], p.device, p.channels_last))
    np.testing.assert_allclose(u["variance"], var.mean(1)[0].numpy(), atol=1e-6)  # mean over classes
    assert 0 < u["variance"].max() <= 4 / 25


def test_uncertainty_image_uses_the_fixed_scale_of_each_measure():
    c = 4
    mean = np.stack([np.full((2, 3), 1 / c)] * c).astype(np.float32)
    mean[:, 1] = np.eye(c)[0][:, None]  # row 1: one-hot mean
    result = {"mean": mean, "entropy": -(mean * np.log(np.clip(mean, 1e-12, None))).sum(0),
              "variance": np.array([[(c - 1) / c ** 2] * 3, [0.0] * 3], np.float32)}
    ent, var = uncertainty_image(result, "entropy"), uncertainty_image(result, "variance")
    assert ent.dtype == np.uint8 and ent.tolist() == [[255] * 3, [0] * 3] and var.tolist() == [[255] * 3, [0] * 3]
    result["variance"][0] /= 2
    assert uncertainty_image(result, "variance")[0].tolist() == [128] * 3
    with pytest.raises(UserError, match="uncertainty_map='std' is unknown"):
        uncertainty_image(result, "std")


@pytest.mark.slow
def test_predict_cli_writes_uncertainty_pngs(bayes_ckpt, image, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(image).save(src / "a.png")
    out = tmp_path / "out"
    r = run_cli("predict.py", [f"ckpt_path={bayes_ckpt}", f"input={src}", f"output={out}", "precision=fp32",
                               "mc_samples=3", "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}"])
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["color", "index", "overlay", "uncertainty"]
    with Image.open(out / "uncertainty" / "a.png") as im:
        assert im.mode == "L" and im.size == (83, 61)
        png = np.asarray(im).astype(int)
    want = uncertainty_image(mc(bayes_ckpt, samples=3).predict_uncertainty(image), "entropy").astype(int)
    assert np.abs(png - want).max() <= 1 and png.max() > 0  # ≤ 1 level: thread-count rounding


def test_save_controls_the_uncertainty_kind(bayes_ckpt, image, tmp_path):
    from segdeconv.tasks.predict import predict_files

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(image).save(src / "a.png")
    base = [f"ckpt_path={bayes_ckpt}", f"input={src}", "device=cpu", "precision=fp32", "progress=false"]
    predict_files(compose_cfg(base + [f"output={tmp_path / 'a'}", "mc_samples=2", "save=[index]"], "predict"))
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["index"]
    predict_files(compose_cfg(base + [f"output={tmp_path / 'b'}", "mc_samples=2", "save=[uncertainty]",
                                      "uncertainty_map=variance"], "predict"))
    with Image.open(tmp_path / "b" / "uncertainty" / "a.png") as im:
        got = np.asarray(im)
    assert np.array_equal(got, uncertainty_image(mc(bayes_ckpt, samples=2).predict_uncertainty(image), "variance"))
    with pytest.raises(UserError, match="needs Monte-Carlo dropout: add mc_samples"):
        predict_files(compose_cfg(base + [f"output={tmp_path / 'c'}", "save=[index,uncertainty]"], "predict"))
    with pytest.raises(UserError, match="uncertainty_map='std'"):
        predict_files(compose_cfg(base + [f"output={tmp_path / 'd'}", "mc_samples=2", "uncertainty_map=std"],
                                  "predict"))
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- evaluate.py
def test_evaluate_with_mc_samples_records_them_in_metrics_json(bayes_ckpt, tmp_path):
    from segdeconv.tasks.evaluate import evaluate_checkpoint

    base = [f"ckpt_path={bayes_ckpt}", "device=cpu", "precision=fp32", "report.figures=false"]
    m = evaluate_checkpoint(compose_cfg(base + [f"output_dir={tmp_path}", "mc_samples=2", "mc_seed=5"], "evaluate"))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["mc_samples"] == 2 and on_disk["mc_seed"] == 5 and 0.0 <= on_disk["mIoU"] <= 1.0
    assert on_disk["mIoU"] == m["mIoU"]
    plain = evaluate_checkpoint(compose_cfg(base + [f"output_dir={tmp_path / 'plain'}"], "evaluate"))
    assert plain["mc_samples"] is None and plain["mc_seed"] is None


# ----------------------------------------------------------------------------- bad values
@pytest.mark.parametrize("samples, seed, match", [
    (0, 0, "mc_samples=0 must be an integer >= 1"),
    (-2, 0, "mc_samples=-2"),
    (2.5, 0, "mc_samples=2.5"),
    (True, 0, "mc_samples=True"),
    (4, -1, "mc_seed=-1 must be an integer >= 0"),
])
def test_bad_mc_values_are_config_errors(samples, seed, match):
    with pytest.raises(ConfigError, match=match):
        mc_predict_fn(samples, seed)


def test_mc_with_tta_or_window_is_refused():
    with pytest.raises(ConfigError, match="mc_samples=4 cannot be combined with tta / sliding.window"):
        make_predict_fn({"flip": True}, {"window": 32}, None, 4)
    assert isinstance(make_predict_fn({"flip": False, "scales": [1.0]}, {"window": None}, None, 4), MCDropout)


def test_mc_without_dropout_layers_and_uncertainty_without_mc_are_refused(bayes_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="the model is a SegNet without dropout"):
        Predictor(segnet_basic(5, width=0.125), NAMES, PALETTE, torch.device("cpu"), mc_samples=2)
    ckpt = load_checkpoint(bayes_ckpt)
    ckpt["arch"]["dropout"] = 0.0  # same weights (dropout has none), no dropout layers
    path = tmp_path / "plain.pt"
    torch.save(ckpt, path)
    with pytest.raises(ConfigError, match=f"ckpt_path={path} is a SegNet without dropout"):
        mc(path)
    with pytest.raises(UserError, match="uncertainty needs Monte-Carlo dropout"):
        Predictor.from_checkpoint(path, device="cpu").predict_uncertainty(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize("args, match", [(["mc_samples=0"], "mc_samples=0"),
                                         (["mc_samples=2", "tta.flip=true"], "cannot be combined with tta")])
def test_evaluate_cli_bad_mc_settings_are_one_line_errors(bayes_ckpt, tmp_path, args, match):
    r = run_cli("evaluate.py", [f"ckpt_path={bayes_ckpt}", *args, f"hydra.run.dir={tmp_path}"])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1 and match in errors[0], r.stderr
    assert not (tmp_path / "metrics.json").exists()
