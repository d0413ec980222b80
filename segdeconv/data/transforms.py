"""Albumentations glue: the paper presets and a guard that keeps masks label-safe.

These presets are the one source of truth for augmentation: ``conf/dataset/*.yaml`` and the
experiment overlays point at them (``transform: {_target_: segdeconv.data.transforms.segnet_train,
…}``), and notebooks call them directly::

    from segdeconv.data.camvid import CamVid
    from segdeconv.data.transforms import segnet_train
    ds = CamVid("data/CamVid", "train", transform=segnet_train())

Rules every pipeline follows (checked by :func:`check_transform` when a dataset gets one):
masks are resized with nearest neighbour only, and padding fills masks with the ignore index
(255), so no pixel ever gets a class it did not have. Images are padded with the ImageNet mean
colour (zero after normalization).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence, Union

import albumentations as A  # segdeconv/__init__.py set NO_ALBUMENTATIONS_UPDATE before this import
import cv2

from segdeconv.data.image import IGNORE_INDEX, IMAGENET_MEAN
from segdeconv.errors import ConfigError

PAD_FILL = tuple(round(255 * m) for m in IMAGENET_MEAN)  # (124, 116, 104)
NEAREST = (cv2.INTER_NEAREST, cv2.INTER_NEAREST_EXACT)


def _pad(height: Optional[int], width: Optional[int], divisor: Optional[int] = None,
         position: str = "center", ignore_index: int = IGNORE_INDEX) -> A.PadIfNeeded:
    """Pad image with the mean colour and mask with ignore (to a size, or to a multiple)."""
    size: dict[str, Any] = (
        {"min_height": None, "min_width": None, "pad_height_divisor": divisor,
         "pad_width_divisor": divisor} if divisor else {"min_height": height, "min_width": width})
    return A.PadIfNeeded(**size, position=position, border_mode=cv2.BORDER_CONSTANT,
                         fill=PAD_FILL, fill_mask=ignore_index)


def _scale_limit(scale: Union[float, Sequence[float]]) -> tuple[float, float]:
    """``0.1`` → (-0.1, 0.1); ``[-0.2, 0.25]`` as given (albumentations adds 1: × 0.8 … 1.25)."""
    if isinstance(scale, (int, float)):
        return -float(scale), float(scale)
    lo, hi = (float(v) for v in scale)
    if not -1.0 < lo <= hi:
        raise ConfigError(f"transform scale={list(scale)} must be [lo, hi] with -1 < lo <= hi (× 1+lo … 1+hi)")
    return lo, hi


def segnet_train(image_size: Optional[Sequence[int]] = (360, 480), hflip: float = 0.5,
                 scale: Union[float, Sequence[float]] = 0.1, color_jitter: float = 0.2,
                 crop_size: Optional[Sequence[int]] = None, resize: bool = True,
                 resize_interpolation: int = cv2.INTER_LINEAR, ignore_index: int = IGNORE_INDEX,
                 photometric: float = 0.0) -> A.Compose:
    """SegNet's CamVid recipe: full frames (360x480), mirror, mild scale and colour jitter.

    Resize to ``image_size`` (unless ``resize=False``), scale-jitter by ``scale`` (``0.1`` = × 0.9 … 1.1,
    or ``[lo, hi]``), pad (mask: ``ignore_index``) and crop to ``crop_size`` (default ``image_size``),
    mirror with probability ``hflip``, colour-jitter, then (``photometric`` > 0) :func:`photometric_ops`.
    ``image_size=None`` keeps the native size (then no scale jitter, which needs a crop size);
    ``scale=0`` / ``color_jitter=0`` / ``photometric=0`` switch those parts off.
    """
    ts: list[A.BasicTransform] = []
    if image_size is not None:
        h, w = image_size
        ch, cw = crop_size if crop_size is not None else (h, w)
        if resize:
            ts.append(A.Resize(h, w, interpolation=resize_interpolation, mask_interpolation=cv2.INTER_NEAREST))
        if scale:
            ts += [A.RandomScale(scale_limit=_scale_limit(scale), interpolation=cv2.INTER_LINEAR,
                                 mask_interpolation=cv2.INTER_NEAREST, p=1.0),
                   _pad(ch, cw, ignore_index=ignore_index), A.RandomCrop(ch, cw)]
    if hflip > 0:
        ts.append(A.HorizontalFlip(p=hflip))
    if color_jitter > 0:
        c = color_jitter
        ts.append(A.ColorJitter(brightness=c, contrast=c, saturation=c, hue=0.0, p=0.5))
    return A.Compose(ts + photometric_ops(photometric))


def photometric_ops(p: float) -> list[A.BasicTransform]:
    """Image-only changes of lighting and optics a new scene brings (issue #15): gamma 0.7–1.5, hue ±10
    and saturation ±25, blur (Gaussian or motion, ≤ 5 px) and sensor noise; gamma and hue each with
    probability ``p``, blur and noise with ``p / 2``. ``p=0``: none. Masks are untouched."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"transform photometric={p} must be a probability in [0, 1] (0 = off)")
    if p == 0.0:
        return []
    return [A.RandomGamma(gamma_limit=(70, 150), p=p),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=0, p=p),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=5)], p=p / 2),
            A.GaussNoise(std_range=(0.01, 0.05), p=p / 2)]


class ResizeImage(A.ImageOnlyTransform):
    """Resize the image only: the mask keeps its native size, so a prediction made at ``(height, width)``
    is scored against the labels as they were drawn (its logits upsampled: :func:`segdeconv.engine.eval_loop.evaluate`)."""

    def __init__(self, height: int, width: int, interpolation: int = cv2.INTER_LINEAR) -> None:
        super().__init__(p=1.0)
        self.height, self.width, self.interpolation = int(height), int(width), int(interpolation)

    def apply(self, img: Any, **params: Any) -> Any:
        return cv2.resize(img, (self.width, self.height), interpolation=self.interpolation)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "interpolation")


LABEL_SIZES = ("native", "resized")


def segnet_eval(image_size: Optional[Sequence[int]] = None, labels: str = "native") -> A.Compose:
    """Deterministic eval pipeline: resize the image to ``image_size`` (H, W) if given, else nothing.

    ``labels="native"`` (default) keeps the masks at the size they were drawn at: the model predicts at
    ``image_size``, its logits are upsampled bilinearly to the labels' size and scored there (how CamVid's
    test split is judged: 360×480). ``"resized"`` scores at ``image_size`` instead, against masks resized
    nearest-neighbour (the older, optimistic half-resolution figure: thin classes lose pixels on the way).
    """
    if labels not in LABEL_SIZES:
        raise ConfigError(f"dataset.val.transform.labels={labels!r} is unknown; use 'native' (score at the "
                          "labels' own size) or 'resized' (score at dataset.image_size)")
    if image_size is None:
        return A.Compose([])
    h, w = image_size
    if labels == "native":
        return A.Compose([ResizeImage(h, w, cv2.INTER_LINEAR)])
    return A.Compose([A.Resize(h, w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)])


def noh_train(resize: int = 250, crop: Union[int, Sequence[int]] = 224, hflip: float = 0.5,
              mode: str = "whole") -> A.Compose:
    """Noh et al. 2015: resize to 250 (``mode="whole"``: 250x250; ``"short_side"``: shorter side
    250, aspect kept), random 224x224 (or ``[H, W]``) crop, horizontal mirror."""
    if mode == "whole":
        first: A.BasicTransform = A.Resize(resize, resize, mask_interpolation=cv2.INTER_NEAREST)
    elif mode == "short_side":
        first = A.SmallestMaxSize(max_size=resize, mask_interpolation=cv2.INTER_NEAREST)
    else:
        raise ConfigError(f"noh_train mode={mode!r} is unknown; use 'whole' or 'short_side'")
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    return A.Compose([first, _pad(ch, cw), A.RandomCrop(ch, cw), A.HorizontalFlip(p=hflip)])


def noh_eval(min_size: Optional[int] = 224, divisor: int = 32, ignore_index: int = IGNORE_INDEX) -> A.Compose:
    """Whole images, padded bottom/right with ignore to at least ``min_size`` (None: no minimum) and a
    multiple of ``divisor`` (five 2x2 pools need /32; DeconvNet's 7x7 fc6 needs >= 224). Predictions
    are cropped back with ``[:h, :w]``. ``min_size=512`` gives every VOC image (<= 500 px) the
    same 512x512 size, so batches need no special collate."""
    first = [_pad(min_size, min_size, position="top_left", ignore_index=ignore_index)] if min_size else []
    return A.Compose(first + [_pad(None, None, divisor=divisor, position="top_left", ignore_index=ignore_index)])


PRESETS: dict[str, Callable[..., A.Compose]] = {"segnet_train": segnet_train, "segnet_eval": segnet_eval,
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
