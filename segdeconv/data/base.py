"""The dataset contract shared by every adapter.

An item is ``(image, mask)``: ``image`` float32 ``(3, H, W)`` normalized with the encoder's
ImageNet statistics, ``mask`` int64 ``(H, W)`` with class ids ``0..num_classes-1`` and
``IGNORE_INDEX`` (255) for void/border pixels.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Hashable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from segdeconv.data.image import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike, read_image, to_tensors
from segdeconv.errors import DataError, data_error

_DOCS = "see data/README.md"


def apply_joint(
    transform: Optional[JointTransform], image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply an albumentations-style joint transform (or nothing) to an (image, mask) pair."""
    if transform is None:
        return image, mask
    out = transform(image=image, mask=mask)
    return out["image"], out["mask"]


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


def bitget_palette(n: int = 256) -> list[list[int]]:
    """The Pascal VOC colour map (bit-interleaved), ``n`` entries of [r, g, b]."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append([r, g, b])
    return out


# ----------------------------------------------------------------------------------------------
# Label mapping: every adapter maps raw mask values to training ids with one 256-entry table.
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# The shared dataset: path lists, cheap layout checks at construction, per-item checks on load.
# ----------------------------------------------------------------------------------------------
def require_dir(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a directory, else raise DataError naming it."""
    if not path.is_dir():
        raise data_error(path, f"{what} does not exist" if not path.exists() else
                         f"{what} is not a directory", fix)
    return path


def read_list_file(path: Path, fix: str) -> list[list[str]]:
    """Non-empty, non-comment lines of a split list, each split on whitespace."""
    if not path.is_file():
        raise data_error(path, "split list file not found", fix)
    lines = path.read_text().splitlines()
    rows = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not rows:
        raise data_error(path, "split list file is empty", fix)
    return rows


def check_pairs(images: list[Path], masks: list[Path], skip_missing: bool, fix: str
                ) -> tuple[list[Path], list[Path]]:
    """Cheap construction check: every listed image and mask exists (or drop the pair)."""
    bad = [(i, m) for i, m in zip(images, masks) if not (i.is_file() and m.is_file())]
    if bad and not skip_missing:
        img, msk = bad[0]
        what, todo = ((f"image without mask: {msk} does not exist", "add the mask")
                      if img.is_file() else (f"listed image does not exist (mask: {msk})",
                                             "restore the image"))
        more = f" (and {len(bad) - 1} more incomplete pairs)" if len(bad) > 1 else ""
        raise data_error(img, what + more, f"{todo} or drop the pair from the split; {fix}; or "
                         "use only complete pairs with ++dataset.train.skip_missing=true")
    if bad:
        warnings.warn(f"skipping {len(bad)} of {len(images)} pairs whose image or mask is missing "
                      f"(first: {bad[0][0]})", stacklevel=4)
        drop = {i for i, _ in bad}
        pairs = [(i, m) for i, m in zip(images, masks) if i not in drop]
        images, masks = [i for i, _ in pairs], [m for _, m in pairs]
    return list(images), list(masks)


def refuse_overlap(splits: Mapping[str, Sequence[Hashable]], fix: str) -> None:
    """Refuse splits that share entries (paths or ids): training on validation items inflates val mIoU.

    ``splits`` maps a label to its entries; each label after the first is a plural noun phrase
    (e.g. ``{"…/train_aug.txt": ids, "VOC12 val ids": val_ids}``); every pair is compared."""
    named = list(splits.items())
    for i, (a, items) in enumerate(named):
        for b, other in named[i + 1:]:
            shared = set(items) & set(other)
            if shared:
                raise data_error(a, f"contains {len(shared)} {b} (e.g. {sorted(map(str, shared))[0]}); training on "
                                 "them inflates val mIoU", fix)


def unique_stems(files: Iterable[Path], folder: Path) -> dict[str, Path]:
    """``stem -> file``; two files with one stem (``a.png`` and ``a.jpg``) are an error naming both,
    since pairing by stem would silently drop one."""
    out: dict[str, Path] = {}
    for p in sorted(files):
        if p.stem in out:
            raise data_error(out[p.stem], f"and {p.name} have the same stem {p.stem!r}, so pairing by name would "
                             "drop one", f"rename or remove one of them in {folder}")
        out[p.stem] = p
    return out


class SegmentationDataset(torch.utils.data.Dataset):
    """Base of every adapter: ``(image, mask)`` items following the module contract.

    Subclasses fill ``image_paths``/``mask_paths`` (via :meth:`_set_pairs`), ``class_names``,
    ``palette`` and ``lut`` (raw mask value -> training id), and may override
    :meth:`read_raw_mask` for non-index masks. Cheap layout checks run in ``__init__``; the
    per-item checks (decodable files, mask size = image size, labels in the class set) run on
    every load and raise :class:`DataError`.
    """

    SPLITS: tuple[str, ...] = ()  # accepted split names; empty = any
    UNIONS: dict[str, tuple[str, ...]] = {}  # e.g. trainval -> (train, val)
    LAYOUT: str = _DOCS  # one-line description of the expected tree, used in every fix

    def __init__(self, root: PathLike, split: Optional[str], transform: Optional[JointTransform],
                 ignore_index: int = IGNORE_INDEX, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        name = type(self).__name__
        self.root = require_dir(Path(root).expanduser(), f"{name} root",
                                f"pass dataset.root=/path/to/the/dataset ({self.LAYOUT})")
        if self.SPLITS and split not in self.SPLITS:
            raise DataError(f"split={split!r} is not a {name} split; fix: use one of "
                            f"{', '.join(self.SPLITS)} (dataset.*.split / split=...)")
        self.split, self.transform = split, transform
        self.ignore_index = int(ignore_index)
        self.mean, self.std = tuple(mean), tuple(std)
        self.class_names: list[str] = []
        self.palette: list[list[int]] = []
        self.image_paths: list[Path] = []
        self.mask_paths: list[Path] = []
        self.lut = label_lut(0, self.ignore_index)
        if transform is not None:
            from segdeconv.data.transforms import check_transform  # albumentations only if used
            check_transform(transform, self.ignore_index)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def named_split(self) -> str:
        """``split`` of a dataset with named splits (``SPLITS``), where ``__init__`` refused any other
        value, None included."""
        if self.split is None:
            raise DataError(f"{type(self).__name__} needs a split; fix: set dataset.*.split / split=...")
        return self.split

    def subsplits(self) -> tuple[str, ...]:
        """The plain splits a (possibly union) named split is made of: trainval -> (train, val)."""
        split = self.named_split()
        return self.UNIONS.get(split, (split,))

    def _set_pairs(self, images: list[Path], masks: list[Path], check: bool = True,
                   skip_missing: bool = False, where: Optional[Path] = None) -> None:
        """Set the pairs (checked unless ``check=False``); a split without pairs is an error naming
        ``where`` (the folder or list it was read from; default: the root)."""
        if check or skip_missing:
            images, masks = check_pairs(images, masks, skip_missing, self.LAYOUT)
        if not images:
            raise data_error(where or self.root, f"split {self.split!r} has no image/mask pairs",
                             f"add pairs or choose another split; {self.LAYOUT}")
        self.image_paths, self.mask_paths = list(images), list(masks)

    def read_raw_mask(self, path: Path) -> np.ndarray:
        """Raw HxW uint8 values as stored (before ``lut``); override for colour/.mat masks."""
        return read_index_mask(path)

    def load_mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as HxW uint8 training ids (255 = ignore), validated; no image decoding."""
        path = self.mask_paths[i]
        return apply_lut(self.read_raw_mask(path), self.lut, path)

    def load_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded, validated (image HxWx3 uint8 RGB, mask HxW uint8) before any transform."""
        image, mask = read_image(self.image_paths[i]), self.load_mask(i)
        if image.shape[:2] != mask.shape:
            (ih, iw), (mh, mw) = image.shape[:2], mask.shape
            raise data_error(self.mask_paths[i], f"mask is {mw}x{mh} but its image "
                             f"{self.image_paths[i]} is {iw}x{ih}",
                             "masks must match their image pixel for pixel; re-export the mask "
                             "at the image size or fix the pairing")
        return image, mask

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = apply_joint(self.transform, *self.load_pair(i))
        return to_tensors(image, mask, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"n={len(self)}, num_classes={self.num_classes})")
