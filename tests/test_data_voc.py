"""Pascal VOC adapter: the real 5-pair sample (+ full SegmentationClassAug) and SBD fixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import VOC_SAMPLE, dataset_cfg, needs, rand_image, write_png
from PIL import Image

from segdeconv.data.voc import CLASS_NAMES, PALETTE, VOCSegmentation
from segdeconv.errors import DataError

real = needs(VOC_SAMPLE)


@real
@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_real_root_detection(sub: str) -> None:
    ds = VOCSegmentation(VOC_SAMPLE / sub, "train")
    assert ds.voc_dir == VOC_SAMPLE / "VOCdevkit" / "VOC2012" and len(ds) == 3


@real
@pytest.mark.parametrize("split,count", [("train", 3), ("val", 2), ("trainval", 5)])
def test_real_counts(split: str, count: int) -> None:
    ds = VOCSegmentation(VOC_SAMPLE, split)
    assert len(ds) == count and ds.num_classes == 21 and ds.class_names == CLASS_NAMES
    assert ds.palette[:3] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]] and ds.palette == PALETTE


@real
def test_real_palette_masks_decode_to_indices_with_border() -> None:
    ds = VOCSegmentation(VOC_SAMPLE, "val")
    i = [p.stem for p in ds.mask_paths].index("2007_000129")
    raw = Image.open(ds.mask_paths[i])
    assert raw.mode == "P" and raw.getpalette()[3:6] == PALETTE[1]  # the standard colour map
    image, mask = ds[i]
    assert image.shape == (3, 500, 334) and mask.dtype == torch.int64
    assert sorted(mask.unique().tolist()) == [0, 2, 15, 255]  # bicycle, person, 255 border
    assert np.array_equal(mask.numpy(), np.asarray(raw))


@real
def test_real_train_aug_needs_images_or_skip_missing() -> None:
    with pytest.raises(DataError, match="10578 more.*skip_missing"):
        VOCSegmentation(VOC_SAMPLE, "train_aug")
    with pytest.warns(UserWarning, match="skipping 10579 of 10582"):
        ds = VOCSegmentation(VOC_SAMPLE, "train_aug", skip_missing=True)
    assert {p.stem for p in ds.image_paths} == {"2011_000003", "2011_000006", "2011_000025"}
    assert all(p.parent.name == "SegmentationClassAug" for p in ds.mask_paths)
    assert set(np.unique(ds.load_mask(0)).tolist()) <= set(range(21)) | {255}


@real
def test_real_yaml_val_pads_whole_image_with_ignore() -> None:
    from hydra.utils import instantiate

    val = instantiate(dataset_cfg("voc", VOC_SAMPLE).dataset.val)
    raw = val.load_mask(0)
    image, mask = val[0]
    h, w = raw.shape
    assert mask.shape == (512, 512) and image.shape == (3, 512, 512)
    assert np.array_equal(mask[:h, :w].numpy(), raw)  # top-left: original pixels untouched
    assert (mask[h:] == 255).all() and (mask[:, w:] == 255).all()
    assert image[:, h:, w:].abs().max() < 0.05  # mean-colour padding ~ 0 after normalization
    train = instantiate(dataset_cfg("voc", VOC_SAMPLE).dataset.train)
    assert train[0][0].shape == (3, 224, 224)


def _voc_with_sbd(root: Path) -> Path:
    """VOC2012 with one VOC-annotated id, one SBD-only id (cls/*.mat), and a train_aug list."""
    from scipy.io import savemat

    voc = root / "VOCdevkit" / "VOC2012"
    for i in ("2008_000001", "2008_000002", "2008_000003"):
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rand_image(6, 8)).save(voc / "JPEGImages" / f"{i}.jpg")
    voc_mask = np.full((6, 8), 255, np.uint8)
    voc_mask[1:5, 1:7] = 3
    write_png(voc / "SegmentationClass" / "2008_000001.png", voc_mask, palette=sum(PALETTE, []))
    write_png(voc / "SegmentationClass" / "2008_000003.png", voc_mask, palette=sum(PALETTE, []))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2008_000003\n")
    sbd = root / "benchmark_RELEASE" / "dataset" / "cls"
    sbd.mkdir(parents=True)
    seg = np.zeros((6, 8), np.uint8)
    seg[:, 4:] = 12
    savemat(sbd / "2008_000002.mat", {"GTcls": {"Segmentation": seg, "CategoriesPresent": [12]}})
    (root / "lists").mkdir()
    (root / "lists" / "train_aug.txt").write_text(
        "/JPEGImages/2008_000001.jpg /SegmentationClassAug/2008_000001.png\n2008_000002\n")
    return root


def test_train_aug_from_sbd_mat_prefers_voc_png(tmp_path: Path) -> None:
    ds = VOCSegmentation(_voc_with_sbd(tmp_path), "train_aug")
    assert [p.suffix for p in ds.mask_paths] == [".png", ".mat"]
    assert sorted(np.unique(ds.load_mask(0)).tolist()) == [3, 255]
    assert sorted(np.unique(ds.load_mask(1)).tolist()) == [0, 12]
    image, mask = ds[1]
    assert image.shape == (3, 6, 8) and int(mask[0, 7]) == 12


def test_train_aug_may_not_contain_val_ids(tmp_path: Path) -> None:
    root = _voc_with_sbd(tmp_path)
    (root / "lists" / "train_aug.txt").write_text("2008_000002\n2008_000003\n")
    with pytest.raises(DataError, match="train_aug.txt: contains 1 VOC12 val ids.*2008_000003"):
        VOCSegmentation(root, "train_aug")


def test_train_aug_without_mask_source(tmp_path: Path) -> None:
    root = _voc_with_sbd(tmp_path)
    with pytest.raises(DataError, match="SegmentationClassAug"):
        VOCSegmentation(root, "train_aug", mask_source="aug_png")
