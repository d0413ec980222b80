"""SUN RGB-D 37-class adapter: the sunrgbd-meta-data downloads (labels numbered test first) and the
image/ + label37/ split folders, on generated trees."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg
from data_helpers import check_data_cli, dataset_cfg, make_sunrgbd, smoke_train, write_png
from test_data_errors import one_error

from segdeconv.data.sunrgbd import CLASS_NAMES, SEGNET_TUTORIAL_SUN_WEIGHTS, SUNRGBD
from segdeconv.errors import ConfigError, DataError


def test_download_layout_pairs_train_image_k_with_label_k_plus_5050(tmp_path: Path) -> None:
    root = make_sunrgbd(tmp_path, n=3)
    train, test = SUNRGBD(root, "train"), SUNRGBD(root, "test")
    assert train.layout == test.layout == "download"
    assert [p.name for p in train.image_paths] == ["img-000001.jpg", "img-000002.jpg", "img-000003.jpg"]
    assert [p.name for p in train.mask_paths] == ["img-005051.png", "img-005052.png", "img-005053.png"]
    assert [p.name for p in test.mask_paths] == ["img-000001.png", "img-000002.png", "img-000003.png"]
    assert all(p.parent == root / "sunrgbd_train_test_labels" for p in train.mask_paths + test.mask_paths)


def test_labels_split_into_labels_train_and_test_are_found(tmp_path: Path) -> None:
    root = make_sunrgbd(tmp_path, n=2)
    labels = root / "sunrgbd_train_test_labels"
    for split, names in (("train", ["img-005051.png", "img-005052.png"]), ("test", ["img-000001.png"])):
        (root / "labels" / split).mkdir(parents=True)
        for n in names:
            shutil.move(str(labels / n), root / "labels" / split / n)
    labels.rename(root / "unused")
    assert SUNRGBD(root, "train").mask_paths == [root / "labels" / "train" / f"img-00505{k}.png" for k in (1, 2)]
    gone = root / "labels" / "test" / "img-000002.png"
    assert "image without mask" in one_error(lambda: SUNRGBD(root, "test"), str(gone))


def test_folders_layout_pairs_by_stem(tmp_path: Path) -> None:
    root = make_sunrgbd(tmp_path, n=2, layout="folders")
    ds = SUNRGBD(root, "test")
    assert ds.layout == "folders"
    assert ds.mask_paths == [root / "label37" / "test" / f"img-00000{k}.png" for k in (1, 2)]


def test_zero_is_ignored_and_labels_shift_down_by_one(tmp_path: Path) -> None:
    ds = SUNRGBD(make_sunrgbd(tmp_path, n=1), "train")
    write_png(ds.mask_paths[0], np.tile([0, 1, 2, 20, 36, 37, 0, 22], (32, 8)))
    image, mask = ds.load_pair(0)
    assert image.shape == (32, 64, 3)
    assert mask[3, :8].tolist() == [255, 0, 1, 19, 35, 36, 255, 21]
    assert ds.class_names[0] == "wall" and ds.class_names[36] == "bag" and ds.num_classes == 37


def test_label_above_37_is_an_error_naming_the_mask(tmp_path: Path) -> None:
    ds = SUNRGBD(make_sunrgbd(tmp_path, n=1), "test")
    write_png(ds.mask_paths[0], np.full((32, 64), 38))
    assert "[38]" in one_error(lambda: ds.load_mask(0), ds.mask_paths[0].name)


def test_layout_errors_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    one_error(lambda: SUNRGBD(tmp_path, "train"), "does not look like SUN RGB-D")
    root = make_sunrgbd(tmp_path / "sun", n=1)
    shutil.rmtree(root / "sunrgbd_train_test_labels")
    assert "sunrgbd_train_test_labels.tar.gz" in one_error(lambda: SUNRGBD(root, "train"), "has no sunrgbd_train_test_labels/")
    shutil.rmtree(root / "SUNRGBD-test_images")
    one_error(lambda: SUNRGBD(root, "test"), str(root / "SUNRGBD-test_images"))
    (root / "SUNRGBD-train_images" / "img-000001.jpg").rename(root / "SUNRGBD-train_images" / "kitchen.jpg")
    (root / "sunrgbd_train_test_labels").mkdir()
    one_error(lambda: SUNRGBD(root, "train"), "kitchen.jpg: is not named img-NNNNNN")


def test_unknown_split_and_layout_are_errors(tmp_path: Path) -> None:
    root = make_sunrgbd(tmp_path, n=1)
    with pytest.raises(DataError, match="split='val' is not a SUNRGBD split; fix: use one of train, test"):
        SUNRGBD(root, "val")
    with pytest.raises(ConfigError, match="dataset.layout='flat'"):
        SUNRGBD(root, "train", layout="flat")


def test_yaml_names_and_recipe_weights_are_the_module_constants(tmp_path: Path) -> None:
    assert list(dataset_cfg("sunrgbd", tmp_path).dataset.class_names) == CLASS_NAMES
    cfg = compose_cfg(["experiment=sunrgbd_segnet"])
    assert list(cfg.loss.class_weights) == list(SEGNET_TUTORIAL_SUN_WEIGHTS)
    assert len(SEGNET_TUTORIAL_SUN_WEIGHTS) == cfg.dataset.num_classes == 37
    assert list(cfg.dataset.image_size) == [360, 480] and cfg.dataset.batch_size == 4


def test_check_data_cli_passes_on_a_generated_tree(tmp_path: Path) -> None:
    res = check_data_cli("sunrgbd", make_sunrgbd(tmp_path / "sun"), tmp_path / "run")
    assert res.returncode == 0 and "OK: no problems found" in res.stdout, res.stdout + res.stderr
    assert "split='test'" in res.stdout


def test_sunrgbd_segnet_recipe_runs_two_steps(tmp_path: Path) -> None:
    root = make_sunrgbd(tmp_path / "sun", n=4)
    metrics = smoke_train("sunrgbd_segnet", root, tmp_path / "out", "dataset.image_size=[64,96]",
                          "model.encoder.weights=null")
    assert 0.0 <= metrics["mIoU"] <= 1.0 and (tmp_path / "out" / "checkpoints" / "last.pt").is_file()
