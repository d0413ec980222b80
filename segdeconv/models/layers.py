"""Building blocks shared by every encoder-decoder: conv-BN-ReLU, pooling with switches, unpooling.

The *switches* (Zeiler & Fergus 2014, §2.1; SegNet §3) are the argmax positions recorded by each
2×2/2 max-pool; the decoder's :class:`Unpool` puts every value back at its switch position and
leaves zeros elsewhere, so the pre-pool size is recorded too (odd sizes unpool back exactly).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Switches(NamedTuple):
    """What a pooling layer hands to its unpooling twin.

    ``indices``: int64 flat indices (``kind="int64"``, as ``nn.MaxPool2d(return_indices=True)``)
    or uint8 window codes in {0,1,2,3} (``kind="compact"``, 8× less memory: SegNet §3's "2 bits per
    window", :mod:`segdeconv.models.memory.switches`); ``size``: the
    pre-pool (H, W).
    """

    indices: Tensor
    size: tuple[int, int]


def _compact_ops():
    import segdeconv.models.memory.switches as switches  # local import: the compact kernels are optional

    return switches


class Pool(nn.Module):
    """2×2 stride-2 max-pool that also returns :class:`Switches` (no parameters).

    ``ceil_mode=True`` is Caffe's layout (SegNet/DeconvNet originals: 360×480 → 23×30 at pool5),
    ``False`` torchvision's. ``compact=True`` stores 1-byte window codes instead of int64 indices.
    ``dropout=p`` drops pooled values (Bayesian SegNet's ``encdrop3``–``encdrop5`` sit right after
    ``pool3``–``pool5``); it lives inside the pool so ``VGGEncoder.features`` keeps torchvision's
    indices and a recomputed stage (:mod:`segdeconv.models.memory.recompute`) draws the same mask again.
    """

    def __init__(self, ceil_mode: bool = True, compact: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.ceil_mode = ceil_mode
        self.compact = compact
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: Tensor) -> tuple[Tensor, Switches]:
        y, sw = self.pooled(x)
        if self.dropout is not None:  # Bayesian SegNet's encdropN: on the pooled values, not the switches
            y = self.dropout(y)
        return y, sw

    def pooled(self, x: Tensor) -> tuple[Tensor, Switches]:
        """The max-pool alone (no dropout): pooled values and switches."""
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if self.compact:
            y, sw = _compact_ops().max_pool2x2(x, ceil_mode=self.ceil_mode)
        else:
            y, sw = F.max_pool2d(x, 2, 2, ceil_mode=self.ceil_mode, return_indices=True)
        return y, Switches(sw, size)

    def extra_repr(self) -> str:
        return f"kernel_size=2, stride=2, ceil_mode={self.ceil_mode}, compact={self.compact}"


class Unpool(nn.Module):
    """Max-unpooling with the switches of the mirrored :class:`Pool` (Noh et al. 2015, §3.2)."""

    def forward(self, x: Tensor, switches: Switches) -> Tensor:
        if switches.indices.dtype == torch.uint8:
            return _compact_ops().max_unpool2x2(x, switches.indices, switches.size)
        return F.max_unpool2d(x, switches.indices, (2, 2), (2, 2), output_size=switches.size)


def conv_bn_relu(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    batch_norm: bool = True,
    relu: bool = True,
    transposed: bool = False,
) -> list[nn.Module]:
    """[conv or transposed conv, BN?, ReLU?] with 'same' padding, as a flat list of modules.

    A stride-1 transposed convolution is a convolution with flipped, in/out-swapped filters
    (it is the adjoint of convolution, not its inverse): the two kinds have identical capacity.
    """
    conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = [conv_cls(in_ch, out_ch, kernel_size, padding=kernel_size // 2)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers
