"""Initialisation: torchvision's default (true fan-out for both conv kinds) and ``init="paper"``, the
Caffe fillers of the original prototxts (msra = N(0, 2/fan_in) for SegNet, gaussian 0.01 for
DeconvNet's deconvolutions and score, BN shift 0.001 / 0 as each prototxt says)."""
import math

import pytest
import torch
import torchvision
from torch import nn

from segdeconv.errors import ConfigError
from segdeconv.models import DeconvNet, SegNet, VGGEncoder, segnet_basic
from segdeconv.models.initialization import init_weights, true_fans

BIG = 20_000  # weights per layer for a std estimate within ~1 % (5 % tolerance below)


def convs(module):
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def bns(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def assert_std(layer, expected):
    if layer.weight.numel() >= BIG:
        got = layer.weight.std().item()
        assert abs(got / expected - 1) < 0.05, (layer, got, expected)


def assert_zero_biases_and_bn(module, shift):
    for c in convs(module):
        assert torch.equal(c.bias, torch.zeros_like(c.bias)), c
    for b in bns(module):
        assert torch.equal(b.weight, torch.ones_like(b.weight))
        assert torch.allclose(b.bias, torch.full_like(b.bias, shift), rtol=0, atol=1e-9), (b, b.bias[:3])


def test_conv_and_transposed_conv_get_the_same_default_scale():
    """torch's ``kaiming_normal_(mode="fan_out")`` reads a ConvTranspose2d weight (in, out, k, k) as
    (out, in, k, k): its "fan_out" is the real fan-in. ``init_weights`` uses the real fan-out for both."""
    torch.manual_seed(0)
    conv, deconv = nn.Conv2d(256, 64, 3), nn.ConvTranspose2d(256, 64, 3)
    init_weights(conv), init_weights(deconv)
    assert true_fans(conv) == true_fans(deconv) == (256 * 9, 64 * 9)
    for layer in (conv, deconv):
        assert_std(layer, math.sqrt(2 / (64 * 9)))
    nn.init.kaiming_normal_(deconv.weight, mode="fan_out", nonlinearity="relu")  # the old default
    assert_std(deconv, math.sqrt(2 / (256 * 9)))  # half the scale: the mistake this fixes


def test_default_init_is_unchanged_for_convolutions():
    torch.manual_seed(0)
    m = SegNet(11, VGGEncoder(width=0.25))
    for c in convs(m):
        assert_std(c, math.sqrt(2 / (c.out_channels * c.kernel_size[0] ** 2)))
    assert_zero_biases_and_bn(m, shift=0.0)


@pytest.mark.parametrize("build,shift", [
    (lambda: SegNet(11, VGGEncoder(width=0.25), init="paper"), 1e-3),  # segnet_train.prototxt
    (lambda: segnet_basic(11, init="paper"), 1e-3),  # segnet_basic_train.prototxt
    (lambda: SegNet(11, VGGEncoder(width=0.25), dropout=0.5, init="paper"), 0.0),  # bayesian_segnet_train
    (lambda: segnet_basic(11, dropout=0.5, init="paper"), 1e-3),  # bayesian_segnet_basic_train
    (lambda: SegNet(11, VGGEncoder(width=0.25), decoder="transposed", init="paper"), 1e-3),
])
def test_segnet_paper_init_is_msra_fan_in(build, shift):
    torch.manual_seed(0)
    m = build()
    for c in convs(m):  # msra: std = sqrt(2 / (C_in · k²)), Caffe's count / num
        assert_std(c, math.sqrt(2 / (c.in_channels * c.kernel_size[0] ** 2)))
    assert_zero_biases_and_bn(m, shift)


def test_deconvnet_paper_init_is_gaussian_001_with_bn_shift_0001():
    torch.manual_seed(0)
    m = DeconvNet(21, VGGEncoder(width=0.25), init="paper")
    for c in convs(m.fc6_deconv) + convs(m.decoder) + [m.classifier]:
        assert_std(c, 0.01)
    assert m.fc6_deconv[0].weight.numel() >= BIG and m.classifier.weight.std() < 0.02
    for c in convs(m.encoder) + convs(m.fc6) + convs(m.fc7):  # no filler in the prototxt: VGG16's
        assert_std(c, math.sqrt(2 / true_fans(c)[1]))
    assert_zero_biases_and_bn(m, shift=1e-3)


def test_paper_init_keeps_pretrained_encoder_weights(tmp_path):
    torch.manual_seed(1)
    src = VGGEncoder()
    for b in bns(src):  # BN values the paper init would overwrite
        nn.init.uniform_(b.bias)
    path = tmp_path / "vgg16_bn.pth"
    torch.save({f"features.{k}": v for k, v in src.features.state_dict().items()}, path)
    m = SegNet(11, VGGEncoder(weights=path), init="paper")
    for k, v in src.features.state_dict().items():
        assert torch.equal(m.encoder.features.state_dict()[k], v), k
    assert_zero_biases_and_bn(m.decoder, shift=1e-3)


def _plain_vgg11(path):
    """torchvision's plain ``vgg11().features`` keys (conv, ReLU, …: no BN), random values."""
    torch.manual_seed(2)
    with torch.device("meta"):
        keys = torchvision.models.vgg11().features.state_dict()
    torch.save({f"features.{k}": torch.randn(v.shape) for k, v in keys.items()}, path)
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("build", [
    lambda p: SegNet(11, VGGEncoder("vgg11", weights=p), init="paper"),  # segnet_train.prototxt: bnN_M shift 0.001
    lambda p: DeconvNet(21, VGGEncoder("vgg11", weights=p), fc_channels=64, init="paper"),  # stage_1: 0.001
])
def test_paper_init_gives_fresh_encoder_bn_the_prototxt_shift(tmp_path, build):
    """SegNet and DeconvNet start from VGG16 without BN: the prototxts' BN fillers (scale 1, shift 0.001)
    initialise the encoder's BN, the convs are the file's."""
    state = _plain_vgg11(tmp_path / "vgg11.pth")
    m = build(tmp_path / "vgg11.pth")
    assert not m.encoder.pretrained_bn
    assert torch.equal(m.encoder.features[0].weight, state["features.0.weight"])
    assert_zero_biases_and_bn(nn.ModuleList(bns(m.encoder)), shift=1e-3)


def test_unknown_init_is_a_config_error():
    with pytest.raises(ConfigError, match="model.init='caffe' is unknown"):
        segnet_basic(5, width=0.25, init="caffe")
