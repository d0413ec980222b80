"""Cityscapes (Cordts et al., CVPR 2016) with the 19 evaluation classes, fine or coarse labels::

    root/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    root/gtCoarse/{train,train_extra,val}/<city>/<…>_gtCoarse_labelIds.png   (mode="coarse")
    root/leftImg8bit/train_extra/<city>/…                                     (mode="coarse" only)

Masks are the ``*_labelIds.png`` files (label ids 0..33) mapped to the 19 train ids with the official
table (cityscapesScripts ``cityscapesscripts/helpers/labels.py``: ``trainId`` 0..18, 255 for the
classes ignored in evaluation); any other value is an error. Splits: train (2,975), val (500),
test (1,525; its public labels are all void), train_extra (19,998, coarse only), trainval.

Reused from torchvision: ``torchvision.datasets.Cityscapes`` lists the pairs (per split and city,
every ``leftImg8bit`` file and its ``<city>_…_<mode>_labelIds.png`` target) and carries the
labels.py table (``Cityscapes.classes``: name, id, train_id, …, color), from which the class names,
palette and lookup table are built. Not reused: its handling of a missing folder (it unpacks any
``*_trainvaltest.zip`` found in root *into* root, else raises a bare RuntimeError) — the folders are
checked first, so it never writes into the dataset — and its pair order (``os.listdir``, arbitrary),
which is sorted here. torchvision is imported only when a Cityscapes dataset is built.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Sequence

from segdeconv.data.base import SegmentationDataset, require_dir
from segdeconv.data.image import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike
from segdeconv.data.masks import label_lut
from segdeconv.errors import ConfigError, data_error

LAYOUT = ("expected root/leftImg8bit/<split>/<city>/*_leftImg8bit.png + root/gtFine/<split>/<city>/"
          "*_gtFine_labelIds.png (gtCoarse/ for mode=coarse); see data/README.md#cityscapes")
GT_DIRS = {"fine": "gtFine", "coarse": "gtCoarse"}
MODE_SPLITS = {"fine": ("train", "val", "test"), "coarse": ("train", "train_extra", "val")}
IMAGE_SUFFIX = "_leftImg8bit.png"
ARCHIVES = {"leftImg8bit": "leftImg8bit_trainvaltest.zip (train_extra: leftImg8bit_trainextra.zip)",
            "gtFine": "gtFine_trainvaltest.zip", "gtCoarse": "gtCoarse.zip"}


@functools.lru_cache(maxsize=1)
def label_table() -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...], dict[int, int]]:
    """``(19 class names, their colours, {labelId: trainId})`` from cityscapesScripts' labels.py,
    as torchvision ships it (``torchvision.datasets.Cityscapes.classes``)."""
    from torchvision.datasets import Cityscapes as TorchvisionCityscapes

    table = TorchvisionCityscapes.classes
    evaluated = sorted((c for c in table if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id)
    mapping = {c.id: c.train_id for c in table if c.id >= 0}  # license plate (id -1) is never stored
    return (tuple(c.name for c in evaluated), tuple(tuple(c.color) for c in evaluated), mapping)


class Cityscapes(SegmentationDataset):
    """Cityscapes street scenes, 19 classes (255 = void / ignored in evaluation)."""

    SPLITS = ("train", "val", "test", "train_extra", "trainval")
    UNIONS = {"trainval": ("train", "val")}
    LAYOUT = LAYOUT

    def __init__(self, root: PathLike, split: str = "train",
                 transform: Optional[JointTransform] = None, mode: str = "fine",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 check: bool = True, skip_missing: bool = False) -> None:
        super().__init__(root, split, transform, IGNORE_INDEX, mean, std)
        if mode not in MODE_SPLITS:
            raise ConfigError(f"dataset.mode={mode!r}; use fine (gtFine) or coarse (gtCoarse)")
        wrong = [s for s in self.subsplits() if s not in MODE_SPLITS[mode]]
        if wrong:
            other = next(m for m in MODE_SPLITS if m != mode)
            raise ConfigError(f"split={split!r} has no {GT_DIRS[mode]} annotations; fix: use one of "
                              f"{', '.join(MODE_SPLITS[mode])} (or dataset.mode={other})")
        self.mode = mode
        names, colours, mapping = label_table()
        self.class_names, self.palette = list(names), [list(c) for c in colours]
        self.lut = label_lut(len(names), self.ignore_index, mapping=mapping)
        images: list[Path] = []
        masks: list[Path] = []
        for s in self.subsplits():
            i, m = self._pairs(s)
            images, masks = images + i, masks + m
        self._set_pairs(images, masks, check, skip_missing)

    def _folder(self, top: str, split: str) -> Path:
        return require_dir(self.root / top / split, f"Cityscapes {split} folder",
                           f"unzip {ARCHIVES[top]} into {self.root} (it holds {top}/); {LAYOUT}")

    def _pairs(self, split: str) -> tuple[list[Path], list[Path]]:
        """Sorted (image, labelIds mask) paths of one plain split, listed by torchvision."""
        from torchvision.datasets import Cityscapes as TorchvisionCityscapes

        img_dir = self._folder("leftImg8bit", split)
        self._folder(GT_DIRS[self.mode], split)  # both present: torchvision never unpacks archives
        try:
            tv = TorchvisionCityscapes(str(self.root), split=split, mode=self.mode, target_type="semantic")
        except OSError as e:  # a plain file where a <city>/ folder is expected
            raise data_error(e.filename or img_dir, f"is not a city folder ({e.strerror})",
                             f"{img_dir} must hold only <city>/ folders; move other files out") from None
        pairs = sorted((Path(i), Path(t[0])) for i, t in zip(tv.images, tv.targets)
                       if i.endswith(IMAGE_SUFFIX))
        if not pairs:
            raise data_error(img_dir, f"holds no <city>/*{IMAGE_SUFFIX} images", f"re-extract "
                             f"{ARCHIVES['leftImg8bit']} into {self.root}; {LAYOUT}")
        return [i for i, _ in pairs], [m for _, m in pairs]
