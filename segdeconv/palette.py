"""Colour maps for label images: colourize a class-index mask, blend it over an image."""
from __future__ import annotations

import colorsys
from typing import Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


def default_palette(n: int) -> list[list[int]]:
    """Distinct colours for ``n`` classes (evenly spaced hues), for datasets without a palette."""
    return [[int(255 * c) for c in colorsys.hsv_to_rgb(i / max(1, n), 0.8, 0.95)] for i in range(n)]


def palette_array(palette: Sequence[Sequence[int]], ignore_color: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """(256, 3) uint8 lookup table: class i → palette[i], 255 (ignore) → ``ignore_color``, others black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:255]
    lut[: len(pal)] = pal
    lut[255] = ignore_color
    return lut


def colorize(mask: ArrayLike, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) class indices → (H, W, 3) uint8 RGB."""
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return palette_array(palette)[m.astype(np.int64).clip(0, 255)]


def overlay(image: np.ndarray, mask: ArrayLike, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the colourized mask over an (H, W, 3) uint8 image with opacity ``alpha``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    colour = colorize(mask, palette).astype(np.float32)
    out = (1.0 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colour
    return out.round().clip(0, 255).astype(np.uint8)
