"""SUN RGB-D (Song et al., CVPR 2015), 37 indoor classes, RGB only: SegNet's indoor benchmark
(Badrinarayanan et al., TPAMI 2017: 5,285 training and 5,050 test images).

Two layouts, detected from the folder names:

``layout="download"`` — the archives of ankurhanda/sunrgbd-meta-data (the README links
``SUNRGBD-train_images.tgz``, ``SUNRGBD-test_images.tgz`` and ships
``sunrgbd_train_test_labels.tar.gz``), unpacked side by side::

    root/SUNRGBD-train_images/img-000001.jpg … img-005285.jpg
    root/SUNRGBD-test_images/img-000001.jpg … img-005050.jpg
    root/sunrgbd_train_test_labels/img-000001.png … img-010335.png

  The labels are numbered test first: test image ``img-k`` has label ``img-k``, train image
  ``img-k`` has label ``img-(k + 5050)`` (that README). Its suggested split of the labels into
  ``labels/train/`` + ``labels/test/`` (same file names) is found as well.

``layout="folders"`` — one folder per split, image and label with the same stem (e.g. the
chrischoy/SUN_RGBD reorganisation; depth folders are ignored)::

    root/image/{train,test}/<stem>.jpg       root/label37/{train,test}/<stem>.png

Labels (8- or 16-bit PNG): 0 = unlabelled -> ignore (255), 1..37 -> 0..36 (:data:`CLASS_NAMES`, the
``seg37list`` order of the SUN RGB-D toolbox); anything above 37 is an error. Splits: train, test.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from segdeconv.data.base import SegmentationDataset, bitget_palette, require_dir
from segdeconv.data.image import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike
from segdeconv.data.masks import label_lut
from segdeconv.errors import ConfigError, data_error

CLASS_NAMES = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
               "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
               "pillow", "mirror", "floor_mat", "clothes", "ceiling", "books", "fridge", "tv",
               "paper", "towel", "shower_curtain", "box", "whiteboard", "person", "night_stand",
               "toilet", "sink", "lamp", "bathtub", "bag"]
# The Pascal VOC colour map entries 1..37, i.e. the colour of each raw label value.
PALETTE = bitget_palette(len(CLASS_NAMES) + 1)[1:]
# alexgkendall/SegNet-Tutorial Example_Models/train_segnet_sun.prototxt, loss_param.class_weighting
# for labels 1..37 (the file's first entry is label 0, which it ignores: ignore_label: 0).
SEGNET_TUTORIAL_SUN_WEIGHTS: tuple[float, ...] = (
    0.382592, 0.447844, 0.634237, 0.375678, 0.582794, 0.476692, 0.776787, 0.980661, 1.020118,
    0.623396, 2.596563, 0.974491, 0.920240, 0.663878, 1.173357, 0.861062, 0.919955, 2.147320,
    1.190958, 1.164314, 1.854754, 1.446550, 2.853078, 0.768276, 1.651721, 4.456313, 2.205633,
    1.116695, 2.781543, 0.705917, 4.005834, 2.208329, 0.967071, 1.475710, 5.347752, 0.745528,
    4.017548)
TEST_COUNT = 5050  # test labels come first in sunrgbd_train_test_labels/
DOWNLOAD_DIRS = {"train": "SUNRGBD-train_images", "test": "SUNRGBD-test_images"}
# where the labels of each split may be: all together, or split as the sunrgbd-meta-data README shows
LABEL_DIRS = {s: ("sunrgbd_train_test_labels", f"labels/{s}") for s in ("train", "test")}
LAYOUT = ("expected root/SUNRGBD-{train,test}_images/img-*.jpg + root/sunrgbd_train_test_labels/"
          "img-*.png (the sunrgbd-meta-data downloads), or root/image/{train,test}/ + "
          "root/label37/{train,test}/ with matching stems; see data/README.md#sun-rgb-d")
_NUMBER = re.compile(r"img-(\d+)$")


class SUNRGBD(SegmentationDataset):
    """SUN RGB-D 37-class segmentation from the RGB images (label 0 = ignore)."""

    SPLITS = ("train", "test")
    LAYOUT = LAYOUT

    def __init__(self, root: PathLike, split: str = "train",
                 transform: Optional[JointTransform] = None, layout: str = "auto",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 check: bool = True, skip_missing: bool = False) -> None:
        super().__init__(root, split, transform, IGNORE_INDEX, mean, std)
        self.layout = self._detect_layout(layout)
        self.class_names, self.palette = list(CLASS_NAMES), [list(c) for c in PALETTE]
        self.lut = label_lut(len(CLASS_NAMES), self.ignore_index, void_values=(0,),
                             mapping={raw: raw - 1 for raw in range(1, len(CLASS_NAMES) + 1)})
        pairs = self._download_pairs() if self.layout == "download" else self._folder_pairs()
        self._set_pairs(*pairs, check=check, skip_missing=skip_missing)

    def _detect_layout(self, layout: str) -> str:
        if layout not in ("auto", "download", "folders"):
            raise ConfigError(f"dataset.layout={layout!r}; use auto, download or folders")
        if layout != "auto":
            return layout
        if any((self.root / d).is_dir() for d in DOWNLOAD_DIRS.values()):
            return "download"
        if (self.root / "image").is_dir():
            return "folders"
        raise data_error(self.root, "does not look like SUN RGB-D (no SUNRGBD-train_images/, "
                         "SUNRGBD-test_images/ or image/ folder)", LAYOUT)

    def _images(self, folder: Path) -> list[Path]:
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not images:
            raise data_error(folder, "holds no .jpg images", LAYOUT)
        return images

    def _download_pairs(self) -> tuple[list[Path], list[Path]]:
        """Images of the split and their labels by number (train labels are offset by 5,050)."""
        split = self.named_split()
        img_dir = require_dir(self.root / DOWNLOAD_DIRS[split], f"SUN RGB-D {split} "
                              "image folder", f"untar {DOWNLOAD_DIRS[split]}.tgz into "
                              f"{self.root}; {LAYOUT}")
        label_dirs = [self.root / d for d in LABEL_DIRS[split] if (self.root / d).is_dir()]
        if not label_dirs:
            raise data_error(self.root, f"has no {' or '.join(d + '/' for d in LABEL_DIRS[split])}",
                             "untar sunrgbd_train_test_labels.tar.gz (from ankurhanda/sunrgbd-meta-data) "
                             f"into {self.root}")
        images = self._images(img_dir)
        offset = TEST_COUNT if self.split == "train" else 0
        masks = []
        for p in images:
            m = _NUMBER.fullmatch(p.stem)
            if m is None:
                raise data_error(p, "is not named img-NNNNNN (its label is found by that number)",
                                 "keep the file names of the SUNRGBD-*_images archives")
            name = f"img-{int(m.group(1)) + offset:06d}.png"
            masks.append(next((d / name for d in label_dirs if (d / name).is_file()),
                              label_dirs[0] / name))
        return images, masks

    def _folder_pairs(self) -> tuple[list[Path], list[Path]]:
        split = self.named_split()
        fix = f"put the {split} images in image/{split}/ and labels in label37/{split}/; {LAYOUT}"
        img_dir = require_dir(self.root / "image" / split, "SUN RGB-D image folder", fix)
        lab_dir = require_dir(self.root / "label37" / split, "SUN RGB-D 37-class label folder", fix)
        images = self._images(img_dir)
        return images, [lab_dir / f"{p.stem}.png" for p in images]
