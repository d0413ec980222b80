"""CamVid adapter: the real SegNet-layout copy plus generated 32-class / odd-list fixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import CAMVID, dataset_cfg, make_camvid, needs, rand_image, write_png
from segdeconv.data.camvid import CLASS_NAMES, GROUP_11, PALETTE, CamVid
from segdeconv.errors import ConfigError

real = needs(CAMVID)


@real
@pytest.mark.parametrize("split,count", [("train", 367), ("val", 101), ("trainval", 468)])
def test_real_counts(split: str, count: int) -> None:
    ds = CamVid(CAMVID, split)
    assert len(ds) == len(ds.image_paths) == len(ds.mask_paths) == count
    assert ds.class_names == CLASS_NAMES and ds.palette == PALETTE and ds.num_classes == 11
    assert ds.ignore_index == 255 and ds.label_format == "segnet"


@real
def test_real_item_contract() -> None:
    image, mask = CamVid(CAMVID, "val")[0]
    assert image.dtype == torch.float32 and image.shape == (3, 360, 480)
    assert mask.dtype == torch.int64 and mask.shape == (360, 480)
    assert -2.2 < float(image.min()) and float(image.max()) < 2.7  # ImageNet-normalized


@real
def test_real_label_set_and_void() -> None:
    ds = CamVid(CAMVID, "trainval")
    seen: set[int] = set()
    for i in range(len(ds)):
        seen |= set(np.unique(ds.load_mask(i)).tolist())
    assert seen <= set(range(11)) | {255} and 255 in seen
    raw = np.asarray(Image.open(ds.mask_paths[0]))
    assert np.array_equal(ds.load_mask(0) == 255, raw == 11)  # void 11 -> ignore, nothing else


@real
def test_real_yaml_nodes_take_split() -> None:
    from hydra.utils import instantiate

    cfg = dataset_cfg("camvid", CAMVID)
    train = instantiate(cfg.dataset.train)
    image, mask = train[5]
    assert image.shape == (3, 360, 480) and mask.shape == (360, 480)
    assert len(instantiate(cfg.dataset.val, split="trainval")) == 468


def test_absolute_list_paths_resolved_by_last_two_components(tmp_path: Path) -> None:
    make_camvid(tmp_path, list_prefix="/SegNet/CamVid/")
    ds = CamVid(tmp_path, "train")
    assert ds.image_paths[0] == tmp_path / "train" / "train_000.png"
    assert ds.mask_paths[0] == tmp_path / "trainannot" / "train_000.png"
    assert ds[1][1].shape == (12, 16)


def test_folders_without_list_file_are_paired_by_name(tmp_path: Path) -> None:
    make_camvid(tmp_path, splits=("test",), n=3)
    (tmp_path / "test.txt").unlink()
    ds = CamVid(tmp_path, "test")
    assert [p.name for p in ds.image_paths] == [p.name for p in ds.mask_paths] and len(ds) == 3


# ----------------------------------------------------------------------------------------------
# 32-class colour-coded CamVid
# ----------------------------------------------------------------------------------------------
ROWS = [("Sky", (128, 128, 128)), ("Wall", (64, 192, 0)), ("Void", (0, 0, 0)),
        ("SUVPickupTruck", (64, 128, 192)), ("Bicyclist", (0, 128, 192))]


def _colour_camvid(root: Path, kaggle: bool = True) -> np.ndarray:
    """One 4x5 frame whose colour label uses every row of ROWS; returns the row-index map."""
    rows = np.array([[0, 1, 2, 3, 4]] * 4)
    rgb = np.array([c for _, c in ROWS], np.uint8)[rows]
    (root / "class_dict.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "class_dict.csv").write_text("name,r,g,b\n" + "".join(
        f"{n},{r},{g},{b}\n" for n, (r, g, b) in ROWS))
    if kaggle:
        Image.fromarray(rand_image(4, 5)).save(_d(root / "train") / "f001.png")
        write_png(root / "train_labels" / "f001_L.png", rgb)
    else:
        Image.fromarray(rand_image(4, 5)).save(_d(root / "701_StillsRaw_full") / "f001.png")
        write_png(root / "LabeledApproved_full" / "f001_L.png", rgb)
        (root / "train.txt").write_text("/SegNet/CamVid/train/f001.png "
                                        "/SegNet/CamVid/trainannot/f001.png\n")
    return rows


def _d(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.mark.parametrize("kaggle", [True, False])
def test_colour_labels_map_to_segnet_11(tmp_path: Path, kaggle: bool) -> None:
    _colour_camvid(tmp_path, kaggle)
    ds = CamVid(tmp_path, "train")
    assert ds.label_format == "rgb" and ds.class_names == CLASS_NAMES
    idx = {n: CLASS_NAMES.index(g) for n, g in GROUP_11.items() if g}
    expected = [idx["Sky"], idx["Wall"], 255, idx["SUVPickupTruck"], idx["Bicyclist"]]
    assert ds.load_mask(0)[0].tolist() == expected  # Wall->Building, SUV->Car, Void->ignore


def test_colour_labels_kept_with_or_without_void(tmp_path: Path) -> None:
    rows = _colour_camvid(tmp_path)
    keep_all = CamVid(tmp_path, "train", num_classes=len(ROWS))
    assert keep_all.class_names == [n for n, _ in ROWS]
    assert np.array_equal(keep_all.load_mask(0), rows)
    no_void = CamVid(tmp_path, "train", num_classes=len(ROWS) - 1)
    assert "Void" not in no_void.class_names
    assert no_void.load_mask(0)[0].tolist() == [0, 1, 255, 2, 3]
    with pytest.raises(ConfigError, match="num_classes=7"):
        CamVid(tmp_path, "train", num_classes=7)


def test_segnet_layout_rejects_32_classes(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    with pytest.raises(ConfigError, match="11 classes"):
        CamVid(tmp_path, "train", num_classes=32)
