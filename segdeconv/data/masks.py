"""Mask files to training ids, the one way every adapter reads labels: decoding (an index mask's class ids,
a colour-coded mask's RGB), the 256-entry raw value → training id table (:func:`label_lut`,
:func:`apply_lut`) and colour → id (:func:`rgb_to_ids`); a value outside the class set is one
:class:`~segdeconv.errors.DataError` naming the file and the fix."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from segdeconv.data.image import IGNORE_INDEX, PathLike
from segdeconv.errors import data_error


def _open_pil(path: PathLike) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (OSError, SyntaxError, ValueError) as e:
        raise data_error(path, f"cannot be decoded as a mask image ({e})",
                         "re-copy the file from the original download (lossless PNG)") from None


def read_index_mask(path: PathLike) -> np.ndarray:
    """Decode a class-id mask ('L', 'P' palette indices, '1' or 16-bit) to HxW uint8.

    A 'P' PNG is read as its palette *indices* (VOC's class ids), never converted to colours.
    """
    im = _open_pil(path)
    if im.mode in ("L", "P"):
        return np.asarray(im, dtype=np.uint8)
    if im.mode in ("1", "I", "I;16", "I;16B", "I;16L"):
        arr = np.asarray(im)
        if arr.size and int(arr.max()) > 255:
            raise data_error(path, f"holds label ids up to {int(arr.max())} (> 255)",
                             "store class ids 0..254 (255 = ignore) in an 8-bit PNG")
        return arr.astype(np.uint8)
    raise data_error(
        path, f"is a colour mask (PIL mode {im.mode}) but an index mask is expected (one class "
        "id per pixel, 8-bit 'L' or palette 'P' PNG)",
        "convert colours to class ids (SegmentationFolder: mask_format=rgb with a palette; "
        "grey saved as RGB: Image.open(p).convert('L'))")


def read_rgb_mask(path: PathLike) -> np.ndarray:
    """Decode a colour-coded mask (RGB, RGBA or palette PNG shown as colours) to HxWx3 uint8."""
    im = _open_pil(path)
    if im.mode not in ("RGB", "RGBA", "P"):
        raise data_error(path, f"is a {im.mode} mask but a colour-coded (RGB) mask is expected",
                         "use the colour label files, or mask_format=index for class-id masks")
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


# Label mapping: every adapter maps raw mask values to training ids with one 256-entry table.
def label_lut(num_classes: int, ignore_index: int = IGNORE_INDEX, void_values: Iterable[int] = (),
              mapping: Optional[dict[int, int]] = None) -> np.ndarray:
    """Raw value -> training id table (int16[256]); -1 marks values outside the class set.

    Default: ``0..num_classes-1`` map to themselves, ``ignore_index`` and ``void_values`` to
    ``ignore_index``; ``mapping`` (raw -> id) replaces the identity part when given.
    """
    lut = np.full(256, -1, dtype=np.int16)
    if mapping is None:
        mapping = {c: c for c in range(num_classes)}
    for raw, tid in mapping.items():
        lut[raw] = tid
    for raw in (*void_values, ignore_index):
        lut[raw] = ignore_index
    return lut


def apply_lut(raw: np.ndarray, lut: np.ndarray, path: PathLike) -> np.ndarray:
    """Map a raw HxW uint8 mask through ``lut``; values outside the class set raise DataError."""
    out = lut[raw]
    if (out < 0).any():
        bad = np.unique(raw[out < 0])[:8].tolist()
        valid = np.flatnonzero(lut >= 0).tolist()
        raise data_error(path, f"has label values {bad} outside the class set {_ranges(valid)}",
                         "fix the mask, or set dataset.num_classes/class_names to match the labels")
    return out.astype(np.uint8)


def _ranges(values: Sequence[int]) -> str:
    """[0,1,2,3,11,255] -> '{0..3, 11, 255}'."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(v) if v == start else f"{start}..{v}")
            start = None
    return "{" + ", ".join(parts) + "}"


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) int32 0xRRGGBB."""
    c = rgb.astype(np.int32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def rgb_to_ids(rgb: np.ndarray, colors: np.ndarray, path: PathLike) -> np.ndarray:
    """Colour-coded HxWx3 mask -> HxW uint8 row index into ``colors`` (Kx3); unknown: error."""
    key, ckey = _pack_rgb(rgb), _pack_rgb(colors)
    order = np.argsort(ckey)
    pos = np.searchsorted(ckey[order], key).clip(0, len(ckey) - 1)
    hit = ckey[order][pos] == key
    if not hit.all():
        bad = [[int(k >> 16), int(k >> 8 & 255), int(k & 255)] for k in np.unique(key[~hit])[:5]]
        raise data_error(path, f"has colours {bad} that are not in the palette (lossy JPEG/resized "
                         "mask, or a class missing from the class table)",
                         "use the original lossless PNG masks or add the colour to the palette")
    return order[pos].astype(np.uint8)
