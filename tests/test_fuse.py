"""BN folding for inference keeps the outputs."""
import torch

from segdeconv.models import DeconvNet, SegNet, VGGEncoder
from segdeconv.models.fuse import fold_batchnorm


def _randomize_bn(m):
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1, generator=g)
            mod.running_var.uniform_(0.5, 2.0, generator=g)
            mod.weight.data.uniform_(0.5, 1.5, generator=g)
            mod.bias.data.normal_(0, 0.1, generator=g)
    return m.eval()


def test_folding_keeps_segnet_and_deconvnet_outputs():
    x = torch.randn(1, 3, 224, 240)
    for m in (SegNet(5, VGGEncoder(width=0.125)), SegNet(5, VGGEncoder(width=0.125), decoder="transposed"),
              DeconvNet(5, VGGEncoder(width=0.0625), fc_channels=64)):
        m = _randomize_bn(m)
        f = fold_batchnorm(m)
        assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())
        with torch.no_grad():
            torch.testing.assert_close(f(x), m(x), rtol=1e-4, atol=1e-4)
        assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # original untouched
