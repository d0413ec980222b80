"""Image codec: decode files to RGB uint8, normalize to the model's input, and back.

The model input contract: float32 ``(3, H, W)``, RGB, ``(v / 255 - IMAGENET_MEAN) / IMAGENET_STD``
(the statistics of the ImageNet-trained VGG encoder). Masks use ``IGNORE_INDEX`` (255) for void.
Used by the datasets, the Predictor, export metadata, the CRF and the visualizations.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image

from segdeconv.errors import UserError, data_error

PathLike = Union[str, "os.PathLike[str]"]
ImageInput = Union[str, Path, Image.Image, np.ndarray]  # what the Predictor accepts as an image
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
    """HxWx3 uint8 image + HxW integer mask -> normalized (3,H,W) float32 and (H,W) int64.

    Normalization is a per-channel 256-entry lookup in NumPy: ~1 ms for 360x480, where the
    equivalent torch ops took 2.5 ms on one thread and ~30-50 ms when the main process's
    intra-op threads compete for busy cores (num_workers=0; benchmarks/bench_data.py).
    """
    lut = _normalize_lut(tuple(mean), tuple(std))
    if image.dtype == np.uint8:
        img = np.empty((3, *image.shape[:2]), dtype=np.float32)
        for c in range(3):
            np.take(lut[c], image[..., c], out=img[c])
    else:  # other dtypes (e.g. a float pipeline): same formula, plain arithmetic
        m, s = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1), np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        img = np.ascontiguousarray((np.float32(image).transpose(2, 0, 1) / 255.0 - m) / s)
    return torch.from_numpy(img), torch.from_numpy(np.asarray(mask, dtype=np.int64))


@functools.lru_cache(maxsize=8)
def _normalize_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: uint8 value v of channel c -> (v / 255 - mean[c]) / std[c]."""
    v = np.arange(256, dtype=np.float32) / np.float32(255.0)
    m, s = np.asarray(mean, np.float32)[:, None], np.asarray(std, np.float32)[:, None]
    return ((v[None, :] - m) / s).astype(np.float32)


def denormalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Inverse of the normalization in :func:`to_tensors`: (…,3,H,W) float -> [0,1] float."""
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * s + m).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Decoding. Images: cv2 (measured faster than PIL for the CamVid PNGs and VOC JPEGs, see
# benchmarks/bench_data.py). Masks: PIL, because cv2 silently expands 'P' palette PNGs to colour.
# ----------------------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_CV2_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
def read_image(path: PathLike) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB.

    EXIF orientation is ignored on purpose: masks carry none, so rotating only the photo would
    misalign every label.
    """
    img = cv2.imread(str(path), _CV2_FLAGS)
    if img is None or img.ndim != 3:
        raise data_error(path, "cannot be decoded as an image (missing, corrupt or truncated)",
                         "re-copy the file from the original download or drop it from the split")
    if not hasattr(cv2, "IMREAD_COLOR_RGB"):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def to_rgb(image: ImageInput) -> np.ndarray:
    """A path, PIL image or array → HxWx3 uint8 RGB (grayscale is replicated, alpha dropped)."""
    if isinstance(image, (str, Path)):
        return read_image(image)  # DataError naming the file if it cannot be decoded
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise UserError(f"cannot predict on a {type(image).__name__}; pass a file path, a PIL image "
                        f"or an HxWx3 uint8 numpy array")
    if image.dtype != np.uint8:
        raise UserError(f"image array has dtype {image.dtype}; expected uint8 RGB in 0..255 "
                        f"(for floats in [0, 1]: (a * 255).round().astype(np.uint8))")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = image[..., :3] if image.shape[2] != 1 else image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise UserError(f"image array has shape {image.shape}; expected (H, W, 3) RGB, (H, W, 4) RGBA "
                        f"or (H, W) grayscale")
    return np.ascontiguousarray(image)


def list_images(folder: Union[str, Path], recursive: bool = False) -> list[Path]:
    """Image files (by suffix) in ``folder``, sorted; subfolders too with ``recursive``."""
    root = Path(folder)
    files = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
