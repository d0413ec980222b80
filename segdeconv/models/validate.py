"""Input checks that turn shape mistakes into one clear error instead of a deep torch traceback."""
from __future__ import annotations

import math

from torch import Tensor

from segdeconv.errors import UserError


def pooled_size(n: int, num_pools: int, ceil_mode: bool) -> int:
    """Spatial size after ``num_pools`` 2×2/2 pools."""
    for _ in range(num_pools):
        n = math.ceil(n / 2) if ceil_mode else n // 2
    return n


def min_input_size(num_pools: int, ceil_mode: bool, min_pooled: int = 1) -> int:
    """Smallest input side whose deepest feature map is ≥ ``min_pooled`` (e.g. 7 for DeconvNet's fc6)."""
    if ceil_mode:
        return (min_pooled - 1) * 2**num_pools + 1
    return min_pooled * 2**num_pools


def check_input(x: Tensor, encoder, min_pooled: int = 1) -> None:
    """Raise :class:`UserError` unless ``x`` is (B, C_in, H, W) large enough for the encoder."""
    if x.dim() != 4 or x.shape[1] != encoder.in_channels:
        raise UserError(
            f"model input has shape {tuple(x.shape)}; expected (B, {encoder.in_channels}, H, W) "
            f"float images (convert grayscale/RGBA to RGB, add a batch dimension)"
        )
    need = min_input_size(encoder.num_pools, encoder.ceil_mode, min_pooled)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) < need:
        raise UserError(
            f"input {h}×{w} is too small for this model: each side must be ≥ {need} px "
            f"({encoder.num_pools} pools, ceil_mode={encoder.ceil_mode}); resize or pad the image "
            f"(e.g. dataset.image_size) to at least {need}×{need}"
        )
