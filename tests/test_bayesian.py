"""Bayesian SegNet: dropout where the prototxts have it, Monte-Carlo dropout mode, recomputed masks."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from segdeconv.errors import ConfigError
from segdeconv.models import SegNet, VGGEncoder, mc_dropout, mc_predict, segnet_basic
from segdeconv.models.memory import MemoryPolicy, apply_policy, recompute

X = torch.randn(2, 3, 64, 64)


def bayesian_segnet():
    return SegNet(5, VGGEncoder(width=0.125), dropout=0.5)


def bayesian_basic():
    return segnet_basic(5, width=0.25, dropout=0.5)


def drops(model):
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


@pytest.mark.parametrize("build,count", [(bayesian_segnet, 6), (bayesian_basic, 4)])
def test_dropout_samples_in_train_and_is_off_in_eval(build, count):
    torch.manual_seed(0)
    m = build()
    assert len(drops(m)) == count and {d.p for d in drops(m)} == {0.5}
    with torch.no_grad():
        assert not torch.equal(m.train()(X), m(X))
        m.eval()
        assert torch.equal(m(X), m(X))


def test_mc_dropout_samples_with_frozen_batchnorm_and_restores_every_mode():
    torch.manual_seed(0)
    m = bayesian_segnet().train()
    m.encoder.features[1].eval()  # a mixed state must come back as it was
    before = {name: mod.training for name, mod in m.named_modules()}
    stats = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad(), mc_dropout(m):
        assert all(d.training for d in drops(m))
        assert not any(b.training for b in m.modules() if isinstance(b, nn.BatchNorm2d))
        a, b = m(X), m(X)
    assert not torch.equal(a, b)  # a new dropout mask per pass
    assert all(torch.equal(stats[k], v) for k, v in m.state_dict().items())  # BN running stats untouched
    assert {name: mod.training for name, mod in m.named_modules()} == before


def test_mc_dropout_restores_modes_after_an_exception():
    m = bayesian_basic().eval()
    with pytest.raises(RuntimeError, match="boom"), mc_dropout(m):
        raise RuntimeError("boom")
    assert not any(mod.training for mod in m.modules())


def test_mc_dropout_needs_a_model_with_dropout():
    with pytest.raises(ConfigError, match="no dropout layers"), mc_dropout(segnet_basic(5, width=0.25)):
        pass


def test_mc_predict_is_the_mean_and_variance_of_the_softmax_samples():
    m = bayesian_basic()
    torch.manual_seed(3)
    mean, var = mc_predict(m, X, samples=4)
    torch.manual_seed(3)
    with torch.no_grad(), mc_dropout(m):
        probs = torch.stack([m(X).softmax(1) for _ in range(4)])  # (T, B, C, H, W)
    torch.testing.assert_close(mean, probs.mean(0))
    torch.testing.assert_close(var, probs.var(0, unbiased=False), atol=1e-6, rtol=1e-4)
    assert torch.allclose(mean.sum(1), torch.ones(2, 64, 64)) and var.max() > 0
    with pytest.raises(ConfigError, match="samples"):
        mc_predict(m, X, samples=0)


@pytest.mark.parametrize("kwargs", [{"dropout": 1.0}, {"dropout": -0.1}, {"dropout": 0.5, "dropout_stages": 6}])
def test_bad_dropout_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError, match="model.dropout"):
        SegNet(5, VGGEncoder(width=0.125), **kwargs)


def _step(model, seed=1):
    torch.manual_seed(seed)
    model.train()
    y = model(X)
    y.square().mean().backward()
    return y.detach()


def _pair(build):
    torch.manual_seed(0)
    plain = build()
    twin = apply_policy(copy.deepcopy(plain), MemoryPolicy(recompute=True))  # dropout sits inside recomputed stages
    return plain, twin


@pytest.mark.parametrize("build", [bayesian_segnet, bayesian_basic])
def test_recomputed_stages_replay_the_same_dropout_masks(build):
    plain, ckpt = _pair(build)
    assert torch.equal(_step(plain), _step(ckpt))
    for (n, p1), p2 in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.equal(p1.grad, p2.grad), n
    for (n, b1), b2 in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(b1, b2), n


def test_without_rng_replay_the_recomputed_gradients_would_differ(monkeypatch):
    """The test above is sensitive: recomputing with fresh masks changes the gradients."""
    monkeypatch.setattr(recompute, "checkpoint", functools.partial(torch_checkpoint, preserve_rng_state=False))
    plain, ckpt = _pair(bayesian_segnet)
    assert torch.equal(_step(plain), _step(ckpt))  # the forward is the same
    assert any(not torch.equal(p1.grad, p2.grad) for p1, p2 in zip(plain.parameters(), ckpt.parameters()))
