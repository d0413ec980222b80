"""Every bad input gives one DataError (one line) that names the file and says how to fix it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from cli_helpers import run_cli
from data_helpers import CAMVID, make_camvid, make_folder, needs, rand_image, write_png

from segdeconv.data.camvid import CamVid
from segdeconv.data.check import check_dataset
from segdeconv.data.folder import SegmentationFolder
from segdeconv.data.voc import VOCSegmentation
from segdeconv.errors import DataError

NAMES = ["a", "b", "c"]


def one_error(fn: Callable[[], object], names: str) -> str:
    """Run ``fn``; it must raise one single-line DataError mentioning ``names`` and a fix."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert names in msg and "fix:" in msg and "\n" not in msg, msg
    return msg


def _camvid(tmp_path: Path) -> Path:
    return make_camvid(tmp_path / "CamVid", splits=("train",), n=2)


def _folder(root: Path, split: str) -> SegmentationFolder:
    return SegmentationFolder(root, split, class_names=NAMES)


@pytest.mark.parametrize("cls", [CamVid, VOCSegmentation, _folder])
def test_missing_root(tmp_path: Path, cls: Callable) -> None:
    msg = one_error(lambda: cls(tmp_path / "nowhere", "train"), "nowhere")
    assert "does not exist" in msg and "dataset.root=" in msg


def test_missing_split_file(tmp_path: Path) -> None:
    root = _camvid(tmp_path)
    one_error(lambda: CamVid(root, "val"), "val.txt")
    voc = tmp_path / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    one_error(lambda: VOCSegmentation(voc, "train"), "Segmentation/train.txt")


def test_unknown_split(tmp_path: Path) -> None:
    root = _camvid(tmp_path)
    assert "train, val, test, trainval" in one_error(lambda: CamVid(root, "tset"), "tset")
    make_folder(tmp_path / "own", split="train")
    one_error(lambda: SegmentationFolder(tmp_path / "own", "vall", class_names=NAMES), "vall")


def test_image_without_mask(tmp_path: Path) -> None:
    root = _camvid(tmp_path)
    (root / "trainannot" / "train_001.png").unlink()
    msg = one_error(lambda: CamVid(root, "train"), "trainannot/train_001.png")
    assert "image without mask" in msg
    make_folder(tmp_path / "own")
    (tmp_path / "own" / "masks" / "img1.png").unlink()
    one_error(lambda: SegmentationFolder(tmp_path / "own", class_names=NAMES), "img1.jpg")


def test_mask_size_differs_from_image(tmp_path: Path) -> None:
    root = _camvid(tmp_path)
    write_png(root / "trainannot" / "train_001.png", np.zeros((10, 16)))
    ds = CamVid(root, "train")
    ds[0]  # the good pair still loads
    msg = one_error(lambda: ds[1], "trainannot/train_001.png")
    assert "16x10" in msg and "16x12" in msg


def test_label_out_of_range(tmp_path: Path) -> None:
    root = _camvid(tmp_path)
    mask = np.zeros((12, 16))
    mask[3, 3] = 37
    write_png(root / "trainannot" / "train_000.png", mask)
    msg = one_error(lambda: CamVid(root, "train")[0], "train_000.png")
    assert "[37]" in msg and "{0..11, 255}" in msg


def test_rgb_mask_where_index_expected(tmp_path: Path) -> None:
    root = _camvid(tmp_path)
    write_png(root / "trainannot" / "train_000.png", rand_image(12, 16))
    msg = one_error(lambda: CamVid(root, "train")[0], "train_000.png")
    assert "colour mask (PIL mode RGB) but an index mask is expected" in msg


@pytest.mark.parametrize("which", ["trainannot", "train"])
def test_corrupt_png(tmp_path: Path, which: str) -> None:
    root = _camvid(tmp_path)
    f = root / which / "train_001.png"
    f.write_bytes(f.read_bytes()[:60])  # truncated
    one_error(lambda: CamVid(root, "train")[1], f"{which}/train_001.png")


def test_check_dataset_lists_every_problem(tmp_path: Path) -> None:
    root = make_camvid(tmp_path, splits=("train",), n=4)
    write_png(root / "trainannot" / "train_000.png", np.full((12, 16), 37))
    write_png(root / "trainannot" / "train_001.png", np.zeros((9, 9)))
    (root / "train" / "train_002.png").write_bytes(b"not a png")
    problems = check_dataset(CamVid(root, "train"))
    assert len(problems) == 3
    for name, words in [("train_000", "[37]"), ("train_001", "9x9"), ("train_002", "decoded")]:
        assert any(name in p and words in p for p in problems), problems


@pytest.mark.slow
def test_check_cli_exit_codes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_folder(data, split="train")
    make_folder(data, split="val")
    args = ["dataset=folder", f"dataset.root={data}", "dataset.num_classes=3", "dataset.class_names=[a,b,c]"]
    ok = run_cli("check_data.py", args + [f"hydra.run.dir={tmp_path / 'run'}"])
    assert ok.returncode == 0 and "OK: no problems found" in ok.stdout, ok.stderr
    write_png(data / "val" / "masks" / "img0.png", np.full((12, 16), 37))
    bad = run_cli("check_data.py", args + [f"hydra.run.dir={tmp_path / 'run1'}"])  # a new dir: runs never share one
    assert bad.returncode == 1 and "img0.png: has label values [37]" in bad.stdout
    missing = run_cli("check_data.py", ["dataset=folder", f"hydra.run.dir={tmp_path / 'run2'}"])
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        "error: dataset.root is required: pass dataset.root=/path/to/the/dataset"]
    two = run_cli("check_data.py", args + ["splits=[val]", f"hydra.run.dir={tmp_path / 'run3'}"])
    assert two.returncode == 1 and "train" not in two.stdout.split("PROBLEM")[0].split(":")[0]


@needs(CAMVID)
@pytest.mark.slow
def test_check_cli_real_camvid(tmp_path: Path) -> None:
    res = run_cli("check_data.py", ["dataset=camvid", f"dataset.root={CAMVID}", f"hydra.run.dir={tmp_path}"])
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "367 pairs" in out and "101 pairs" in out and "480x360 (367)" in out
