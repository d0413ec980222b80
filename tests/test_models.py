"""Model shapes, parameter counts (the papers'), gradients, input checks, local VGG weights."""
import pytest
import torch
import torchvision

from segdeconv.errors import CheckpointError, UserError
from segdeconv.models import DeconvNet, SegNet, VGGEncoder, segnet_basic


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_papers():
    assert abs(n_params(DeconvNet(21)) / 251.8e6 - 1) < 0.01
    assert abs(n_params(SegNet(11)) / 29.45e6 - 1) < 0.01


@pytest.mark.parametrize("size", [(225, 301), (360, 480), (33, 47)])
@pytest.mark.parametrize("ceil", [True, False])
def test_segnet_logits_at_input_size(size, ceil):
    m = SegNet(11, VGGEncoder(width=0.125, ceil_mode=ceil)).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, *size)).shape == (2, 11, *size)


def test_full_segnet_and_basic_at_360x480():
    x = torch.randn(1, 3, 360, 480)
    with torch.no_grad():
        assert SegNet(11).eval()(x).shape == (1, 11, 360, 480)
        assert segnet_basic(11).eval()(x).shape == (1, 11, 360, 480)


def test_deconvnet_at_odd_size_and_min_size_error():
    m = DeconvNet(21, VGGEncoder(width=0.125), fc_channels=4096).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 225, 301)).shape == (1, 21, 225, 301)
        with pytest.raises(UserError, match="too small"):
            m(torch.randn(1, 3, 100, 300))


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(UserError, match=r"expected \(B, 3, H, W\)"):
        SegNet(3, VGGEncoder(width=0.125))(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize("build", [
    lambda: SegNet(5, VGGEncoder(width=0.125)),
    lambda: segnet_basic(5, width=0.25),
    lambda: DeconvNet(5, VGGEncoder(width=0.0625), fc_channels=4096),
    lambda: SegNet(5, VGGEncoder(width=0.125), decoder="transposed"),
])
def test_every_parameter_gets_a_finite_gradient(build):
    torch.manual_seed(0)
    m = build().train()
    x = torch.randn(2, 3, 224, 224)
    y = torch.randint(0, 5, (2, 224, 224))
    torch.nn.functional.cross_entropy(m(x), y).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_encoder_names_and_layout_match_torchvision(tmp_path):
    tv = torchvision.models.vgg16_bn(weights=None)
    path = tmp_path / "vgg16_bn.pth"
    torch.save(tv.state_dict(), path)
    enc = VGGEncoder(weights=path)
    assert enc.features.state_dict().keys() == tv.features.state_dict().keys()
    for k, v in tv.features.state_dict().items():
        assert torch.equal(enc.features.state_dict()[k], v), k
    d = DeconvNet(21, VGGEncoder(weights=path))  # fc6/fc7 come from classifier.0/3
    assert torch.equal(d.fc6[0].weight.flatten(1), tv.classifier[0].weight)
    assert list(enc.conv_layers())[:3] == ["conv1_1", "conv1_2", "conv2_1"]


def test_missing_or_mismatched_weights_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="file not found. Nothing is downloaded"):
        VGGEncoder(weights=tmp_path / "nope.pth")
    plain = tmp_path / "vgg16.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), plain)  # no BN
    with pytest.raises(CheckpointError, match="does not fit encoder"):
        VGGEncoder(batch_norm=True, weights=plain)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        VGGEncoder(weights=junk)
