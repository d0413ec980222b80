"""Activation recomputation (``model.recompute=true``): same training step, less saved memory."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from segdeconv.models import DeconvNet, SegNet, VGGEncoder, segnet_basic
from segdeconv.models.memory import MemoryPolicy, apply_policy, policy_of, recompute

SIZE = (197, 203)  # odd sizes (ceil-mode pools), large enough for DeconvNet's 7×7 fc6


def pair(kind: str, setting=True) -> tuple[nn.Module, nn.Module]:
    """(plain, recomputed) models with identical weights (plain: no lean graph either)."""
    torch.manual_seed(0)
    if kind == "segnet_basic":
        plain = segnet_basic(5, width=0.25, compact_switches=True)
    elif kind == "segnet":
        plain = SegNet(5, VGGEncoder(width=0.125, compact_switches=True))
    else:
        plain = DeconvNet(5, VGGEncoder(width=0.125, compact_switches=True), fc_channels=64)
    twin = apply_policy(copy.deepcopy(plain), MemoryPolicy(lean=False, recompute=setting))
    return plain, twin


def train_step(model: nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    model.train()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = model(x)
    y.float().square().mean().backward()
    return y.detach()


@pytest.mark.parametrize("kind,setting", [("segnet", True), ("segnet", 2), ("deconvnet", True),
                                          ("deconvnet", 1), ("segnet_basic", True)])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.slow
def test_checkpointed_step_is_identical(kind, setting, bf16):
    """Outputs, every gradient and every BatchNorm buffer match the plain model bit for bit."""
    plain, ckpt = pair(kind, setting)
    x = torch.randn(2, 3, *SIZE)
    y1, y2 = train_step(plain, x, bf16), train_step(ckpt, x, bf16)
    assert torch.equal(y1, y2)
    for (n, p1), p2 in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.equal(p1.grad, p2.grad), n
    for (n, b1), b2 in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(b1, b2), n


def test_bn_statistics_would_be_updated_twice_without_the_guard(monkeypatch):
    """The guard is what keeps BN running stats right: without it the recomputation moves them again."""
    monkeypatch.setattr(recompute, "kept_bn_stats", lambda module: contextlib.nullcontext())
    plain, ckpt = pair("segnet")
    x = torch.randn(2, 3, *SIZE)
    train_step(plain, x, False), train_step(ckpt, x, False)
    means = [(b1, b2) for (n, b1), b2 in zip(plain.named_buffers(), ckpt.buffers()) if n.endswith("running_mean")]
    assert any(not torch.equal(b1, b2) for b1, b2 in means)


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after the forward pass (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train()(x).sum().backward()
    return sum(seen.values())


def test_checkpointing_keeps_far_fewer_activations():
    """All stages: a small fraction of the activations; the 2 shallowest stages: already most of the saving."""
    plain, ckpt = pair("segnet")
    _, shallow = pair("segnet", 2)
    x = torch.randn(2, 3, 96, 128)
    weights = sum(p.numel() * p.element_size() for p in plain.parameters())
    full, low, mid = (saved_bytes(m, x) - weights for m in (plain, ckpt, shallow))
    assert low < 0.35 * full, (low, full)
    assert low < mid < 0.6 * full, (mid, full)


@pytest.mark.parametrize("bad", [-1, 1.5, "all"])
def test_bad_setting_is_a_config_error(bad):
    from segdeconv.errors import ConfigError

    with pytest.raises(ConfigError, match="model.recompute"):
        MemoryPolicy(recompute=bad)


def test_no_recomputation_without_autograd(monkeypatch):
    """Inference (no_grad / inference_mode) never goes through torch.utils.checkpoint."""
    monkeypatch.setattr(recompute, "checkpoint", lambda *a, **k: pytest.fail("checkpoint called"))
    _, ckpt = pair("deconvnet")
    with torch.inference_mode():
        assert ckpt.eval()(torch.randn(1, 3, *SIZE)).shape == (1, 5, *SIZE)


def test_config_flag_builds_a_recomputed_model(caplog):
    from conftest import compose_cfg

    from segdeconv.config import model_from_config

    for model in ("segnet", "segnet_basic", "deconvnet"):
        for key in ("recompute", "checkpoint"):  # checkpoint: the old name, for one release
            caplog.clear()
            cfg = compose_cfg([f"model={model}", f"model.{key}=true", "model.num_classes=3"])
            m = model_from_config(cfg.model)
            assert policy_of(m).recompute is True and policy_of(m.encoder) == policy_of(m), model
            warned = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
            assert warned == ([] if key == "recompute" else [
                "model.checkpoint is deprecated (it will be refused in the next release): use model.recompute=True"])
