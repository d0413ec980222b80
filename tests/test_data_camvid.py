"""CamVid adapter: the real SegNet-layout copy plus generated 32-class / odd-list fixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import CAMVID, dataset_cfg, make_camvid, needs, rand_image, write_png
from PIL import Image

from segdeconv.data.camvid import CLASS_NAMES, GROUP_11, PALETTE, CamVid
from segdeconv.errors import ConfigError, DataError

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


# ----------------------------------------------------------------------------------------------
# Split schemes: standard | proxy (hold a whole sequence out) | trainval
# ----------------------------------------------------------------------------------------------
# The real lists' shape in miniature: val is all from 0016E5, which train also has.
SEQ_TRAIN = {"0001TP": 2, "0006R0": 3, "0016E5": 4}
SEQ_VAL = {"0016E5": 2}


def make_sequences(root: Path, train: dict[str, int] = SEQ_TRAIN, val: dict[str, int] = SEQ_VAL,
                   extra_val: tuple[str, ...] = ()) -> Path:
    """SegNet-layout CamVid whose frames are named ``<sequence>_<frame>.png`` (val frames numbered
    after train's), with list files; ``extra_val`` adds those train file names to val.txt too."""
    rng = np.random.default_rng(0)
    offset = {"train": 0, "val": 100}
    for split, seqs in (("train", train), ("val", val)):
        names = [f"{seq}_{offset[split] + k:05d}.png" for seq, n in seqs.items() for k in range(n)]
        for name in names:
            write_png(root / split / name, rand_image(4, 6))
            write_png(root / f"{split}annot" / name, rng.integers(0, 12, (4, 6)))
        listed = [f"{split}/{n} {split}annot/{n}" for n in names]
        listed += [f"train/{n} trainannot/{n}" for n in extra_val] if split == "val" else []
        (root / f"{split}.txt").write_text("\n".join(listed) + "\n")
    return root


def names(ds: CamVid) -> set[str]:
    return {p.name for p in ds.image_paths}


def test_standard_scheme_keeps_the_published_lists(tmp_path: Path) -> None:
    make_sequences(tmp_path)
    train, val = CamVid(tmp_path, "train"), CamVid(tmp_path, "val")
    assert train.sequence_counts == SEQ_TRAIN and val.sequence_counts == SEQ_VAL
    assert [p.name for p in train.image_paths] == [ln.split()[0].split("/")[1] for ln in
                                                   (tmp_path / "train.txt").read_text().splitlines()]
    assert len(CamVid(tmp_path, "trainval", split_scheme="standard")) == 11


def test_proxy_scheme_validates_on_the_held_out_sequence_only(tmp_path: Path) -> None:
    make_sequences(tmp_path)
    train, val = (CamVid(tmp_path, s, split_scheme="proxy") for s in ("train", "val"))
    assert train.sequence_counts == {"0001TP": 2, "0016E5": 6}  # the val frames of 0016E5 train too
    assert val.sequence_counts == {"0006R0": 3}
    assert not names(train) & names(val) and len(names(train) | names(val)) == 11
    assert all(m.name == i.name and m.parent.name.endswith("annot")
               for i, m in zip(train.image_paths, train.mask_paths))
    other = CamVid(tmp_path, "val", split_scheme="proxy", holdout_sequence="0016E5")
    assert other.sequence_counts == {"0016E5": 6}


def test_trainval_scheme_trains_on_train_and_val_and_validates_on_val(tmp_path: Path) -> None:
    make_sequences(tmp_path)
    train, val = (CamVid(tmp_path, s, split_scheme="trainval") for s in ("train", "val"))
    assert len(train) == 11 and names(val) <= names(train) and val.sequence_counts == SEQ_VAL


def test_unknown_holdout_sequence_names_the_sequences_present(tmp_path: Path) -> None:
    make_sequences(tmp_path)
    with pytest.raises(ConfigError, match=r"holdout_sequence='Seq05VD'.*use one of 0001TP, 0006R0, 0016E5"):
        CamVid(tmp_path, "val", split_scheme="proxy", holdout_sequence="Seq05VD")


def test_proxy_with_a_single_sequence_is_refused(tmp_path: Path) -> None:
    make_sequences(tmp_path, train={"0016E5": 2}, val={"0016E5": 1})
    with pytest.raises(ConfigError, match="at least two sequences"):
        CamVid(tmp_path, "train", split_scheme="proxy", holdout_sequence="0016E5")


def test_unknown_split_scheme_is_a_config_error(tmp_path: Path) -> None:
    make_sequences(tmp_path)
    with pytest.raises(ConfigError, match="split_scheme='holdout'.*standard, proxy, trainval"):
        CamVid(tmp_path, "train", split_scheme="holdout")


def test_proxy_refuses_frames_without_a_sequence_prefix(tmp_path: Path) -> None:
    make_sequences(tmp_path)
    write_png(tmp_path / "train" / "frame7.png", rand_image(4, 6))
    write_png(tmp_path / "trainannot" / "frame7.png", np.zeros((4, 6)))
    with (tmp_path / "train.txt").open("a") as f:
        f.write("train/frame7.png trainannot/frame7.png\n")
    with pytest.raises(DataError, match="frame7.png: has no '<sequence>_' prefix"):
        CamVid(tmp_path, "val", split_scheme="proxy")


@pytest.mark.parametrize("scheme", ["standard", "proxy", "trainval"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_a_frame_listed_in_train_and_val_is_refused(tmp_path: Path, scheme: str, split: str) -> None:
    make_sequences(tmp_path, extra_val=("0001TP_00001.png",))
    with pytest.raises(DataError, match="contains 1 frames of the val list \\(e.g. 0001TP_00001.png\\)"):
        CamVid(tmp_path, split, split_scheme=scheme)


def test_test_split_is_the_same_under_every_scheme(tmp_path: Path) -> None:
    make_sequences(tmp_path)
    make_camvid(tmp_path, splits=("test",), n=3)
    got = {s: [p.name for p in CamVid(tmp_path, "test", split_scheme=s).image_paths]
           for s in ("standard", "proxy", "trainval")}
    assert got["standard"] == got["proxy"] == got["trainval"] and len(got["proxy"]) == 3


def test_stored_val_node_keeps_the_scheme_in_split_dataset(tmp_path: Path) -> None:
    """evaluate.py split=val of a proxy-trained checkpoint evaluates the held-out sequence."""
    from omegaconf import OmegaConf

    from segdeconv.config import split_dataset

    make_sequences(tmp_path)
    cfg = dataset_cfg("camvid", tmp_path, split_scheme="proxy", image_size=[4, 6])
    stored = OmegaConf.to_container(cfg.dataset, resolve=True)  # as the trainer stores it
    assert stored["val"]["split_scheme"] == "proxy" and stored["train"]["holdout_sequence"] == "0006R0"
    assert split_dataset(stored, None, "val").sequence_counts == {"0006R0": 3}
    assert split_dataset(stored, None, "train").sequence_counts == {"0001TP": 2, "0016E5": 6}


def test_a_scheme_given_at_evaluation_reaches_the_stored_val_node(tmp_path: Path) -> None:
    """``evaluate.py +dataset.split_scheme=proxy`` on a standard-trained checkpoint scores the held-out sequence."""
    from omegaconf import OmegaConf

    from segdeconv.config import split_dataset

    make_sequences(tmp_path)
    stored = OmegaConf.to_container(dataset_cfg("camvid", tmp_path, image_size=[4, 6]).dataset, resolve=True)
    assert split_dataset(stored, None, "val").sequence_counts == {"0016E5": 2}
    given = OmegaConf.create({"root": None, "split_scheme": "proxy"})
    assert split_dataset(stored, given, "val").sequence_counts == {"0006R0": 3}


@real
def test_real_counts_per_split_scheme() -> None:
    def counts(scheme: str, split: str) -> dict[str, int]:
        return CamVid(CAMVID, split, split_scheme=scheme).sequence_counts

    assert counts("standard", "train") == {"0001TP": 62, "0006R0": 101, "0016E5": 204}
    assert counts("standard", "val") == {"0016E5": 101}
    assert counts("proxy", "train") == {"0001TP": 62, "0016E5": 305}  # 204 train + 101 val frames
    assert counts("proxy", "val") == {"0006R0": 101}
    assert counts("trainval", "train") == {"0001TP": 62, "0006R0": 101, "0016E5": 305}
    assert counts("trainval", "val") == {"0016E5": 101}
