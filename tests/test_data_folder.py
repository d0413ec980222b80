"""SegmentationFolder: users' own images/ + masks/ (generated fixtures)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import dataset_cfg, make_folder, write_png

from segdeconv.data.folder import SegmentationFolder
from segdeconv.errors import ConfigError, DataError

NAMES = ["background", "road", "car"]


def test_split_folders(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3, split="train")
    make_folder(tmp_path, n=2, split="val")
    ds = SegmentationFolder(tmp_path, "train", class_names=NAMES)
    assert len(ds) == 3 and ds.num_classes == 3 and len(ds.palette) == 3
    assert len(SegmentationFolder(tmp_path, "val", class_names=NAMES)) == 2
    image, mask = ds[0]
    assert image.shape == (3, 12, 16) and image.dtype == torch.float32
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) <= {0, 1, 2}


def test_no_split_and_list_files(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3)
    assert len(SegmentationFolder(tmp_path, None, class_names=NAMES)) == 3
    (tmp_path / "val.txt").write_text("img2\n")
    ds = SegmentationFolder(tmp_path, "val", class_names=NAMES)
    assert [p.name for p in ds.image_paths] == ["img2.jpg"]


def test_rgb_masks_with_palette_and_ignore_colour(tmp_path: Path) -> None:
    make_folder(tmp_path, n=1)
    palette = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
    rgb = np.array(palette + [[255, 255, 255]], np.uint8)[np.array([[0, 1, 2, 3]] * 12)]
    write_png(tmp_path / "masks" / "img0.png", np.pad(rgb, ((0, 0), (0, 12), (0, 0))))
    ds = SegmentationFolder(tmp_path, class_names=NAMES, palette=palette, mask_format="rgb",
                            ignore_colors=[[255, 255, 255]])
    assert ds.load_mask(0)[0, :4].tolist() == [0, 1, 2, 255]


def test_mask_suffix(tmp_path: Path) -> None:
    make_folder(tmp_path, n=2)
    for p in (tmp_path / "masks").iterdir():
        p.rename(p.with_name(p.stem + "_mask.png"))
    ds = SegmentationFolder(tmp_path, class_names=NAMES, mask_suffix="_mask")
    assert [p.name for p in ds.mask_paths] == ["img0_mask.png", "img1_mask.png"]


def test_config_problems(tmp_path: Path) -> None:
    make_folder(tmp_path)
    with pytest.raises(ConfigError, match="class_names is required"):
        SegmentationFolder(tmp_path)
    with pytest.raises(ConfigError, match="num_classes=4 but"):
        SegmentationFolder(tmp_path, class_names=NAMES, num_classes=4)
    with pytest.raises(ConfigError, match="2 colours for 3 classes"):
        SegmentationFolder(tmp_path, class_names=NAMES, palette=[[0, 0, 0], [1, 1, 1]])


def test_mask_without_image(tmp_path: Path) -> None:
    make_folder(tmp_path)
    write_png(tmp_path / "masks" / "stray.png", np.zeros((12, 16)))
    with pytest.raises(DataError, match=r"stray.png: mask without image.*fix:"):
        SegmentationFolder(tmp_path, class_names=NAMES)


def test_yaml_nodes(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    make_folder(tmp_path, n=2, split="train", size=(40, 50))
    make_folder(tmp_path, n=1, split="val", size=(40, 50))
    cfg = dataset_cfg("folder", tmp_path, class_names=NAMES, num_classes=3, image_size=[32, 32])
    image, mask = instantiate(cfg.dataset.train)[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    image, mask = instantiate(cfg.dataset.val)[0]
    assert mask.shape == (64, 64) and (mask[40:] == 255).all()
