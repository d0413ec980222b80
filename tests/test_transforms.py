"""Transforms keep image and mask aligned, resize masks NEAREST only and pad masks with ignore."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
from data_helpers import dataset_cfg

from segdeconv.data.base import apply_joint
from segdeconv.data.transforms import PAD_FILL, build_preset, check_transform, noh_eval, noh_train, photometric_ops, segnet_eval, segnet_train
from segdeconv.errors import ConfigError

# label k <-> colour COLOURS[k]; label 255 (ignore) <-> the padding colour
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]],
                   dtype=np.uint8)


def synthetic(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blocky random labels (so resizing sees regions and edges) and the image they colour."""
    rng = np.random.default_rng(seed)
    mask = cv2.resize(rng.integers(0, len(COLOURS), (h // 8 + 1, w // 8 + 1), dtype=np.uint8),
                      (w, h), interpolation=cv2.INTER_NEAREST)
    return COLOURS[mask], mask


def nearest_images(t: A.Compose) -> A.Compose:
    """The same pipeline with the image also resampled NEAREST and the image-only (colour, blur,
    noise) steps dropped, so a pixel's colour must still name its label exactly."""
    keep = []
    for tr in t.transforms:
        if isinstance(tr, A.ImageOnlyTransform) or (
                isinstance(tr, A.OneOf) and all(isinstance(c, A.ImageOnlyTransform) for c in tr.transforms)):
            continue
        if hasattr(tr, "interpolation"):
            tr.interpolation = cv2.INTER_NEAREST
        keep.append(tr)
    return A.Compose(keep)


def assert_aligned(image: np.ndarray, mask: np.ndarray) -> None:
    assert image.shape[:2] == mask.shape
    labelled = mask != 255
    assert np.array_equal(image[labelled], COLOURS[mask[labelled]])
    assert (image[~labelled] == PAD_FILL).all()


def yaml_transforms() -> dict[str, A.Compose]:
    from hydra.utils import instantiate

    out = {}
    for name in ("camvid", "voc"):
        cfg = dataset_cfg(name, "/unused")
        for node in ("train", "val"):
            out[f"{name}.{node}"] = instantiate(cfg.dataset[node].transform)
    return out


PIPELINES = {
    "segnet_train": lambda: segnet_train(),
    "segnet_train_resized": lambda: segnet_train(image_size=(200, 264), scale=0.3),
    "segnet_train_photometric": lambda: segnet_train(image_size=(180, 240), scale=[-0.5, 1.0],
                                                     crop_size=(176, 240), photometric=1.0),
    "segnet_eval": lambda: segnet_eval((180, 240)),
    "segnet_eval_resized": lambda: segnet_eval((180, 240), labels="resized"),
    "noh_train": lambda: noh_train(),
    "noh_train_short_side": lambda: noh_train(mode="short_side"),
    "noh_eval": lambda: noh_eval(),
    **{f"yaml:{k}": (lambda k=k: yaml_transforms()[k]) for k in ("camvid.train", "camvid.val",
                                                                "voc.train", "voc.val")},
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_pipeline_keeps_labels_on_their_pixels(name: str) -> None:
    t = PIPELINES[name]()
    check_transform(t)
    nearest = nearest_images(PIPELINES[name]())
    for seed, (h, w) in enumerate([(360, 480), (197, 150), (375, 500)]):
        image, mask = synthetic(h, w, seed)
        for _ in range(3):
            assert_aligned(*apply_joint(nearest, image, mask))
            _, out = apply_joint(t, image, mask)  # real interpolation: no blended label values
            assert set(np.unique(out).tolist()) <= set(range(len(COLOURS))) | {255}


def test_output_sizes() -> None:
    image, mask = synthetic(375, 500)
    assert apply_joint(segnet_train(), image, mask)[1].shape == (360, 480)
    assert apply_joint(noh_train(), image, mask)[1].shape == (224, 224)
    assert apply_joint(segnet_eval(), image, mask)[1].shape == (375, 500)
    img, m = apply_joint(segnet_eval((180, 240)), image, mask)  # native labels: the image alone is resized
    assert img.shape[:2] == (180, 240) and np.array_equal(m, mask)
    img, m = apply_joint(segnet_eval((180, 240), labels="resized"), image, mask)
    assert img.shape[:2] == m.shape == (180, 240)
    with pytest.raises(ConfigError, match="dataset.val.transform.labels='half' is unknown"):
        segnet_eval((180, 240), labels="half")
    img, m = apply_joint(noh_eval(), image, mask)
    assert m.shape == (384, 512) and np.array_equal(m[:375, :500], mask)  # top-left, /32
    assert apply_joint(noh_eval(), *synthetic(100, 60))[1].shape == (224, 224)
    assert apply_joint(noh_eval(min_size=512), image, mask)[1].shape == (512, 512)


def test_flip_moves_image_and_mask_together() -> None:
    image, mask = synthetic(64, 96)
    img, m = apply_joint(A.Compose([A.HorizontalFlip(p=1.0)]), image, mask)
    assert np.array_equal(m, mask[:, ::-1]) and np.array_equal(img, image[:, ::-1])


def test_colour_jitter_leaves_mask_alone() -> None:
    image, mask = synthetic(64, 96)
    img, m = apply_joint(A.Compose([A.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)]), image, mask)
    assert np.array_equal(m, mask) and not np.array_equal(img, image)


def test_photometric_changes_pixels_not_labels() -> None:
    image, mask = synthetic(64, 96)
    t = A.Compose(photometric_ops(1.0))
    changed = 0
    for _ in range(5):
        img, m = apply_joint(t, image, mask)
        assert np.array_equal(m, mask) and img.shape == image.shape and img.dtype == image.dtype
        changed += not np.array_equal(img, image)
    assert changed >= 4  # gamma and hue fire with p=1 (gamma 1.0 exactly is the only no-op)
    assert photometric_ops(0.0) == []
    with pytest.raises(ConfigError, match="photometric=1.5"):
        photometric_ops(1.5)


@pytest.mark.parametrize("bad,words", [
    (A.Resize(10, 10, mask_interpolation=cv2.INTER_LINEAR), "mask_interpolation=1"),
    (A.PadIfNeeded(10, 10, fill_mask=0), "fill_mask=0"),
    (A.Affine(scale=0.5), "fill_mask=0"),
])
def test_check_transform_rejects_label_unsafe_steps(bad: A.BasicTransform, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        check_transform(A.Compose([A.HorizontalFlip(), bad]))


def test_presets_by_name() -> None:
    assert isinstance(build_preset("noh_train", crop=128).transforms[2], A.RandomCrop)
    with pytest.raises(ConfigError, match="unknown"):
        build_preset("segnet")
