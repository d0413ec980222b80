"""ADE20K SceneParsing adapter on generated ADEChallengeData2016 trees."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import check_data_cli, dataset_cfg, make_ade20k, smoke_train, write_png
from test_data_errors import one_error

from segdeconv.data.ade20k import ADE20K, CLASS_NAMES, PALETTE
from segdeconv.errors import DataError


def test_pairs_by_stem_in_training_and_validation(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path, n=3)
    train, val = ADE20K(root, "train"), ADE20K(root, "val")
    assert [p.name for p in train.image_paths] == [f"ADE_train_{k:08d}.jpg" for k in (1, 2, 3)]
    assert train.mask_paths == [root / "annotations" / "training" / f"ADE_train_{k:08d}.png" for k in (1, 2, 3)]
    assert all(p.parent == root / "annotations" / "validation" for p in val.mask_paths) and len(val) == 3
    assert len(ADE20K(root, "trainval")) == 6


def test_root_may_be_the_folder_containing_adechallengedata2016(tmp_path: Path) -> None:
    make_ade20k(tmp_path / "ADEChallengeData2016")
    ds = ADE20K(tmp_path, "val")
    assert ds.ade_dir == tmp_path / "ADEChallengeData2016" and len(ds) == 2


def test_zero_is_ignored_and_labels_shift_down_by_one(tmp_path: Path) -> None:
    ds = ADE20K(make_ade20k(tmp_path, n=1), "train")
    write_png(ds.mask_paths[0], np.tile([0, 1, 2, 75, 149, 150, 0, 13], (32, 8)))
    image, mask = ds.load_pair(0)
    assert image.shape == (32, 64, 3)
    assert mask[5, :8].tolist() == [255, 0, 1, 74, 148, 149, 255, 12]
    assert ds.num_classes == 150 and ds.ignore_index == 255


def test_label_above_150_is_an_error_naming_the_mask(tmp_path: Path) -> None:
    ds = ADE20K(make_ade20k(tmp_path, n=1), "train")
    write_png(ds.mask_paths[0], np.full((32, 64), 151))
    assert "[151]" in one_error(lambda: ds.load_mask(0), ds.mask_paths[0].name)


def test_builtin_names_and_palette_are_mmseg_ade20k(tmp_path: Path) -> None:
    ds = ADE20K(make_ade20k(tmp_path), "train")
    assert ds.class_names == CLASS_NAMES and len(CLASS_NAMES) == len(set(CLASS_NAMES)) == 150
    assert CLASS_NAMES[:3] == ["wall", "building", "sky"] and CLASS_NAMES[-1] == "flag"
    assert ds.palette == PALETTE and len(PALETTE) == 150
    assert PALETTE[0] == [120, 120, 120] and PALETTE[-1] == [92, 0, 255]
    assert dataset_cfg("ade20k", tmp_path).dataset.num_classes == 150


def _object_info(path: Path, sep: str, names: list[str]) -> Path:
    quote = '"' if sep == "," else ""
    rows = [f"{i}{sep}0.01{sep}10{sep}1{sep}{quote}{n}{quote}" for i, n in enumerate(names, 1)]
    path.write_text(sep.join(["Idx", "Ratio", "Train", "Val", "Name"]) + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("file,sep", [("objectInfo150.txt", "\t"), ("objectInfo150.csv", ",")])
def test_names_come_from_objectinfo150_first_synonym(tmp_path: Path, file: str, sep: str) -> None:
    root = make_ade20k(tmp_path)
    names = [f"thing{i}, synonym" for i in range(1, 151)]
    names[1] = "building, edifice"
    _object_info(root / file, sep, names)
    ds = ADE20K(root, "val")
    assert ds.class_names[:3] == ["thing1", "building", "thing3"] and len(ds.class_names) == 150


def test_objectinfo150_with_missing_rows_is_an_error(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path)
    bad = _object_info(root / "objectInfo150.txt", "\t", ["wall"] * 149)
    assert "not Idx 1..150" in one_error(lambda: ADE20K(root, "train"), bad.name)


def test_missing_annotation_folder_and_mask_are_errors(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path, splits=("training",))
    (root / "images" / "validation").mkdir()
    one_error(lambda: ADE20K(root, "val"), str(root / "annotations" / "validation"))
    gone = root / "annotations" / "training" / "ADE_train_00000002.png"
    gone.unlink()
    assert "image without mask" in one_error(lambda: ADE20K(root, "train"), gone.name)


def test_unknown_split_and_root_without_images_are_errors(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path / "ade")
    with pytest.raises(DataError, match="split='test' is not a ADE20K split; fix: use one of train, val"):
        ADE20K(root, "test")
    one_error(lambda: ADE20K(tmp_path, "train"), "has no images/ + annotations/")


@pytest.mark.slow
def test_check_data_cli_passes_on_a_generated_tree(tmp_path: Path) -> None:
    res = check_data_cli("ade20k", make_ade20k(tmp_path / "ade"), tmp_path / "run")
    assert res.returncode == 0 and "OK: no problems found" in res.stdout, res.stdout + res.stderr


def test_ade20k_segnet_recipe_runs_two_steps(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path / "ade", n=4)
    metrics = smoke_train("ade20k_segnet", root, tmp_path / "out", "dataset.image_size=[64,64]")
    assert 0.0 <= metrics["mIoU"] <= 1.0 and (tmp_path / "out" / "checkpoints" / "last.pt").is_file()
