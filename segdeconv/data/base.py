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

from segdeconv.data.image import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike, read_image, to_tensors
from segdeconv.data.masks import apply_lut, label_lut, read_index_mask
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
