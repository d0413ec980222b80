"""Pooling switches, unpooling, and the 'deconvolution is the adjoint of convolution' facts."""
import torch
import torch.nn.functional as F
from torch import nn

from segdeconv.models.layers import Pool, Unpool


def test_unpool_restores_values_at_switch_positions_odd_sizes():
    torch.manual_seed(0)
    for ceil in (True, False):
        x = torch.randn(2, 3, 9, 13)
        y, sw = Pool(ceil_mode=ceil)(x)
        up = Unpool()(y, sw)
        assert up.shape == x.shape
        nz = up != 0
        assert torch.equal(up[nz], x[nz])  # every kept value sits where the max was
        assert nz.sum() == y.numel() - (y == 0).sum()
        # each pooled value is the max of its window
        ref = F.max_pool2d(x, 2, 2, ceil_mode=ceil)
        assert torch.equal(y, ref)


def test_unpool_with_tied_windows_matches_max_unpool2d_and_keeps_one_value_per_window():
    x = torch.randint(0, 3, (2, 4, 10, 10)).float()  # most 2×2 windows hold ties
    y, sw = Pool()(x)
    ref_y, ref_idx = F.max_pool2d(x, 2, 2, return_indices=True)
    up = Unpool()(y, sw)
    assert torch.equal(y, ref_y) and torch.equal(up, F.max_unpool2d(ref_y, ref_idx, 2, 2, output_size=x.shape[-2:]))
    nonzero_per_window = (up != 0).float().unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2))
    assert nonzero_per_window.max() <= 1  # the tie goes to exactly one position (the first max)


def test_stride1_transposed_conv_is_conv_with_flipped_transposed_weights():
    torch.manual_seed(0)
    ct = nn.ConvTranspose2d(4, 6, 3, padding=1)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(ct.weight.transpose(0, 1).flip(-1, -2))
        conv.bias.copy_(ct.bias)
    x = torch.randn(2, 4, 11, 7)
    torch.testing.assert_close(ct(x), conv(x), rtol=1e-5, atol=1e-5)


def test_transposed_conv_is_the_adjoint_not_the_inverse():
    torch.manual_seed(0)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    y = torch.randn(2, 5, 4, 5, dtype=torch.float64)
    conv_x = F.conv2d(x, w, stride=2, padding=1)
    conv_t_y = F.conv_transpose2d(y, w, stride=2, padding=1, output_padding=(1, 0))
    # <conv(x), y> == <x, conv^T(y)>
    torch.testing.assert_close((conv_x * y).sum(), (x * conv_t_y).sum())
    # ... but conv^T(conv(x)) is not x
    back = F.conv_transpose2d(conv_x, w, stride=2, padding=1, output_padding=(1, 0))
    assert (back - x).abs().max() > 0.1
