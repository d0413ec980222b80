"""ADE20K SceneParsing (Zhou et al., CVPR 2017): the 150-class MIT Scene Parsing benchmark::

    ADEChallengeData2016/                    dataset.root (or the folder that contains it)
      images/training/ADE_train_00000001.jpg … (20,210)   images/validation/ADE_val_*.jpg (2,000)
      annotations/training/ADE_train_00000001.png …       annotations/validation/ADE_val_*.png
      objectInfo150.txt | objectInfo150.csv    optional: Idx, Ratio, Train, Val, Name per class

Annotations are 8-bit PNGs: 0 = "other"/unlabelled, 1..150 = the classes. 0 is read as ignore (255)
and 1..150 as 0..149, as mmseg's ``ADE20KDataset`` (``reduce_zero_label=True``: 0 -> 255, then
every label - 1); any value above 150 is an error. Splits: ``train`` (images/training), ``val``
(images/validation), ``trainval``. An image without its ``<stem>.png`` is an error.

Class names: the first synonym of each row's Name in ``objectInfo150.txt``/``.csv`` (the
devkit/CSAILVision ``sceneparsing`` table; tab- or comma-separated, 150 rows, Idx 1..150) when the
root has one, else :data:`CLASS_NAMES`, mmseg's list (``mmseg/datasets/ade.py``
``ADE20KDataset.METAINFO``), which is that first synonym for every row. Colours: :data:`PALETTE`,
mmseg's (the CSAILVision ``color150`` table).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

from segdeconv.data.base import SegmentationDataset, require_dir
from segdeconv.data.image import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike
from segdeconv.data.masks import label_lut
from segdeconv.errors import data_error

LAYOUT = ("expected root/images/{training,validation}/ADE_*.jpg + root/annotations/{training,"
          "validation}/ADE_*.png, root = ADEChallengeData2016/ or its parent; "
          "see data/README.md#ade20k")
FOLDERS = {"train": "training", "val": "validation"}
INFO_FILES = ("objectInfo150.csv", "objectInfo150.txt")
NUM_CLASSES = 150
# mmseg ADE20KDataset.METAINFO "classes" (trailing spaces stripped), for labels 1..150.
CLASS_NAMES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
]
# mmseg ADE20KDataset.METAINFO "palette", one RRGGBB per class.
_PALETTE_HEX = (
    "787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d "
    "787846 08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 "
    "0907e6 dcdcdc ff095c 7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 "
    "ffc207 ff7a08 00ff14 ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00 "
    "ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff 0bc8c8 ff5200 00fff5 003dff 00ff70 "
    "00ff85 ff0000 ffa300 ff6600 c2ff00 008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 "
    "ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52 "
    "000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900 00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 "
    "08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff "
    "9900ff 47ff00 ff00a3 ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00 "
    "00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff 4700ff 7a00ff 00ffb8 "
    "005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff "
)
PALETTE = [[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in _PALETTE_HEX.split()]


def find_ade_dir(root: Path) -> Path:
    """The folder holding ``images/`` and ``annotations/``: root or root/ADEChallengeData2016."""
    for cand in (root, root / "ADEChallengeData2016"):
        if (cand / "images").is_dir() and (cand / "annotations").is_dir():
            return cand
    raise data_error(root, "has no images/ + annotations/ (looked in ., ADEChallengeData2016/)",
                     f"pass dataset.root=<ADEChallengeData2016 or its parent>; {LAYOUT}")


def read_object_info(path: Path) -> list[str]:
    """The 150 class names of an ``objectInfo150`` table: the first comma-separated synonym of
    each Name (``"building, edifice"`` -> ``"building"``); rows must be Idx 1..150 in order."""
    fix = "restore the file from ADEChallengeData2016.zip, or delete it to use the built-in names"
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    tabs = bool(lines) and "\t" in lines[0]  # the devkit's table is tab-separated (Names hold commas)
    rows = [[c.strip() for c in r] for r in csv.reader(lines, delimiter="\t" if tabs else ",")]
    if not rows or not {"Idx", "Name"} <= set(rows[0]):
        raise data_error(path, f"has no Idx and Name columns (header: {rows[0] if rows else []})", fix)
    i_idx, i_name = rows[0].index("Idx"), rows[0].index("Name")
    body = [r for r in rows[1:] if len(r) > max(i_idx, i_name)]
    idx = [r[i_idx] for r in body]
    if idx != [str(k) for k in range(1, NUM_CLASSES + 1)] or len(body) != len(rows) - 1:
        raise data_error(path, f"lists {len(rows) - 1} rows (Idx {idx[:2]}…{idx[-1:]}), not Idx "
                         f"1..{NUM_CLASSES} in order with a Name each", fix)
    names = [r[i_name].split(",")[0].strip() for r in body]
    if "" in names:
        raise data_error(path, f"has an empty Name at Idx {names.index('') + 1}", fix)
    return names


class ADE20K(SegmentationDataset):
    """ADE20K SceneParsing, 150 classes (label 0 "other" = ignore)."""

    SPLITS = ("train", "val", "trainval")
    UNIONS = {"trainval": ("train", "val")}
    LAYOUT = LAYOUT

    def __init__(self, root: PathLike, split: str = "train",
                 transform: Optional[JointTransform] = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 check: bool = True, skip_missing: bool = False) -> None:
        super().__init__(root, split, transform, IGNORE_INDEX, mean, std)
        self.ade_dir = find_ade_dir(self.root)
        info = next((d / n for d in (self.ade_dir, self.root) for n in INFO_FILES
                     if (d / n).is_file()), None)
        self.class_names = read_object_info(info) if info else list(CLASS_NAMES)
        self.palette = [list(c) for c in PALETTE]
        self.lut = label_lut(NUM_CLASSES, self.ignore_index, void_values=(0,),
                             mapping={raw: raw - 1 for raw in range(1, NUM_CLASSES + 1)})
        images: list[Path] = []
        masks: list[Path] = []
        for s in self.subsplits():
            i, m = self._pairs(FOLDERS[s])
            images, masks = images + i, masks + m
        self._set_pairs(images, masks, check, skip_missing)

    def _pairs(self, folder: str) -> tuple[list[Path], list[Path]]:
        fix = f"unzip ADEChallengeData2016.zip so that it holds images/{folder}/; {LAYOUT}"
        img_dir = require_dir(self.ade_dir / "images" / folder, "ADE20K image folder", fix)
        ann_dir = require_dir(self.ade_dir / "annotations" / folder, "ADE20K annotation folder", fix)
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not images:
            raise data_error(img_dir, "holds no .jpg images", fix)
        return images, [ann_dir / f"{p.stem}.png" for p in images]
