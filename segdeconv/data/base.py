"""The dataset contract shared by every adapter.

An item is ``(image, mask)``: ``image`` float32 ``(3, H, W)`` normalized with the encoder's
ImageNet statistics, ``mask`` int64 ``(H, W)`` with class ids ``0..num_classes-1`` and
``IGNORE_INDEX`` (255) for void/border pixels.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# albumentations-style callable: transform(image=HxWx3 uint8, mask=HxW uint8) -> dict
JointTransform = Callable[..., dict]


def to_tensors(
    image: np.ndarray,
    mask: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HxWx3 uint8 image + HxW integer mask -> normalized (3,H,W) float32 and (H,W) int64."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    img = img.sub_(m).div_(s)
    return img, torch.from_numpy(np.ascontiguousarray(mask)).long()


def denormalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Inverse of the normalization in :func:`to_tensors`: (…,3,H,W) float -> [0,1] float."""
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * s + m).clamp_(0.0, 1.0)


def apply_joint(
    transform: Optional[JointTransform], image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply an albumentations-style joint transform (or nothing) to an (image, mask) pair."""
    if transform is None:
        return image, mask
    out = transform(image=image, mask=mask)
    return out["image"], out["mask"]
