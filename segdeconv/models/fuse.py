"""Inference-time graph simplification: fold every BatchNorm into the (transposed) conv before it.

An eval-mode BN is a per-channel affine map, so ``BN(conv(x)) = conv'(x)`` with rescaled weights and
a shifted bias (Ioffe & Szegedy 2015, §3.1 inference form). Removes one full pass over every feature
map; outputs equal the unfused model up to float rounding.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` whose conv→BN pairs (inside any nn.Sequential) are fused."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        mods = list(seq)
        for i in range(len(mods) - 1):
            conv, bn = mods[i], mods[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq[i + 1] = nn.Identity()
    return model
