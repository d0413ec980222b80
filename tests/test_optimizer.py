"""The optimizer groups default to torch's fused step (issue #18 item 2): no gradient-sized temporary,
and the same update as the foreach step to float rounding."""
import pytest
import torch
from conftest import compose_cfg
from hydra.utils import instantiate
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class NewTensorBytes(TorchDispatchMode):
    """Bytes of the tensors ops create (outputs that are none of their inputs), while active."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        self.bytes += sum(t.numel() * t.element_size() for t in tree_leaves(out)
                          if isinstance(t, torch.Tensor) and id(t) not in inputs and t.numel() > 1)
        return out


def _optimizer(group: str, params, **override):
    cfg = compose_cfg([f"optimizer={group}", "output_dir=/tmp/x"])
    return instantiate(cfg.optimizer, **override)(params)


@pytest.mark.parametrize("group", ["sgd", "adamw"])
def test_optimizer_groups_are_fused_and_step_without_a_gradient_sized_temporary(group):
    params = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(4)]
    grad_bytes = sum(p.numel() * 4 for p in params)
    made = {}
    for fused in (True, False):
        opt = _optimizer(group, params) if fused else _optimizer(group, params, fused=None, foreach=True)
        assert opt.param_groups[0]["fused"] is (True if fused else None)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()  # creates the state
        with NewTensorBytes() as m:
            opt.step()
        made[fused] = m.bytes
    assert made[False] >= grad_bytes  # foreach: one gradient-sized list (SGD's weight decay, AdamW's sqrt(v))
    assert made[True] == 0


@pytest.mark.parametrize("group", ["sgd", "adamw"])
def test_fused_step_makes_the_foreach_update_to_float_rounding(group):
    """Same gradients in, same weights out (to rounding: the fused kernel orders the multiply-adds
    differently). Not bit for bit, so a recipe that must reproduce its weights pins ``fused``."""
    torch.manual_seed(0)
    start = [torch.randn(33, 17), torch.randn(64), torch.randn(8, 4, 3, 3)]
    grads = [[torch.randn_like(t) for t in start] for _ in range(5)]
    out = {}
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = _optimizer(group, params) if fused else _optimizer(group, params, fused=None, foreach=True)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            opt.step()
        out[fused] = params
    assert all((p - t).abs().max() > 1e-3 for p, t in zip(out[True], start))  # the steps moved every tensor
    for a, b in zip(out[True], out[False]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_shipped_camvid_recipe_pins_the_step_its_weights_were_trained_with():
    cfg = compose_cfg(["experiment=camvid_segnet_cpu", "output_dir=/tmp/x"])
    assert cfg.optimizer.fused is False
