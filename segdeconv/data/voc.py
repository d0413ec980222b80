"""Pascal VOC 2012 segmentation, plus the SBD-augmented ``train_aug`` set.

``root`` may be the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself, or ``VOC2012/``::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png        palette ('P') PNGs: index = class id
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

Masks are read as palette *indices* (0..20, 255 = border/ignore), never converted to RGB.

``split="train_aug"`` (10,582 ids) is the usual SBD-augmented training set: SBD train+val
(Hariharan et al. 2011) plus VOC12 train, **minus every VOC12 val id**, so that training on it
and validating on VOC12 val (1,449, always from ``SegmentationClass``) never overlap; the
constructor verifies this and refuses a list that contains val ids. Its id list
``train_aug.txt`` is searched in ``lists/``, the root and ``ImageSets/Segmentation/`` (plain ids,
or DeepLab's ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` lines). Masks come from
``SegmentationClassAug/<id>.png`` (``mask_source="aug_png"``) or are built like
SegmentationClassAug from SBD (``"sbd_mat"``): the VOC ``SegmentationClass`` PNG where one exists
(it has the 255 borders), else SBD's ``cls/<id>.mat`` (``GTcls.Segmentation``, read with scipy).
``"auto"`` prefers SegmentationClassAug.

torchvision's ``VOCSegmentation`` is not reused: it hard-codes ``root/VOCdevkit/VOC2012``, knows no
train_aug and reports a bad layout only as "Dataset not found or corrupted"; the file naming
conventions (``ImageSets/Segmentation/<split>.txt``, ``<id>.jpg``/``<id>.png``) are the same.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import numpy as np

from segdeconv.data.base import SegmentationDataset, bitget_palette, read_list_file, refuse_overlap
from segdeconv.data.image import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, JointTransform, PathLike
from segdeconv.data.masks import label_lut, read_index_mask
from segdeconv.errors import ConfigError, data_error

CLASS_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
PALETTE = bitget_palette(len(CLASS_NAMES))
LAYOUT = ("expected root/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}"
          " (root may also be VOCdevkit/ or VOC2012/); see data/README.md#pascal-voc-2012")
SBD_CLS = ("benchmark_RELEASE/dataset/cls", "SBD/dataset/cls", "sbd/dataset/cls", "dataset/cls",
           "cls")


def find_voc_dir(root: Path) -> Path:
    """The folder holding ``JPEGImages`` among root, root/VOC2012, root/VOCdevkit/VOC2012."""
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise data_error(root, "has no JPEGImages/ (looked in ., VOC2012/, VOCdevkit/VOC2012/)",
                     f"pass dataset.root=<folder containing VOCdevkit>; {LAYOUT}")


def read_sbd_mat(path: PathLike) -> np.ndarray:
    """SBD ``cls/<id>.mat`` -> HxW uint8 class ids (``GTcls.Segmentation``)."""
    from scipy.io import loadmat  # only train_aug from SBD needs scipy

    try:
        seg = loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise data_error(path, f"is not a readable SBD cls .mat file ({e})",
                         "re-extract benchmark_RELEASE/dataset/cls from the SBD tarball") from None
    return np.asarray(seg, dtype=np.uint8)


def read_ids(path: Path, fix: str) -> list[str]:
    """Ids from a split list: plain ids, or the stem of each line's first path."""
    return [PurePosixPath(r[0].replace("\\", "/")).stem for r in read_list_file(path, fix)]


class VOCSegmentation(SegmentationDataset):
    """Pascal VOC 2012 segmentation (21 classes, 255 = ignore); splits train (1,464), val (1,449),
    trainval (2,913) and train_aug (10,582)."""

    SPLITS = ("train", "val", "trainval", "train_aug")
    LAYOUT = LAYOUT

    def __init__(self, root: PathLike, split: str = "train",
                 transform: Optional[JointTransform] = None, mask_source: str = "auto",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 check: bool = True, skip_missing: bool = False) -> None:
        super().__init__(root, split, transform, IGNORE_INDEX, mean, std)
        if mask_source not in ("auto", "aug_png", "sbd_mat"):
            raise ConfigError(f"mask_source={mask_source!r}; use auto, aug_png or sbd_mat")
        self.voc_dir = find_voc_dir(self.root)
        self.class_names, self.palette = list(CLASS_NAMES), [list(c) for c in PALETTE]
        self.lut = label_lut(len(CLASS_NAMES), self.ignore_index)
        if split == "train_aug":
            ids, masks = self._train_aug(mask_source)
        else:
            ids = read_ids(self._seg_list(split), f"restore ImageSets/Segmentation/{split}.txt "
                           "from VOCtrainval_11-May-2012.tar")
            masks = [self.voc_dir / "SegmentationClass" / f"{i}.png" for i in ids]
        images = [self.voc_dir / "JPEGImages" / f"{i}.jpg" for i in ids]
        self._set_pairs(images, masks, check, skip_missing)

    def _seg_list(self, name: str) -> Path:
        return self.voc_dir / "ImageSets" / "Segmentation" / f"{name}.txt"

    def _bases(self) -> list[Path]:
        out: list[Path] = []
        for b in (self.root, self.voc_dir, self.voc_dir.parent, self.voc_dir.parent.parent):
            if b not in out:
                out.append(b)
        return out

    def _find(self, rel: Sequence[str], kind: str) -> Optional[Path]:
        for b in self._bases():
            for r in rel:
                if (p := b / r).exists() and p.is_dir() == (kind == "dir"):
                    return p
        return None

    def _train_aug(self, mask_source: str) -> tuple[list[str], list[Path]]:
        """train_aug ids and their mask files; refuses lists that overlap VOC12 val."""
        lst = self._find(("lists/train_aug.txt", "train_aug.txt",
                          "ImageSets/Segmentation/train_aug.txt"), "file")
        if lst is None:
            raise data_error(self.root, "has no train_aug.txt (looked in lists/, ./, "
                             "ImageSets/Segmentation/)", "put the standard 10,582-id "
                             "train_aug.txt in <root>/lists/; see data/README.md")
        ids = read_ids(lst, "use the standard 10,582-id train_aug.txt")
        val_list = self._seg_list("val")
        if val_list.is_file():
            refuse_overlap({str(lst): ids, "VOC12 val ids": read_ids(val_list, "")},
                           "use the standard train_aug.txt (SBD train+val + VOC12 train, minus VOC12 val)")
        aug = self._find(("SegmentationClassAug",), "dir")
        sbd = self._find(SBD_CLS, "dir")
        if mask_source == "aug_png" or (mask_source == "auto" and aug is not None):
            if aug is None:
                raise data_error(self.root, "has no SegmentationClassAug/ folder",
                                 "unpack SegmentationClassAug.zip next to VOCdevkit/")
            return ids, [aug / f"{i}.png" for i in ids]
        if sbd is None:
            raise data_error(self.root, "has neither SegmentationClassAug/ nor SBD "
                             "benchmark_RELEASE/dataset/cls/", "unpack one of them next to "
                             "VOCdevkit/ (see data/README.md#train_aug)")
        voc = self.voc_dir / "SegmentationClass"
        return ids, [voc / f"{i}.png" if (voc / f"{i}.png").is_file() else sbd / f"{i}.mat"
                     for i in ids]

    def read_raw_mask(self, path: Path) -> np.ndarray:
        return read_sbd_mat(path) if path.suffix == ".mat" else read_index_mask(path)
