"""Model shapes, parameter counts (the papers'), gradients, input checks, local VGG weights, input adapters."""
import numpy as np
import pytest
import torch
import torchvision

from segdeconv.data.base import to_tensors
from segdeconv.errors import CheckpointError, ConfigError, UserError
from segdeconv.models import DeconvNet, InputAdapter, SegNet, VGGEncoder, segnet_basic


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
    lambda: SegNet(5, VGGEncoder(width=0.125, num_stages=4)),
    lambda: SegNet(5, VGGEncoder(width=0.125), dropout=0.5, init="paper", input="caffe_bgr"),
    lambda: segnet_basic(5, width=0.25, dropout=0.5, init="paper", input="caffe_bgr", input_lrn=True),
    lambda: DeconvNet(5, VGGEncoder(width=0.0625), fc_channels=4096, init="paper", input="caffe_bgr_mean"),
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


@pytest.mark.slow
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
    with pytest.raises(CheckpointError, match="does not fit model.encoder.arch=vgg11"):
        VGGEncoder("vgg11", batch_norm=True, weights=plain)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        VGGEncoder(weights=junk)


@pytest.mark.slow
def test_num_stages_cuts_the_table_and_the_mirrored_decoder(tmp_path):
    """num_stages=4: four pools (output stride 16), decoder mirrors them; torchvision weights load for
    the kept layers (DeconvNet's fc6 only after pool5); an impossible depth is one ConfigError naming the key."""
    enc = VGGEncoder(width=0.25, num_stages=4)
    assert enc.num_pools == 4 and enc.stages == VGGEncoder(width=0.25).stages[:4]
    feats, switches = enc(torch.randn(1, 3, 96, 128))
    assert feats.shape == (1, 128, 6, 8) and len(switches) == 4
    m = SegNet(5, VGGEncoder(width=0.25, num_stages=4)).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 33, 47)).shape == (2, 5, 33, 47)
    assert len(m.decoder.stages) == 4
    full = torchvision.models.vgg16_bn(weights=None)
    path = tmp_path / "vgg16_bn.pth"
    torch.save(full.state_dict(), path)
    cut = VGGEncoder(num_stages=3, weights=path)
    last_conv = len(cut.features) - 4  # …, conv3_3, BN, ReLU, pool3
    torch.testing.assert_close(cut.features[last_conv].weight, full.features[last_conv].weight)
    deconv = DeconvNet(5, VGGEncoder(num_stages=4, weights=path))  # fc6 reads pool5 in VGG16: not loaded after pool4
    assert not torch.equal(deconv.fc6[0].weight.flatten(), full.classifier[0].weight.flatten())
    for bad in (0, 6, 2.5, True, "4"):
        with pytest.raises(ConfigError, match="model.encoder.num_stages"):
            VGGEncoder(num_stages=bad)


def _bgr(img):
    return torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float()[None]  # (1,3,H,W) BGR 0–255


def test_caffe_inputs_undo_the_dataset_normalisation():
    """SegNet's Caffe input is raw BGR 0–255; DeconvNet's is BGR 0–255 minus its mean_value."""
    img = np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    x = to_tensors(img, np.zeros((8, 10), np.uint8))[0][None]  # the dataset contract: ImageNet-normalised RGB
    torch.testing.assert_close(InputAdapter("caffe_bgr")(x), _bgr(img), atol=1e-3, rtol=0)
    mean = torch.tensor([104.008, 116.669, 122.675]).view(1, 3, 1, 1)
    torch.testing.assert_close(InputAdapter("caffe_bgr_mean")(x), _bgr(img) - mean, atol=1e-3, rtol=0)
    assert InputAdapter("imagenet")(x) is x
    with pytest.raises(ConfigError, match="model.input='rgb' is unknown"):
        InputAdapter("rgb")


def _caffe_lrn(x, n=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's LRN across channels, by hand: x / (k + alpha/n · Σ x² over n zero-padded channels)^beta."""
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        window = x[:, max(0, c - n // 2):c + n // 2 + 1]
        out[:, c] = x[:, c] / (k + alpha / n * window.square().sum(1)) ** beta
    return out


def test_input_lrn_is_caffes_lrn():
    x = 255 * torch.rand(2, 3, 5, 6)  # raw pixels, where SegNet-Basic's LRN acts
    y = InputAdapter("imagenet", lrn=True)(x)
    torch.testing.assert_close(y, _caffe_lrn(x))
    assert (y - _caffe_lrn(x, alpha=5e-4 * 5)).abs().max() > 1  # alpha not divided by n: caught


def test_input_adapter_runs_first_and_keeps_the_state_dict():
    torch.manual_seed(0)
    m = segnet_basic(5, width=0.25, input="caffe_bgr", input_lrn=True).eval()
    plain = segnet_basic(5, width=0.25)
    plain.load_state_dict(m.state_dict())  # same keys: checkpoints load either way
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(m(x), plain.eval()(m.input_adapter(x)))
