"""Albumentations glue: the paper presets and a guard that keeps masks label-safe.

Pipelines are normally declared in YAML (``conf/dataset/*.yaml``: ``_target_:
albumentations.Compose`` with a ``transforms`` list); the builders here produce the same
pipelines for notebooks::

    from segdeconv.data.camvid import CamVid
    from segdeconv.data.transforms import segnet_train
    ds = CamVid("data/CamVid", "train", transform=segnet_train())

Rules every pipeline follows (checked by :func:`check_transform` when a dataset gets one):
masks are resized with nearest neighbour only, and padding fills masks with the ignore index
(255), so no pixel ever gets a class it did not have. Images are padded with the ImageNet mean
colour (zero after normalization).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import cv2

from segdeconv.data import base  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before the import)
from segdeconv.data.base import IGNORE_INDEX, IMAGENET_MEAN
from segdeconv.errors import ConfigError

import albumentations as A  # noqa: E402

PAD_FILL = tuple(round(255 * m) for m in IMAGENET_MEAN)  # (124, 116, 104)
NEAREST = (cv2.INTER_NEAREST, cv2.INTER_NEAREST_EXACT)


def _pad(height: Optional[int], width: Optional[int], divisor: Optional[int] = None,
         position: str = "center") -> A.PadIfNeeded:
    """Pad image with the mean colour and mask with ignore (to a size, or to a multiple)."""
    size: dict[str, Any] = (
        {"min_height": None, "min_width": None, "pad_height_divisor": divisor,
         "pad_width_divisor": divisor} if divisor else {"min_height": height, "min_width": width})
    return A.PadIfNeeded(**size, position=position, border_mode=cv2.BORDER_CONSTANT,
                         fill=PAD_FILL, fill_mask=IGNORE_INDEX)


def segnet_train(image_size: Optional[Sequence[int]] = (360, 480), hflip: float = 0.5,
                 scale: float = 0.1, color_jitter: float = 0.2) -> A.Compose:
    """SegNet's CamVid recipe: full frames (360x480), mirror, mild scale and colour jitter.

    ``image_size=None`` keeps the native size (then no scale jitter, which needs a crop size);
    ``scale=0`` / ``color_jitter=0`` switch those parts off.
    """
    ts: list[A.BasicTransform] = []
    if image_size is not None:
        h, w = image_size
        ts.append(A.Resize(h, w, interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=cv2.INTER_NEAREST))
        if scale > 0:
            ts += [A.RandomScale(scale_limit=(-scale, scale), interpolation=cv2.INTER_LINEAR,
                                 mask_interpolation=cv2.INTER_NEAREST, p=1.0),
                   _pad(h, w), A.RandomCrop(h, w)]
    if hflip > 0:
        ts.append(A.HorizontalFlip(p=hflip))
    if color_jitter > 0:
        c = color_jitter
        ts.append(A.ColorJitter(brightness=c, contrast=c, saturation=c, hue=0.0, p=0.5))
    return A.Compose(ts)


def segnet_eval(image_size: Optional[Sequence[int]] = None) -> A.Compose:
    """Deterministic eval pipeline: resize to ``image_size`` (H, W) if given, else nothing."""
    if image_size is None:
        return A.Compose([])
    h, w = image_size
    return A.Compose([A.Resize(h, w, interpolation=cv2.INTER_LINEAR,
                               mask_interpolation=cv2.INTER_NEAREST)])


def noh_train(resize: int = 250, crop: int = 224, hflip: float = 0.5,
              mode: str = "whole") -> A.Compose:
    """Noh et al. 2015: resize to 250 (``mode="whole"``: 250x250; ``"short_side"``: shorter side
    250, aspect kept), random 224x224 crop, horizontal mirror."""
    if mode == "whole":
        first: A.BasicTransform = A.Resize(resize, resize, mask_interpolation=cv2.INTER_NEAREST)
    elif mode == "short_side":
        first = A.SmallestMaxSize(max_size=resize, mask_interpolation=cv2.INTER_NEAREST)
    else:
        raise ConfigError(f"noh_train mode={mode!r} is unknown; use 'whole' or 'short_side'")
    return A.Compose([first, _pad(crop, crop), A.RandomCrop(crop, crop), A.HorizontalFlip(p=hflip)])


def noh_eval(min_size: int = 224, divisor: int = 32) -> A.Compose:
    """Whole images, padded bottom/right with ignore to at least ``min_size`` and a multiple of
    ``divisor`` (five 2x2 pools need /32; DeconvNet's 7x7 fc6 needs >= 224). Predictions are
    cropped back with ``[:h, :w]``. ``min_size=512`` gives every VOC image (<= 500 px) the
    same 512x512 size, so batches need no special collate."""
    return A.Compose([_pad(min_size, min_size, position="top_left"),
                      _pad(None, None, divisor=divisor, position="top_left")])


PRESETS = {"segnet_train": segnet_train, "segnet_eval": segnet_eval,
           "noh_train": noh_train, "noh_eval": noh_eval}


def build_preset(name: str, **kwargs: Any) -> A.Compose:
    """Preset by name (``segnet_train``, ``segnet_eval``, ``noh_train``, ``noh_eval``)."""
    if name not in PRESETS:
        raise ConfigError(f"transform preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    return PRESETS[name](**kwargs)


def _walk(t: Any) -> Iterator[Any]:
    yield t
    for child in getattr(t, "transforms", None) or []:
        yield from _walk(child)


def check_transform(transform: Any, ignore_index: int = IGNORE_INDEX) -> None:
    """Reject pipelines that could relabel pixels: non-nearest mask interpolation, or padding
    that fills masks with a class id instead of ``ignore_index``. Non-albumentations callables
    pass unchecked."""
    for t in _walk(transform):
        name = type(t).__name__
        interp = getattr(t, "mask_interpolation", None)
        if interp is not None and interp not in NEAREST:
            raise ConfigError(f"transform {name}: mask_interpolation={interp} blends class ids; "
                              f"fix: set mask_interpolation: 0 (cv2.INTER_NEAREST)")
        fill = getattr(t, "fill_mask", None)
        constant = getattr(t, "border_mode", cv2.BORDER_CONSTANT) == cv2.BORDER_CONSTANT
        pads = getattr(t, "pad_if_needed", True) and constant
        fills = fill if isinstance(fill, (tuple, list)) else (fill,)
        if fill is not None and pads and any(f != ignore_index for f in fills):
            raise ConfigError(f"transform {name}: fill_mask={fill} would label padding as a class; "
                              f"fix: set fill_mask: {ignore_index}")
