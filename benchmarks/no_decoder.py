"""The decoder ablation of the quick start (``benchmarks/quickstart.py --no-decoder``): the default
encoder with a 3×3 conv–BN–ReLU + 1×1 classifier at its output (1/8 for ``segnet_small``), upsampled
bilinearly to the input size — a single-scale head without skips, no unpooling, no decoder. Not part of the library;
built by ``train.py`` through ``model.name=no_decoder:NoDecoder`` with this folder on PYTHONPATH."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from segdeconv.models.vgg import VGGEncoder


class NoDecoder(nn.Module):
    """``forward(x: (B,3,H,W)) -> (B,num_classes,H,W)``: encoder → head at H/2^N → bilinear upsampling."""

    def __init__(self, num_classes: int, encoder: VGGEncoder, **_: object) -> None:
        """The other SegNet keys (decoder, classifier_kernel, dropout, …) have nothing to act on here and are
        ignored; ``model.lean`` applies to the encoder as to SegNet's (the registry applies the memory policy)."""
        super().__init__()
        self.encoder, self.num_classes = encoder, int(num_classes)
        c = encoder.out_channels
        self.head = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, self.num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        feats, _ = self.encoder(x)  # (B, C, H/8, W/8) for segnet_small; the switches are not used
        return F.interpolate(self.head(feats), size=x.shape[-2:], mode="bilinear", align_corners=False)
