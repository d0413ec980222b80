"""Cityscapes adapter on generated trees in the official layout (leftImg8bit/ + gtFine/ or gtCoarse/)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import tree_digest
from data_helpers import check_data_cli, dataset_cfg, make_cityscapes, smoke_train, write_png
from test_data_errors import one_error

from segdeconv.data.cityscapes import Cityscapes, label_table
from segdeconv.errors import ConfigError


def test_pairs_are_listed_per_city_sorted_with_their_labelids_mask(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path, n=4)
    ds = Cityscapes(root, "train")
    assert len(ds) == 4 and ds.image_paths == sorted(ds.image_paths)
    for img, mask in zip(ds.image_paths, ds.mask_paths):
        city, stem = img.parent.name, img.name[: -len("_leftImg8bit.png")]
        assert img.parent == root / "leftImg8bit" / "train" / city
        assert mask == root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png"
    assert {p.parent.name for p in ds.image_paths} == {"aachen", "bremen"}
    assert len(Cityscapes(root, "trainval")) == 8


def test_label_ids_map_to_the_19_train_ids_and_void_to_255(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path, splits=("val",), n=1)
    ds = Cityscapes(root, "val")
    # unlabeled 0, ego vehicle 1, road 7, sidewalk 8, parking 9 (void), car 26, caravan 29 (void), bicycle 33
    write_png(ds.mask_paths[0], np.tile([0, 1, 7, 8, 9, 26, 29, 33], (32, 8)))  # 32x64, as the image
    image, mask = ds.load_pair(0)
    assert image.shape == (32, 64, 3) and mask.shape == (32, 64)
    assert mask[0, :8].tolist() == [255, 255, 0, 1, 255, 13, 255, 18]
    assert np.array_equal(mask, np.tile(mask[0, :8], (32, 8)))


def test_label_id_above_33_is_an_error_naming_the_mask(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path, splits=("val",), n=1)
    ds = Cityscapes(root, "val")
    write_png(ds.mask_paths[0], np.full((32, 64), 34))
    assert "[34]" in one_error(lambda: ds.load_mask(0), ds.mask_paths[0].name)


def test_class_table_is_cityscapesscripts_and_matches_the_yaml(tmp_path: Path) -> None:
    names, colours, mapping = label_table()
    assert len(names) == 19 and names[:3] == ("road", "sidewalk", "building") and names[-1] == "bicycle"
    assert colours[0] == (128, 64, 128) and colours[13] == (0, 0, 142)  # road, car
    assert sorted(mapping) == list(range(34)) and sum(t != 255 for t in mapping.values()) == 19
    cfg = dataset_cfg("cityscapes", tmp_path).dataset
    ds = Cityscapes(make_cityscapes(tmp_path, splits=("train",), n=1), "train")
    assert list(cfg.class_names) == ds.class_names and [list(c) for c in cfg.palette] == ds.palette
    assert cfg.num_classes == ds.num_classes == 19


def test_coarse_mode_reads_gtcoarse_and_train_extra(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path, splits=("train_extra",), n=2, mode="coarse")
    ds = Cityscapes(root, "train_extra", mode="coarse")
    assert len(ds) == 2 and all(p.name.endswith("_gtCoarse_labelIds.png") for p in ds.mask_paths)
    assert set(np.unique(ds.load_mask(0)).tolist()) <= set(range(19)) | {255}


@pytest.mark.parametrize("split,mode,words", [("train_extra", "fine", "no gtFine annotations"),
                                              ("test", "coarse", "no gtCoarse annotations"),
                                              ("train", "medium", "dataset.mode='medium'")])
def test_split_must_exist_for_the_mode(tmp_path: Path, split: str, mode: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Cityscapes(make_cityscapes(tmp_path), split, mode=mode)


def test_missing_split_folder_names_it_and_the_archive(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path, splits=("train",))
    msg = one_error(lambda: Cityscapes(root, "val"), str(root / "leftImg8bit" / "val"))
    assert "leftImg8bit_trainvaltest.zip" in msg


def test_archives_in_root_are_never_unpacked(tmp_path: Path) -> None:
    """torchvision's Cityscapes would extract these zips into root; the adapter stops first."""
    for name, member in (("leftImg8bit_trainvaltest.zip", "leftImg8bit/train/x/README"),
                         ("gtFine_trainvaltest.zip", "gtFine/train/x/README")):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr(member, "would be unpacked into the dataset folder")
    before = tree_digest(tmp_path)
    one_error(lambda: Cityscapes(tmp_path, "train"), "leftImg8bit")
    assert tree_digest(tmp_path) == before


def test_image_without_mask_is_an_error(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path, splits=("train",), n=2)
    gone = next((root / "gtFine" / "train" / "bremen").iterdir())
    gone.unlink()
    assert "image without mask" in one_error(lambda: Cityscapes(root, "train"), gone.name)


def test_stray_file_among_the_city_folders_is_an_error(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path, splits=("train",))
    (root / "leftImg8bit" / "train" / "notes.txt").write_text("x")
    assert "not a city folder" in one_error(lambda: Cityscapes(root, "train"), "notes.txt")


@pytest.mark.slow
def test_check_data_cli_passes_on_a_generated_tree(tmp_path: Path) -> None:
    res = check_data_cli("cityscapes", make_cityscapes(tmp_path / "cs", n=2), tmp_path / "run")
    assert res.returncode == 0 and "OK: no problems found" in res.stdout, res.stdout + res.stderr


def test_cityscapes_segnet_recipe_runs_two_steps(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs", n=4)
    metrics = smoke_train("cityscapes_segnet", root, tmp_path / "out", "dataset.image_size=[64,128]")
    assert 0.0 <= metrics["mIoU"] <= 1.0 and (tmp_path / "out" / "checkpoints" / "last.pt").is_file()
