"""Class-region evidence through the whole network and occlusion maps (Z&F §2.1, §4.2): parity with captum."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from infer_helpers import not_inplace
from torch import nn

from segdeconv.errors import ConfigError
from segdeconv.models import DeconvNet, SegNet, VGGEncoder
from segdeconv.models.memory import MemoryPolicy, apply_policy
from segdeconv.models.segnet import segnet_basic
from segdeconv.visualize import class_evidence, heatmap, occlusion_map
from segdeconv.visualize.evidence import region_mask
from segdeconv.visualize.occlusion import mean_probability, window_starts

captum = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
REL = 1e-5  # of the reference's largest value (measured: 0, the same autograd ops)
CAPTUM = {"deconvnet": "Deconvolution", "guided_backprop": "GuidedBackprop", "gradient": "Saliency"}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (so BN matters), eval mode, the lean graph on (as
    the registry builds a model: evidence must turn it off and back on)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.7 + 0.3)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
    return apply_policy(model, MemoryPolicy()).eval()


def build(name: str) -> tuple[nn.Module, tuple[int, int]]:
    torch.manual_seed(0)
    if name == "segnet":  # odd sizes: ceil-mode pools and unpooling back to them
        return randomize_bn(SegNet(5, encoder=VGGEncoder("vgg11", width=0.125, num_stages=3))), (45, 61)
    if name == "segnet_compact":
        enc = VGGEncoder("vgg11", width=0.125, num_stages=3, compact_switches=True)
        return randomize_bn(SegNet(5, encoder=enc)), (45, 61)
    if name == "segnet_basic":
        return randomize_bn(segnet_basic(5, width=0.125, input_lrn=True)), (37, 53)
    # DeconvNet: 5 pools, fc6 needs a 7×7 pool5 map: ≥ 193 px with ceil-mode pools; fc 128 × 1/16 = 8 channels
    return randomize_bn(DeconvNet(5, encoder=VGGEncoder("vgg16", width=0.0625), fc_channels=128)), (197, 205)


class RegionScore(nn.Module):
    """captum's target: the sum of class ``c``'s logits over ``mask``, per batch item."""

    def __init__(self, net: nn.Module, c: int, mask: torch.Tensor) -> None:
        super().__init__()
        self.net, self.c, self.mask = net, c, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.c][:, self.mask].sum(-1)


def captum_evidence(net: nn.Module, x: torch.Tensor, c: int, mask: torch.Tensor, method: str) -> torch.Tensor:
    attr = getattr(captum, CAPTUM[method])(RegionScore(not_inplace(net), c, mask).eval())
    kwargs = {"abs": False} if method == "gradient" else {}
    return attr.attribute(x[None].clone().requires_grad_(), **kwargs)[0]


def majority_class(net: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    with torch.no_grad():
        pred = net(x[None])[0].argmax(0)
    return int(pred.flatten().mode().values), pred


@pytest.mark.parametrize("name", ["segnet", "segnet_compact", "segnet_basic", "deconvnet"])
def test_class_evidence_matches_captum(name):
    net, size = build(name)
    x = torch.randn(3, *size, generator=torch.Generator().manual_seed(1))
    c, pred = majority_class(net, x)
    for region in (None, (3, 5, 20, 30), (10, 12)):
        mask = region_mask(region, size, pred, c)
        for method in CAPTUM:
            got = class_evidence(net, x, c, region, method)
            want = captum_evidence(net, x, c, mask, method)
            assert got.shape == want.shape == x.shape
            assert want.abs().max() > 0
            assert (got - want).abs().max() <= REL * want.abs().max(), (region, method)
    assert net.lean and not net.training


def test_methods_differ_and_compact_switches_agree():
    net, size = build("segnet")
    compact, _ = build("segnet_compact")
    compact.load_state_dict(net.state_dict())
    x = torch.randn(3, *size)
    maps = {m: class_evidence(net, x, 2, (5, 5, 30, 40), m) for m in CAPTUM}
    assert not torch.allclose(maps["deconvnet"], maps["gradient"])
    assert not torch.allclose(maps["deconvnet"], maps["guided_backprop"])
    for method, m in maps.items():
        assert torch.allclose(class_evidence(compact, x, 2, (5, 5, 30, 40), method), m, atol=1e-6)


def test_gradient_satisfies_euler_on_a_homogeneous_network():
    """No biases and BN without shift: logits are positively homogeneous, so Σ_R logits_c = Σ x · ∂/∂x."""
    net, size = build("segnet")
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
            m.bias.data.zero_()
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.zero_()
            m.bias.data.zero_()
    x = torch.randn(3, *size)
    with torch.no_grad():
        target = float(net(x[None])[0, 1, 4:20, 6:31].sum())
    grad = class_evidence(net, x, 1, (4, 6, 20, 31), "gradient")
    assert float((grad * x).sum()) == pytest.approx(target, rel=1e-4)


def test_model_state_is_restored_even_after_an_error():
    net, size = build("segnet")
    net.train()
    with pytest.raises(ConfigError, match="outside the 45x61 image"):
        class_evidence(net, torch.randn(3, *size), 0, (0, 0, 46, 10), "deconvnet")
    class_evidence(net, torch.randn(3, *size), 0, (0, 0, 5, 5), "guided_backprop")
    assert net.training and net.lean and net.encoder.lean and net.decoder.lean
    assert all("forward" not in m.__dict__ for m in net.modules() if isinstance(m, nn.ReLU))
    with torch.inference_mode():  # the caller's inference mode does not stop the backward pass
        assert class_evidence(net.eval(), torch.randn(3, *size), 0, (3, 3)).abs().sum() > 0


def test_class_names_and_clear_errors():
    net, size = build("segnet")
    x = torch.randn(3, *size)
    names = ["sky", "road", "car", "tree", "person"]
    assert torch.equal(class_evidence(net, x, "Car", (1, 1, 9, 9), class_names=names),
                       class_evidence(net, x, 2, (1, 1, 9, 9)))
    cases = [
        (dict(class_index=5), r"class index 5 is out of range; use 0..4"),
        (dict(class_index="bus", class_names=names), r"class 'bus' is unknown; use one of sky, road"),
        (dict(class_index="car"), r"class 'car' is a name but no class_names were given"),
        (dict(class_index=0, region=(5, 5, 5, 9)), r"region=\(5, 5, 5, 9\) is empty or outside"),
        (dict(class_index=0, region=(45, 3)), r"region=\(45, 3\) is empty or outside the 45x61 image"),
        (dict(class_index=0, region=(1, 2, 3)), r"region=\(1, 2, 3\) must be \(y, x\), \(y0, x0, y1, x1\)"),
        (dict(class_index=0, region=torch.zeros(45, 61, dtype=torch.bool)), "region mask is empty"),
        (dict(class_index=0, method="lrp"), "method='lrp' is unknown"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            class_evidence(net, x, **kwargs)
    net.classifier.bias.data[4] = -1e4  # class 4 is predicted nowhere
    with pytest.raises(ConfigError, match="class 4 is predicted nowhere in this image; pass region="):
        class_evidence(net, x, 4)


@pytest.mark.parametrize("region, patch, stride, fill", [(None, 8, 4, 0.0), ((3, 5, 20, 30), 7, 3, 0.5),
                                                         ((10, 12), 5, 5, -1.0)])
def test_occlusion_matches_captum(region, patch, stride, fill):
    net, size = build("segnet")
    x = torch.randn(3, *size, generator=torch.Generator().manual_seed(2))
    c, pred = majority_class(net, x)
    mask = region_mask(region, size, pred, c)
    got = occlusion_map(net, x, c, region, patch=patch, stride=stride, batch_size=7, fill=fill)
    with torch.no_grad():
        want = captum.Occlusion(lambda inp: mean_probability(net(inp), c, mask)).attribute(
            x[None], sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride), baselines=fill,
            perturbations_per_eval=16)[0]
    assert got.shape == size and want.abs().max() > 0
    assert (got - want[0]).abs().max() <= 1e-6


def test_occlusion_by_one_image_sized_patch_is_one_drop_everywhere():
    net, _ = build("segnet_basic")
    x = torch.randn(3, 37, 37)
    mask = region_mask((2, 3, 30, 20), (37, 37), torch.zeros(37, 37), 1)
    with torch.no_grad():
        drop = mean_probability(net(x[None]), 1, mask) - mean_probability(net(torch.full((1, 3, 37, 37), 0.25)), 1, mask)
    got = occlusion_map(net, x, 1, (2, 3, 30, 20), patch=37, stride=5, fill=0.25)
    assert torch.allclose(got, torch.full((37, 37), float(drop)), atol=1e-7)


def test_occlusion_errors_and_windows():
    net, size = build("segnet")
    x = torch.randn(3, *size)
    assert window_starts(10, 4, 4) == [0, 4, 8] and window_starts(10, 10, 3) == [0]
    for kwargs, message in [(dict(patch=0), r"patch=0 must be an integer >= 1"),
                            (dict(patch=50), r"patch=50 px is larger than the 45x61 image; use patch <= 45"),
                            (dict(patch=4, stride=5), r"stride=5 is larger than patch=4"),
                            (dict(batch_size=0), r"batch_size=0 must be an integer >= 1"),
                            (dict(class_index=7), r"class index 7 is out of range")]:
        with pytest.raises(ConfigError, match=message):
            occlusion_map(net, x, **{"class_index": 0, "region": (0, 0, 4, 4), **kwargs})


def test_heatmap_rendering():
    m = torch.zeros(6, 8)
    m[1, 1], m[2, 2] = 1.0, -1.0
    rgb = heatmap(m)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[1, 1].tolist() == [255, 0, 0] and rgb[2, 2].tolist() == [0, 0, 255]
    ev = torch.zeros(3, 6, 8)
    ev[0, 3, 3] = 2.0
    rgb = heatmap(ev, image=torch.ones(3, 6, 8), alpha=0.5)
    assert rgb[0, 0].tolist() == [191, 191, 191] and rgb[3, 3].tolist() == [255, 191, 191]
    with pytest.raises(ValueError, match=r"heatmap expects a \(H, W\) or \(3, H, W\) map"):
        heatmap(torch.zeros(2, 3, 4))


def test_occlusion_at_the_training_size_is_the_small_map_upsampled():
    """``input_size``: image resized, patch/stride/region scaled, map upsampled (the fast path)."""
    net, _ = build("segnet")
    x = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(3))
    assert torch.equal(occlusion_map(net, x, 1, (8, 8, 40, 60), 8, 4, input_size=(64, 96)),
                       occlusion_map(net, x, 1, (8, 8, 40, 60), 8, 4))
    got = occlusion_map(net, x, 1, (8, 8, 40, 60), patch=8, stride=4, batch_size=64, input_size=(32, 48))
    small = torch.nn.functional.interpolate(x[None], size=(32, 48), mode="bilinear", align_corners=False)[0]
    want = occlusion_map(net, small, 1, (4, 4, 20, 30), patch=4, stride=2)
    up = torch.nn.functional.interpolate(want[None, None], size=(64, 96), mode="bilinear", align_corners=False)[0, 0]
    assert got.shape == (64, 96) and torch.allclose(got, up, atol=1e-7)
    mask = torch.zeros(64, 96, dtype=torch.bool)
    mask[8:40, 8:60] = True  # a bool mask scales to the same box
    assert torch.allclose(occlusion_map(net, x, 1, mask, 8, 4, input_size=(32, 48)), got, atol=1e-7)
    with pytest.raises(ConfigError, match=r"input_size=\(0, 48\) must be two sizes >= 1"):
        occlusion_map(net, x, 1, (1, 1), 8, 4, input_size=(0, 48))
