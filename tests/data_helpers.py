"""Shared helpers for the data tests: where the real data lives, and tiny generated layouts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CAMVID = SHARED_DATA / "camvid"
VOC_SAMPLE = SHARED_DATA / "voc_sample"


def needs(path: Path) -> pytest.MarkDecorator:
    """Skip unless the real dataset folder ``path`` is present."""
    return pytest.mark.skipif(not path.is_dir(), reason=f"real data not found at {path} "
                              "(the shared data folder next to the checkout)")


def dataset_cfg(name: str, root: Path, **values: object) -> Any:
    """``{"dataset": conf/dataset/<name>.yaml}`` with ``root`` (and ``values``) set, no Hydra."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"dataset": OmegaConf.load(REPO / "conf" / "dataset" / f"{name}.yaml")})
    cfg.dataset.root = str(root)
    for k, v in values.items():
        cfg.dataset[k] = v
    return cfg


def write_png(path: Path, array: np.ndarray, palette: Optional[Sequence[int]] = None) -> Path:
    """Write ``array`` (HxW -> 'L' or 'P' with ``palette``; HxWx3 -> 'RGB') as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette is not None:  # an 'L' image with a palette attached becomes 'P', indices kept
        im.putpalette(list(palette))
    im.save(path)
    return path


def rand_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_camvid(root: Path, splits: Sequence[str] = ("train", "val"), n: int = 2,
                size: tuple[int, int] = (12, 16), list_prefix: str = "") -> Path:
    """SegNet-layout CamVid with ``n`` random pairs per split (labels 0..11) and list files."""
    rng = np.random.default_rng(0)
    for s in splits:
        lines = []
        for k in range(n):
            name = f"{s}_{k:03d}.png"
            write_png(root / s / name, rand_image(*size, seed=k))
            write_png(root / f"{s}annot" / name, rng.integers(0, 12, size))
            lines.append(f"{list_prefix}{s}/{name} {list_prefix}{s}annot/{name}")
        (root / f"{s}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_folder(root: Path, n: int = 2, size: tuple[int, int] = (12, 16), num_classes: int = 3,
                split: Optional[str] = None) -> Path:
    """``root[/split]/images/*.jpg`` + ``masks/*.png`` with labels 0..num_classes-1."""
    base = root / split if split else root
    rng = np.random.default_rng(1)
    for k in range(n):
        Image.fromarray(rand_image(*size, seed=k)).save(_mkdir(base / "images") / f"img{k}.jpg")
        write_png(base / "masks" / f"img{k}.png", rng.integers(0, num_classes, size))
    return root


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def make_voc(root: Path, n: int = 3, size: tuple[int, int] = (240, 260)) -> Path:
    """VOCdevkit/VOC2012 with ``n`` train and ``n`` val pairs, plus SegmentationClassAug + train_aug list."""
    import cv2

    voc = root / "VOCdevkit" / "VOC2012"
    pal = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]
    rng = np.random.default_rng(0)
    ids = {"train": [f"2011_{k:06d}" for k in range(n)], "val": [f"2007_{k:06d}" for k in range(n)]}
    for split, names in ids.items():
        for k, name in enumerate(names):
            _mkdir(voc / "JPEGImages")
            cv2.imwrite(str(voc / "JPEGImages" / f"{name}.jpg"), rand_image(*size, seed=k)[..., ::-1])
            mask = rng.integers(0, 21, size).astype(np.uint8)
            mask[:2] = 255
            write_png(voc / "SegmentationClass" / f"{name}.png", mask, pal)
            write_png(root / "SegmentationClassAug" / f"{name}.png", mask, pal)
        _mkdir(voc / "ImageSets" / "Segmentation")
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    _mkdir(root / "lists")
    (root / "lists" / "train_aug.txt").write_text("\n".join(ids["train"]) + "\n")
    return root


def make_cityscapes(root: Path, splits: Sequence[str] = ("train", "val"), n: int = 2,
                    size: tuple[int, int] = (32, 64), mode: str = "fine",
                    cities: Sequence[str] = ("aachen", "bremen")) -> Path:
    """``leftImg8bit/<split>/<city>/<city>_000000_<k>_leftImg8bit.png`` + ``gt<Mode>/…_labelIds.png``
    (label ids 0..33), ``n`` frames per split spread over ``cities``."""
    gt = {"fine": "gtFine", "coarse": "gtCoarse"}[mode]
    rng = np.random.default_rng(2)
    for s in splits:
        for k in range(n):
            city = cities[k % len(cities)]
            stem = f"{city}_000000_{k:06d}"
            img = _mkdir(root / "leftImg8bit" / s / city) / f"{stem}_leftImg8bit.png"
            Image.fromarray(rand_image(*size, seed=k)).save(img)
            write_png(root / gt / s / city / f"{stem}_{gt}_labelIds.png", rng.integers(0, 34, size))
    return root


def make_ade20k(root: Path, splits: Sequence[str] = ("training", "validation"), n: int = 2,
                size: tuple[int, int] = (32, 64)) -> Path:
    """ADEChallengeData2016 layout in ``root``: ``images/<folder>/ADE_*.jpg`` + ``annotations/…png``
    (labels 0..150)."""
    rng = np.random.default_rng(3)
    for folder in splits:
        tag = "train" if folder == "training" else "val"
        for k in range(n):
            stem = f"ADE_{tag}_{k + 1:08d}"
            Image.fromarray(rand_image(*size, seed=k)).save(_mkdir(root / "images" / folder) / f"{stem}.jpg")
            write_png(root / "annotations" / folder / f"{stem}.png", rng.integers(0, 151, size))
    return root


def make_sunrgbd(root: Path, n: int = 2, size: tuple[int, int] = (32, 64), layout: str = "download") -> Path:
    """SUN RGB-D with ``n`` train and ``n`` test images (labels 0..37): the sunrgbd-meta-data downloads
    (``layout="download"``: labels numbered test first, train from 5051) or ``image/`` + ``label37/``."""
    rng = np.random.default_rng(4)
    for split, offset in (("train", 5050), ("test", 0)):
        for k in range(1, n + 1):
            if layout == "download":
                img = _mkdir(root / f"SUNRGBD-{split}_images") / f"img-{k:06d}.jpg"
                label = root / "sunrgbd_train_test_labels" / f"img-{k + offset:06d}.png"
            else:
                img = _mkdir(root / "image" / split) / f"img-{k:06d}.jpg"
                label = root / "label37" / split / f"img-{k:06d}.png"
            Image.fromarray(rand_image(*size, seed=k)).save(img)
            write_png(label, rng.integers(0, 38, size))
    return root


def check_data_cli(name: str, root: Path, run_dir: Path) -> Any:
    """``python check_data.py dataset=<name> dataset.root=<root>`` (train and val splits), completed."""
    from cli_helpers import run_cli

    return run_cli("check_data.py", [f"dataset={name}", f"dataset.root={root}", f"hydra.run.dir={run_dir}"])


def smoke_train(experiment: str, root: Path, out: Path, *extra: str) -> dict:
    """Two optimizer steps of ``experiment`` with ``debug=default`` on ``root`` at 1/8 width, fp32."""
    from conftest import compose_cfg

    from segdeconv.tasks.train import fit

    cfg = compose_cfg([f"experiment={experiment}", "debug=default", f"output_dir={out}",
                       f"dataset.root={root}", "model.encoder.width=0.125", "trainer.precision=fp32", *extra])
    assert cfg.trainer.max_steps == 2 and cfg.dataset.num_workers == 0
    return fit(cfg)
