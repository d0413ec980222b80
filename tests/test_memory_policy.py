"""Memory policies (segdeconv.models.memory) applied from outside: every policy trains bit for bit like the
plain graph, the models' forwards know nothing of them, and old ``checkpoint`` keys still load."""
from __future__ import annotations

import ast
import copy
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segdeconv.models import DeconvNet, SegNet, VGGEncoder, registry, segnet_basic
from segdeconv.models.memory import MemoryPolicy, apply_policy, policy_of, split_policy

REPO = Path(__file__).resolve().parents[1]
SIZES = {"segnet": (67, 83), "segnet_basic": (45, 61), "deconvnet": (197, 201)}  # odd: ceil-mode windows
POLICIES = {
    "lean": MemoryPolicy(lean=True),
    "recompute": MemoryPolicy(lean=False, recompute=True),
    "recompute 2 + lean": MemoryPolicy(lean=True, recompute=2),
    "recompute_fc + lean": MemoryPolicy(lean=True, recompute_fc=True),
}


def build(kind: str, compact: bool = True) -> nn.Module:
    torch.manual_seed(0)
    if kind == "segnet_basic":
        return segnet_basic(5, width=0.25, compact_switches=compact)
    if kind == "deconvnet":
        return DeconvNet(5, VGGEncoder(width=0.0625, compact_switches=compact), fc_channels=64)
    return SegNet(5, VGGEncoder(width=0.125, compact_switches=compact))


def step(model: nn.Module, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss) of one training step on fixed data; gradients land in ``.grad``."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, *SIZES[kind], generator=g)
    y = torch.randint(0, 5, (2, *SIZES[kind]), generator=g)
    logits = model.train()(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return logits.detach(), loss.detach()


def assert_bit_identical(a: nn.Module, b: nn.Module, kind: str) -> None:
    (ya, la), (yb, lb) = step(a, kind), step(b, kind)
    assert torch.equal(ya, yb) and torch.equal(la, lb)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad), n
    for (n, u), v in zip(a.named_buffers(), b.buffers()):
        assert torch.equal(u, v), n


@pytest.mark.parametrize("kind", ["segnet", "segnet_basic", "deconvnet"])
@pytest.mark.parametrize("name", list(POLICIES))
def test_each_policy_gives_the_plain_losses_and_gradients_bit_for_bit(kind, name):
    plain = build(kind)
    assert_bit_identical(plain, apply_policy(copy.deepcopy(plain), POLICIES[name]), kind)


@pytest.mark.parametrize("kind", ["segnet", "segnet_basic", "deconvnet"])
def test_compact_switches_give_the_int64_losses_and_gradients_bit_for_bit(kind):
    int64, compact = build(kind, compact=False), build(kind, compact=True)
    compact.load_state_dict(int64.state_dict())
    assert_bit_identical(int64, compact, kind)


def test_the_paper_modules_know_no_memory_policy():
    """segnet.py, deconvnet.py, vgg.py and decoder.py import nothing from the memory room."""
    for name in ("segnet", "deconvnet", "vgg", "decoder"):
        tree = ast.parse((REPO / "segdeconv" / "models" / f"{name}.py").read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if "memory" in m or m.endswith(("lean", "recompute"))], name


def test_a_policy_adds_nothing_to_the_module_tree_or_state_dict_and_survives_deepcopy():
    plain = build("segnet")
    lean = apply_policy(copy.deepcopy(plain), MemoryPolicy(recompute=1))
    assert [n for n, _ in plain.named_modules()] == [n for n, _ in lean.named_modules()]
    assert plain.state_dict().keys() == lean.state_dict().keys()
    twin = copy.deepcopy(lean)
    assert policy_of(twin) == policy_of(twin.encoder) == MemoryPolicy(recompute=1)
    assert twin.forward.__self__ is twin and twin.encoder.stage_modules.__self__ is twin.encoder
    assert_bit_identical(plain, twin, "segnet")


def test_the_plain_policy_restores_the_class_methods():
    model = apply_policy(build("deconvnet"), MemoryPolicy(recompute=True))
    apply_policy(model, MemoryPolicy(lean=False))
    for m in (model, model.encoder, model.decoder):
        assert not {"forward", "stage_modules", "fc_stage"} & vars(m).keys()
    assert policy_of(model) == MemoryPolicy(lean=False) and not model.lean


def test_registry_splits_the_memory_keys_from_the_constructor_keys():
    arch = {"name": "segnet_basic", "num_classes": 3, "width": 0.25, "lean": False, "recompute": 2}
    model = registry.build(arch)
    assert policy_of(model) == MemoryPolicy(lean=False, recompute=2) and not model.lean
    assert split_policy({"recompute_fc": True, "fc_channels": 8}) == (MemoryPolicy(recompute_fc=True), {"fc_channels": 8})


def test_old_checkpoint_keys_work_with_one_deprecation_line(caplog):
    with caplog.at_level(logging.WARNING, logger="segdeconv"):
        policy, rest = split_policy({"checkpoint": 3, "checkpoint_fc": None, "lean": True, "dropout": 0.5})
    assert (policy, rest) == (MemoryPolicy(recompute=3), {"dropout": 0.5})
    assert [r.getMessage() for r in caplog.records] == [
        "model.checkpoint is deprecated (it will be refused in the next release): use model.recompute=3"]
    from segdeconv.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.checkpoint=1 \(the old name of model.recompute\) disagrees"):
        split_policy({"checkpoint": 1, "recompute": 2})


def test_checkpoints_with_the_old_keys_load_through_the_migration(caplog):
    from segdeconv.engine.checkpoint import FORMAT, upgrade

    ckpt = {"format": FORMAT, "arch": {"name": "segnet", "num_classes": 3, "checkpoint": 2, "lean": True},
            "config": {"model": {"name": "segnet", "checkpoint": 2, "checkpoint_fc": None}}}
    up = upgrade(ckpt)
    assert up["arch"] == {"name": "segnet", "num_classes": 3, "recompute": 2, "lean": True}
    assert up["config"]["model"] == {"name": "segnet", "recompute": 2}
    from segdeconv import load_trained

    with caplog.at_level(logging.WARNING, logger="segdeconv"):
        model = load_trained(REPO / "checkpoints" / "camvid_segnet_cpu.pt").model  # format 1: checkpoint=False
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert policy_of(model) == MemoryPolicy(lean=False)  # inference: the plain graph (torch.export sees forward(x))
    assert model.forward.__func__ is type(model).forward
