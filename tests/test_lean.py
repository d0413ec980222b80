"""``model.lean`` (segdeconv.models.memory.lean): same training step as the plain graph, far fewer saved maps."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from segdeconv.models import DeconvNet, SegNet, VGGEncoder, segnet_basic
from segdeconv.models.memory import MemoryPolicy, apply_policy, lean

SIZE = (197, 203)  # odd sizes (ceil-mode pools, partial windows), large enough for DeconvNet's fc6
REPO = Path(__file__).resolve().parents[1]


def set_lean(model: nn.Module, on: bool) -> nn.Module:
    return apply_policy(model, MemoryPolicy(lean=on))


def build(kind: str, compact: bool = True) -> nn.Module:
    torch.manual_seed(0)
    enc = VGGEncoder(width=0.125, compact_switches=compact)
    if kind == "segnet_basic":
        return segnet_basic(5, width=0.25, compact_switches=compact)
    if kind == "bayesian":
        return SegNet(5, enc, dropout=0.5)
    if kind == "deconvnet":
        return DeconvNet(5, enc, fc_channels=64)
    return SegNet(5, enc)


def pair(kind: str, compact: bool = True, channels_last: bool = False) -> tuple[nn.Module, nn.Module]:
    """(plain, lean) models with identical weights."""
    plain = set_lean(build(kind, compact), False)
    twin = set_lean(copy.deepcopy(plain), True)
    if channels_last:
        plain, twin = (m.to(memory_format=torch.channels_last) for m in (plain, twin))
    return plain, twin


def train_step(model: nn.Module, x: torch.Tensor, bf16: bool, seed: int = 1) -> torch.Tensor:
    model.train()
    torch.manual_seed(seed)  # the same dropout masks on both sides
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = model(x)
    y.float().square().mean().backward()
    return y.detach()


def assert_same_step(plain: nn.Module, twin: nn.Module, x: torch.Tensor, bf16: bool) -> None:
    assert torch.equal(train_step(plain, x, bf16), train_step(twin, x, bf16))
    for (n, p1), p2 in zip(plain.named_parameters(), twin.parameters()):
        assert torch.equal(p1.grad, p2.grad), n
    for (n, b1), b2 in zip(plain.named_buffers(), twin.buffers()):
        assert torch.equal(b1, b2), n


def count_rebuilds(monkeypatch) -> list[int]:
    calls = [0]
    original = lean._Recipe.unpack

    def counted(self):
        calls[0] += 1
        return original(self)

    monkeypatch.setattr(lean._Recipe, "unpack", counted)
    return calls


CASES = [("segnet", True, False, False), ("segnet", True, True, False), ("segnet", True, False, True),
         ("segnet", True, True, True), ("segnet", False, False, False), ("segnet", False, True, True),
         ("deconvnet", True, False, False), ("deconvnet", True, True, True), ("segnet_basic", True, False, False),
         ("segnet_basic", True, True, True), ("bayesian", True, False, False), ("bayesian", True, True, True)]


@pytest.mark.parametrize("kind,compact,bf16,channels_last", CASES)
@pytest.mark.slow
def test_lean_step_is_bit_identical_to_the_plain_graph(kind, compact, bf16, channels_last, monkeypatch):
    """Outputs, every gradient and every BatchNorm buffer equal the plain graph's, with tensors rebuilt."""
    rebuilds = count_rebuilds(monkeypatch)
    plain, twin = pair(kind, compact, channels_last)
    x = torch.randn(2, 3, *SIZE)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    assert_same_step(plain, twin, x, bf16)
    assert rebuilds[0] > 0


@pytest.mark.slow
def test_lean_is_bit_identical_with_two_threads_and_accumulated_micro_batches():
    """2 intra-op threads (channels_last BN statistics are reduced per thread) and 2 micro-batches
    accumulated into the same .grad."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        plain, twin = pair("segnet", channels_last=True)
        for seed in (3, 4):
            x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(seed))
            x = x.contiguous(memory_format=torch.channels_last)
            assert torch.equal(train_step(plain, x, True), train_step(twin, x, True))
        for (n, p1), p2 in zip(plain.named_parameters(), twin.parameters()):
            assert torch.equal(p1.grad, p2.grad), n
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("setting", [1, 3])
def test_lean_with_checkpointed_stages_is_bit_identical_to_the_plain_graph(setting):
    plain, twin = pair("segnet")
    apply_policy(twin, MemoryPolicy(lean=True, recompute=setting))
    assert_same_step(plain, twin, torch.randn(2, 3, *SIZE), False)


def kept_bytes(model: nn.Module, x: torch.Tensor, monkeypatch) -> int:
    """Bytes of the distinct storages autograd keeps after the forward pass, weights excluded (a
    recipe keeps its source). The plain graph is watched with hooks of our own, the lean one through
    its pack hook (outer hooks would turn it off)."""
    seen: dict[int, int] = {}
    original = lean._pack

    def record(out):
        root = out
        while isinstance(root, lean._Recipe):
            root = root.source
        seen[root.untyped_storage().data_ptr()] = root.untyped_storage().nbytes()
        return out

    if model.lean:
        monkeypatch.setattr(lean, "_pack", lambda t: record(original(t)))
        y = model.train()(x)
        monkeypatch.setattr(lean, "_pack", original)
    else:
        with torch.autograd.graph.saved_tensors_hooks(record, lambda t: t):
            y = model.train()(x)
    y.sum().backward()
    return sum(seen.values()) - sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("kind,size", [("segnet", (96, 128)), ("deconvnet", (224, 224))])
def test_lean_keeps_less_than_half_the_activations(kind, size, monkeypatch):
    plain, twin = pair(kind)
    x = torch.randn(2, 3, *size)
    full, kept = kept_bytes(plain, x, monkeypatch), kept_bytes(twin, x, monkeypatch)
    assert kept < 0.45 * full, (kept, full)


def test_module_tree_and_state_dict_do_not_depend_on_lean():
    plain, twin = pair("segnet")
    assert [(n, type(m)) for n, m in plain.named_modules()] == [(n, type(m)) for n, m in twin.named_modules()]
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in twin.state_dict().items()}


def test_shipped_checkpoint_loads_plain_and_trains_lean_like_the_plain_graph():
    """checkpoints/camvid_segnet_cpu.pt loads for inference on the plain graph (what torch.export and int8
    need); with lean switched on, eval outputs and a training step equal the plain graph's."""
    from segdeconv import load_trained

    path = REPO / "checkpoints" / "camvid_segnet_cpu.pt"
    plain = load_trained(path).model
    assert not (plain.lean or plain.encoder.lean or plain.decoder.lean)
    model = set_lean(copy.deepcopy(plain), True)
    assert model.lean and model.encoder.lean and model.decoder.lean
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain.eval()(x))
    assert_same_step(plain, model, x, False)


def test_inference_tags_nothing_and_rebuilds_nothing(monkeypatch):
    monkeypatch.setattr(lean, "_Recipe", lambda *a, **k: pytest.fail("recipe made without autograd"))
    _, twin = pair("segnet")
    with torch.inference_mode():
        assert twin.eval()(torch.randn(1, 3, 64, 80)).shape == (1, 5, 64, 80)
    with torch.no_grad():
        twin.train()(torch.randn(1, 3, 64, 80))


def test_outer_saved_tensor_hooks_turn_lean_off(monkeypatch):
    """The caller's own hooks (offloading, checkpointing) see every saved tensor; nothing is rebuilt."""
    rebuilds = count_rebuilds(monkeypatch)
    packed = []
    _, twin = pair("segnet")
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(1) or t, lambda t: t):
        y = twin.train()(torch.randn(1, 3, 64, 80))
    y.sum().backward()
    assert packed and rebuilds[0] == 0


def test_double_backward_is_refused_with_the_fix():
    _, twin = pair("segnet")
    x = torch.randn(1, 3, 64, 80, requires_grad=True)
    (g,) = torch.autograd.grad(twin.train()(x).square().sum(), x)  # first order: fine
    assert g.shape == x.shape
    with pytest.raises(RuntimeError, match="model.lean=false"):
        torch.autograd.grad(twin(x).square().sum(), x, create_graph=True)


def test_weights_changed_between_forward_and_backward_is_an_error():
    _, twin = pair("segnet")
    y = twin.train()(torch.randn(1, 3, 64, 80))
    with torch.no_grad():
        twin.encoder.features[1].weight.add_(1.0)  # bn1_1
    with pytest.raises(RuntimeError, match="modified in place between forward and backward"):
        y.sum().backward()


def test_workspace_reuses_a_storage_only_once_it_is_free():
    ws = lean.Workspace()
    like = torch.empty(0)
    a = ws.empty((4, 8, 16, 16), like)
    b = ws.empty((4, 8, 16, 16), like)
    assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
    ptr = a.untyped_storage().data_ptr()
    del a
    c = ws.empty((4, 8, 16, 15), like, torch.channels_last)  # a little smaller: fits in the freed one
    assert c.untyped_storage().data_ptr() == ptr and c.is_contiguous(memory_format=torch.channels_last)
    assert ws.empty((4, 8, 4, 4), like).untyped_storage().data_ptr() not in (ptr, b.untyped_storage().data_ptr())


@pytest.mark.parametrize("model", ["segnet", "segnet_basic", "deconvnet", "bayesian_segnet"])
@pytest.mark.slow
def test_config_builds_lean_models_by_default_and_model_lean_false_turns_it_off(model):
    from conftest import compose_cfg

    from segdeconv.config import model_from_config

    on = model_from_config(compose_cfg([f"model={model}", "model.num_classes=3"]).model)
    off = model_from_config(compose_cfg([f"model={model}", "model.num_classes=3", "model.lean=false"]).model)
    assert on.lean and on.encoder.lean and on.decoder.lean
    assert not (off.lean or off.encoder.lean or off.decoder.lean)
