"""The embedded default dataset: generated shapes on textured backgrounds (no files, no downloads).

Every item is a pure function of ``(seed, split, index)``: the same index always yields the same
image, in any worker, on any machine. Classes: background, disc, box, triangle, ring. A thin band
along each shape's outline is ``IGNORE_INDEX`` (255), as VOC's object borders: the pixels between the
outlines at radius r ± BORDER, ~1 px wide across a disc's or box's edge, thinner across a triangle's
slanted sides; a ring's hole has no band. Shapes are small (radius 5–14 % of the shorter side: 4–11 px
at the quick start's 80×112), so outlines need more resolution than a 1/8 prediction grid has
(README "Quick start").
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from segdeconv.data.base import apply_joint
from segdeconv.data.image import IGNORE_INDEX, JointTransform, to_tensors
from segdeconv.errors import ConfigError

CLASS_NAMES = ["background", "disc", "box", "triangle", "ring"]
PALETTE = [[0, 0, 0], [220, 20, 60], [30, 144, 255], [50, 205, 50], [255, 215, 0]]
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}
RADIUS = (0.05, 0.14)  # shape radius r ~ U(RADIUS) · min(H, W)
BORDER = 0.5  # pixels between the outlines of radius r − BORDER and r + BORDER are IGNORE_INDEX
RENDERER = 2  # bumped whenever render() draws different images for the same (seed, split, index)


def _shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind == 1:  # disc
        return dy**2 + dx**2 <= r**2
    if kind == 2:  # box
        return (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r)
    if kind == 3:  # triangle, apex up
        return (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    d2 = dy**2 + dx**2  # ring
    return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)


def _fill_colour(rng: np.random.Generator, kind: int) -> np.ndarray:
    """Shape ``kind``'s fill: its palette colour, dimmed ×0.6–1 and jittered (σ 15)."""
    return np.array(PALETTE[kind], dtype=np.float32) * rng.uniform(0.6, 1.0) + rng.normal(0, 15, 3)


def render(rng: np.random.Generator, h: int, w: int, max_shapes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One (H,W,3) uint8 image and its (H,W) uint8 label map."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    freq = rng.uniform(0.05, 0.3, size=2)
    base = rng.uniform(40, 200, size=3)
    tex = 25 * np.sin(freq[0] * yy + rng.uniform(0, 6))[..., None] * np.cos(freq[1] * xx)[..., None]
    image = base + tex + rng.normal(0, 8, size=(h, w, 3))
    label = np.zeros((h, w), dtype=np.uint8)
    border = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        kind = int(rng.integers(1, len(CLASS_NAMES)))
        r = rng.uniform(*RADIUS) * min(h, w)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        inside = _shape_mask(kind, yy, xx, cy, cx, r)
        grown = _shape_mask(kind, yy, xx, cy, cx, r + BORDER)
        shrunk = _shape_mask(kind, yy, xx, cy, cx, max(r - BORDER, 0.5))
        colour = _fill_colour(rng, kind)
        image[inside] = colour + rng.normal(0, 10, size=(int(inside.sum()), 3))
        label[inside] = kind
        border = (border & ~shrunk) | (grown & ~shrunk)
    label[border] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), label


class SyntheticShapes(Dataset):
    """Generated (image, mask) pairs; ``split`` picks a disjoint seed range (train/val/test)."""

    class_names = CLASS_NAMES
    palette = PALETTE
    num_classes = len(CLASS_NAMES)
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        root: Optional[str] = None,
        split: str = "train",
        length: int = 256,
        image_size: Sequence[int] = (96, 128),
        seed: int = 0,
        transform: Optional[JointTransform] = None,
        max_shapes: int = 4,
    ) -> None:
        if split not in _SPLIT_OFFSET:
            raise ConfigError(f"dataset split={split!r} is unknown for synthetic; use one of {list(_SPLIT_OFFSET)}")
        if root is not None:  # e.g. evaluate.py dataset.root=… on a synthetic checkpoint: never score made-up images
            raise ConfigError(f"dataset.root={root}, but the dataset is synthetic: its images are generated and no "
                              f"folder is read; to use files pass dataset=<name> (camvid, voc, folder, …) with "
                              f"dataset.root=…, or drop dataset.root")
        if length < 1:
            raise ConfigError(f"dataset length={length} must be ≥ 1")
        if len(image_size) != 2 or min(image_size) < 8:
            raise ConfigError(f"dataset.image_size={list(image_size)} must be [H, W] with H, W ≥ 8")
        if not (isinstance(max_shapes, int) and not isinstance(max_shapes, bool) and max_shapes >= 1):
            raise ConfigError(f"dataset.max_shapes={max_shapes!r} must be an integer ≥ 1 (shapes per image: 1 to it)")
        self.root, self.split, self.length, self.max_shapes = root, split, int(length), max_shapes
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed, self.transform = int(seed), transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # rendering: ~3 ms/item at 96×128

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw uint8 image and label of item ``index`` (before transform/normalisation)."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        if index not in self._cache:
            rng = np.random.default_rng([self.seed, _SPLIT_OFFSET[self.split] + index])
            self._cache[index] = render(rng, *self.image_size, max_shapes=self.max_shapes)
        return self._cache[index]

    def load_mask(self, index: int) -> np.ndarray:
        """Item ``index``'s label map (for class statistics: ``loss.class_weights=median_freq``)."""
        return self.sample(index)[1]

    def fingerprint(self) -> str:
        """What decides every item (the class-weight cache key)."""
        return (f"renderer={RENDERER} seed={self.seed} split={self.split} length={self.length}"
                f" size={self.image_size} max_shapes={self.max_shapes}")

    def __repr__(self) -> str:
        return f"SyntheticShapes({self.fingerprint()})"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = apply_joint(self.transform, *self.sample(index))
        return to_tensors(image, mask)
