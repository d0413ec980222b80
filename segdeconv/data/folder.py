"""Your own data: a folder of images and a folder of masks with matching file stems.

Accepted layouts (``split`` picks the first that exists)::

    root/<split>/images/x.jpg   root/<split>/masks/x.png      per-split folders
    root/images/x.jpg           root/masks/x.png              + root/<split>.txt (one stem a line)
    root/images/x.jpg           root/masks/x.png              split=None: everything

``mask_format="index"``: masks hold class ids 0..N-1 (8-bit 'L' or palette 'P' PNG), 255 = ignore.
``mask_format="rgb"``: masks are colour-coded with ``palette`` (class i = palette[i]); colours in
``ignore_colors`` become ignore, any other colour is an error (usually a lossy JPEG mask).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from segdeconv.data.base import SegmentationDataset, bitget_palette, read_list_file, unique_stems
from segdeconv.data.image import IGNORE_INDEX, IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike
from segdeconv.data.masks import label_lut, read_index_mask, read_rgb_mask, rgb_to_ids
from segdeconv.errors import ConfigError, data_error

LAYOUT = ("expected root/<split>/images + root/<split>/masks, or root/images + root/masks "
          "(+ root/<split>.txt of stems), masks named like their image; "
          "see data/README.md#your-own-data")


def _by_stem(folder: Path) -> dict[str, Path]:
    """stem -> file for the image files in ``folder``; two files with one stem are an error."""
    return unique_stems((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), folder)


class SegmentationFolder(SegmentationDataset):
    """Images + masks folders for users' own data; class names (and palette) come from config."""

    LAYOUT = LAYOUT

    def __init__(self, root: PathLike, split: Optional[str] = None,
                 transform: Optional[JointTransform] = None,
                 class_names: Optional[Sequence[str]] = None, num_classes: Optional[int] = None,
                 palette: Optional[Sequence[Sequence[int]]] = None, mask_format: str = "index",
                 ignore_index: int = IGNORE_INDEX,
                 ignore_colors: Sequence[Sequence[int]] = (), image_dir: str = "images",
                 mask_dir: str = "masks", mask_suffix: str = "",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 check: bool = True, skip_missing: bool = False) -> None:
        super().__init__(root, split, transform, ignore_index, mean, std)
        if not class_names:
            raise ConfigError("dataset.class_names is required for a folder dataset "
                              "(e.g. dataset.class_names=[background,road,car])")
        n = len(class_names)
        if num_classes is not None and num_classes != n:
            raise ConfigError(f"dataset.num_classes={num_classes} but dataset.class_names has {n} "
                              "names; make them agree")
        self.class_names = [str(c) for c in class_names]
        self.palette = [[int(v) for v in c] for c in palette] if palette else bitget_palette(n)
        if len(self.palette) != n:
            raise ConfigError(f"dataset.palette has {len(self.palette)} colours for {n} classes")
        if mask_format not in ("index", "rgb"):
            raise ConfigError(f"dataset.mask_format={mask_format!r}; use index or rgb")
        self.mask_format = mask_format
        self.colors = np.array(self.palette + [list(c) for c in ignore_colors], dtype=np.uint8)
        self.lut = label_lut(n, self.ignore_index, void_values=range(n, len(self.colors)))
        images, masks, where = self._pairs(image_dir, mask_dir, mask_suffix, check)
        self._set_pairs(images, masks, check, skip_missing, where)

    def _dirs(self, image_dir: str, mask_dir: str) -> tuple[Path, Path, Optional[list[str]]]:
        """(images folder, masks folder, stems from <split>.txt or None)."""
        r, s = self.root, self.split
        if s is None or (r / s / image_dir).is_dir():
            base = r if s is None else r / s
            return base / image_dir, base / mask_dir, None
        if (r / f"{s}.txt").is_file():
            stems = [Path(row[0]).stem for row in read_list_file(r / f"{s}.txt", LAYOUT)]
            return r / image_dir, r / mask_dir, stems
        found = sorted(p.name for p in r.iterdir() if (p / image_dir).is_dir())
        raise data_error(r / s, f"split {s!r} has no {s}/{image_dir}/ folder and no {s}.txt list"
                         f" (split folders here: {found or 'none'})",
                         f"create them, or use split=null to read {r / image_dir} as one set")

    def _pairs(self, image_dir: str, mask_dir: str, suffix: str, check: bool
               ) -> tuple[list[Path], list[Path], Path]:
        """(images, masks, where they were listed: the images folder or the split's list file)."""
        img_dir, msk_dir, stems = self._dirs(image_dir, mask_dir)
        for d in (img_dir, msk_dir):
            if not d.is_dir():
                raise data_error(d, "folder does not exist", LAYOUT)
        imgs, msks = _by_stem(img_dir), _by_stem(msk_dir)
        keys = stems if stems is not None else sorted(imgs)
        images = [imgs.get(k, img_dir / f"{k}.jpg") for k in keys]
        masks = [msks.get(k + suffix, msk_dir / f"{k}{suffix}.png") for k in keys]
        orphans = sorted(set(msks) - {k + suffix for k in imgs})
        if check and stems is None and orphans:
            raise data_error(msks[orphans[0]], f"mask without image ({len(orphans)} in all)",
                             f"add its image to {img_dir} or remove the mask")
        return images, masks, img_dir if stems is None else self.root / f"{self.split}.txt"

    def read_raw_mask(self, path: Path) -> np.ndarray:
        if self.mask_format == "index":
            return read_index_mask(path)
        return rgb_to_ids(read_rgb_mask(path), self.colors, path)
