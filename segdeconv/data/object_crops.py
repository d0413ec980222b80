"""Object-centred crops for DeconvNet's first training stage (Noh, Hong & Han 2015, §4.1 "two-stage
training"): "we crop object instances using ground-truth annotations so that an object is centred at
the cropped bounding box", which limits the variation of object location and size; stage 2 then
trains on whole images. (The released ``training/001_stage_1`` prototxt reads such pre-cropped image
lists, resizes each crop to 250×250, takes a random 224×224 crop and mirrors: the ``noh_train`` preset.)

:class:`ObjectCrops` wraps a segmentation dataset and yields one item per object instance: the image
and mask cropped to the instance's bounding box enlarged ``box_scale`` times around its centre
(clipped to the image), then the wrapper's own joint ``transform``. Boxes come, per image, from
(``source="auto"`` tries them in this order):

* ``xml``: VOC ``Annotations/<id>.xml`` ``<object><bndbox>`` (1-based inclusive pixel boxes);
* ``instances``: VOC ``SegmentationObject/<id>.png`` (palette index = instance id, 0 = none, 255 = border);
* ``components``: the 8-connected components of each non-background class of the mask, those of
  fewer than ``min_area`` pixels dropped (for masks-only data such as SBD's ``train_aug``).
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from scipy import ndimage

from segdeconv.data.base import apply_joint
from segdeconv.data.image import JointTransform, to_tensors
from segdeconv.data.masks import read_index_mask
from segdeconv.errors import ConfigError, data_error

log = logging.getLogger("segdeconv")
Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive ends)
SOURCES = ("auto", "xml", "instances", "components")


def xml_boxes(path: Path, shape: tuple[int, int]) -> list[Box]:
    """VOC ``<object><bndbox>`` boxes of ``path`` (1-based inclusive) as 0-based half-open boxes."""
    try:
        objects = ET.parse(path).getroot().findall("object")
    except ET.ParseError as e:
        raise data_error(path, f"is not a readable VOC annotation ({e})", "re-copy it from the VOC devkit") from None
    boxes = []
    for obj in objects:
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (int(float(bb.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((max(0, y0 - 1), max(0, x0 - 1), min(shape[0], y1), min(shape[1], x1)))
    return [b for b in boxes if b[2] > b[0] and b[3] > b[1]]


def instance_boxes(instances: np.ndarray, ignore_index: int = 255) -> list[Box]:
    """Bounding boxes of every instance id (> 0, ≠ ignore) of a ``SegmentationObject`` mask."""
    ids = [int(v) for v in np.unique(instances) if v not in (0, ignore_index)]
    return [_box(instances == v) for v in ids]


def component_boxes(mask: np.ndarray, ignore_index: int = 255, min_area: int = 64,
                    background: Optional[int] = 0) -> list[Box]:
    """Boxes of the 8-connected components of each class (not ``background``/ignore) with ≥ ``min_area`` px."""
    boxes = []
    for c in (int(v) for v in np.unique(mask) if v != ignore_index and v != background):
        labels, _ = ndimage.label(mask == c, structure=np.ones((3, 3), bool))
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is not None and int((labels[sl] == k).sum()) >= min_area:
                boxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
    return boxes


def _box(m: np.ndarray) -> Box:
    ys, xs = np.nonzero(m)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def enlarge(box: Box, scale: float, shape: tuple[int, int]) -> Box:
    """``box`` scaled ``scale``× about its centre, clipped to an image of ``shape`` (H, W)."""
    y0, x0, y1, x1 = box
    cy, cx, hh, hw = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) * scale / 2, (x1 - x0) * scale / 2
    return (max(0, int(round(cy - hh))), max(0, int(round(cx - hw))),
            min(shape[0], int(round(cy + hh))), min(shape[1], int(round(cx + hw))))


class ObjectCrops(torch.utils.data.Dataset):
    """One item per object instance of ``dataset`` (see the module docstring)."""

    def __init__(self, dataset: Any, transform: Optional[JointTransform] = None, box_scale: float = 1.2,
                 source: str = "auto", min_area: int = 64) -> None:
        if source not in SOURCES:
            raise ConfigError(f"dataset.train.source={source!r} is unknown; use one of {', '.join(SOURCES)}")
        if not box_scale >= 1.0:
            raise ConfigError(f"dataset.train.box_scale={box_scale} must be ≥ 1 (1 = the tight box)")
        if transform is not None:
            from segdeconv.data.transforms import check_transform

            check_transform(transform, dataset.ignore_index)
        self.dataset, self.transform, self.box_scale = dataset, transform, float(box_scale)
        self.source, self.min_area = source, int(min_area)
        self.items: list[tuple[int, Box]] = []
        self.counts = {"xml": 0, "instances": 0, "components": 0}
        for i in range(len(dataset)):
            kind, boxes = self._boxes(i)
            self.counts[kind] += len(boxes)
            self.items += [(i, b) for b in boxes]
        if not self.items:
            raise data_error(dataset.root, f"holds no object instance in split {dataset.split!r} (source={source})",
                             "check the masks/annotations, or train on whole images without ObjectCrops")
        log.info("object crops: %d instances from %d images (%s)", len(self.items), len(dataset),
                 ", ".join(f"{k} {v}" for k, v in self.counts.items() if v))

    def _boxes(self, i: int) -> tuple[str, list[Box]]:
        ds, image = self.dataset, Path(self.dataset.image_paths[i])
        voc = image.parent.parent
        xml, inst = voc / "Annotations" / f"{image.stem}.xml", voc / "SegmentationObject" / f"{image.stem}.png"
        mask = ds.load_mask(i)
        if self.source in ("auto", "xml") and (xml.is_file() or self.source == "xml"):
            if not xml.is_file():
                raise data_error(xml, "not found (source=xml)", "add VOC Annotations/ or use source=auto")
            return "xml", xml_boxes(xml, mask.shape)
        if self.source in ("auto", "instances") and (inst.is_file() or self.source == "instances"):
            if not inst.is_file():
                raise data_error(inst, "not found (source=instances)", "add SegmentationObject/ or use source=auto")
            return "instances", instance_boxes(read_index_mask(inst), ds.ignore_index)
        return "components", component_boxes(mask, ds.ignore_index, self.min_area)

    # the dataset contract, delegated
    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    @property
    def palette(self) -> list[list[int]]:
        return self.dataset.palette

    @property
    def ignore_index(self) -> int:
        return self.dataset.ignore_index

    def __len__(self) -> int:
        return len(self.items)

    def crop(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance ``k``'s (image, mask) crop before the transform."""
        i, box = self.items[k]
        image, mask = self.dataset.load_pair(i)
        y0, x0, y1, x1 = enlarge(box, self.box_scale, mask.shape)
        return np.ascontiguousarray(image[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1])

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = apply_joint(self.transform, *self.crop(k))
        return to_tensors(image, mask, self.dataset.mean, self.dataset.std)

    def __repr__(self) -> str:
        return f"ObjectCrops({self.dataset!r}, instances={len(self)}, box_scale={self.box_scale})"


def voc_object_crops(root: str, split: str = "train", mask_source: str = "auto",
                     transform: Optional[JointTransform] = None, box_scale: float = 1.2, source: str = "auto",
                     min_area: int = 64) -> ObjectCrops:
    """:class:`ObjectCrops` of :class:`~segdeconv.data.voc.VOCSegmentation` (same arguments as its
    ``dataset.train`` node, so an experiment swaps only ``_target_`` and adds the crop options)."""
    from segdeconv.data.voc import VOCSegmentation

    return ObjectCrops(VOCSegmentation(root, split, mask_source=mask_source, transform=None), transform, box_scale,
                       source, min_area)
