"""Boundary F1 (BF) score of a semantic segmentation: Csurka, Larlus & Perronnin, "What is a good
evaluation measure for semantic segmentation?", BMVC 2013; used by SegNet (TPAMI 2017, §4).

A port of alexgkendall/SegNet-Tutorial ``Scripts/computeBFmeasure.m`` and the BSDS helpers it calls:

* **Boundary map** (BSDS ``seg2bmap``, identical to ``seg2bdry(mask, 'imageSize')`` that the .m calls):
  pixel (i, j) of a class mask is a boundary pixel when the 2×2 block it opens, (i..i+1, j..j+1), is not
  constant; on the last row when its right neighbour differs, on the last column when the pixel below
  differs; the bottom-right pixel never (the image frame itself is no boundary).
* **Tolerance**: ``correspondPixels(bmap_pim, bmap_gim, maxDist)`` with ``maxDist = 0.0075``; BSDS
  ``correspondPixels.cc`` passes ``maxDist * idiag`` with ``idiag = sqrt(rows^2 + cols^2)`` and
  ``match.cc`` keeps a pair when ``u*u + v*v <= maxDist^2``. So θ = 0.0075·√(H²+W²) px, *not rounded*
  (360×480 → 4.5 px), and a pixel matches when its Euclidean distance d ≤ θ (compared exactly, as
  integer d² ≤ θ²).
* **Matching**: precision = fraction of predicted boundary pixels within θ of a GT boundary pixel,
  recall = the converse, F = 2PR/(P+R), F = 0 when P + R = 0 (the .m's zero-initialised
  ``F1_measure``): a class in the GT but absent from the prediction scores 0. This is Csurka et al.'s
  distance criterion; BSDS ``correspondPixels`` additionally makes the matching one-to-one (min-cost
  assignment), which can only lower P and R.
* **Presence**: a class is scored in an image when its GT boundary map is non-empty (the .m's
  ``if sumR(i-2,n) > 0``). The .m's code also scores classes seen only in the prediction (``sumP > 0``,
  F = 0), against its own comment ("only classes which are present in that ground truth image (see
  Csurka & Perronin's BMVC 2013)") and SegNet §4; we follow the comment and the paper.
* **Ignored pixels** (no counterpart in the .m, whose SUN RGB-D unlabelled pixels are just "not class
  n"): a boundary pixel is not *counted*, in prediction or GT, when its 2×2 block touches a GT pixel
  labelled ``ignore_index``; the full maps still serve as match targets. Predictions inside void are
  unverifiable and a GT boundary against void is an annotation limit, not an object edge (the
  ConfusionMatrix drops ignored pixels for the same reason); testing the whole block keeps the rule
  symmetric despite seg2bmap's half-pixel offset towards the origin.

Aggregation: :class:`BoundaryF1` reports both, and ``evaluate.py``'s table prints both (``metrics.format_table``):

* ``image_bf`` — **the paper's figure**: the mean over images of each image's mean F over its present
  classes (the .m's ``BF_measure`` under the presence rule above; images without a scored class are
  skipped, where the .m divides by every image). Compare this one with SegNet's tables.
* ``bf_score`` — the mean over classes of the per-class mean over the images where the class is present
  (classes never present: ``None``, left out of the mean, as mIoU leaves out undefined classes); the
  per-class column of the table; it weights a class seen in few images as much as a frequent one.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


def tolerance_px(height: int, width: int, threshold: float = 0.0075) -> float:
    """θ in pixels: ``threshold`` × image diagonal, unrounded (BSDS correspondPixels.cc)."""
    return float(threshold) * math.sqrt(height * height + width * width)


def boundary_maps(masks: np.ndarray) -> np.ndarray:
    """seg2bmap over the last two axes of boolean ``masks`` (..., H, W): the boundary pixels."""
    b = np.zeros(masks.shape, dtype=bool)
    e = masks[..., :, :-1] != masks[..., :, 1:]  # right neighbour differs
    s = masks[..., :-1, :] != masks[..., 1:, :]  # lower neighbour differs
    se = masks[..., :-1, :-1] != masks[..., 1:, 1:]
    b[..., :-1, :-1] = e[..., :-1, :] | s[..., :, :-1] | se
    b[..., -1, :-1] = e[..., -1, :]
    b[..., :-1, -1] = s[..., :, -1]
    return b


def _block_valid(valid: np.ndarray) -> np.ndarray:
    """True where every pixel of the 2×2 block that defines a seg2bmap boundary pixel is valid."""
    out = valid.copy()
    out[:, :-1] &= valid[:, 1:]
    out[:-1, :] &= valid[1:, :]
    out[:-1, :-1] &= valid[1:, 1:]
    return out


def _n_matched(query: np.ndarray, target: np.ndarray, theta: float) -> int:
    """How many True pixels of ``query`` lie within Euclidean distance ``theta`` of a True ``target`` pixel.

    Pixels on the target match at distance 0; for the others an exact Euclidean distance transform
    (OpenCV's ``DIST_MASK_PRECISE``, Felzenszwalb & Huttenlocher) runs on their bounding box grown by ⌈θ⌉,
    which holds every target pixel that can match."""
    n_on = int(np.count_nonzero(query & target))
    rest = query & ~target
    if theta < 1 or not rest.any() or not target.any():
        return n_on
    r = int(math.ceil(theta))
    rows, cols = np.flatnonzero(rest.any(1)), np.flatnonzero(rest.any(0))
    win = (slice(max(rows[0] - r, 0), rows[-1] + r + 1), slice(max(cols[0] - r, 0), cols[-1] + r + 1))
    t = target[win]
    if not t.any():
        return n_on
    d = cv2.distanceTransform(np.logical_not(t).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d = d[rest[win]].astype(np.float64)
    return n_on + int(np.count_nonzero(np.rint(d * d) <= theta * theta))  # d² is an integer: exact test


def boundary_f1(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255,
                threshold: float = 0.0075) -> tuple[np.ndarray, np.ndarray]:
    """Per-class BF of one (H, W) image: (F of shape (C,), NaN where not scored; present mask (C,))."""
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same (H, W)")
    h, w = gt.shape
    theta = tolerance_px(h, w, threshold)
    classes = np.arange(num_classes)[:, None, None]
    bp, bg = boundary_maps(pred[None] == classes), boundary_maps(gt[None] == classes)
    counted = _block_valid(gt != ignore_index)
    f = np.full(num_classes, np.nan)
    present = np.zeros(num_classes, dtype=bool)
    for c in range(num_classes):
        qg, qp = bg[c] & counted, bp[c] & counted
        n_g, n_p = int(np.count_nonzero(qg)), int(np.count_nonzero(qp))
        if n_g == 0:
            continue
        present[c] = True
        recall = _n_matched(qg, bp[c], theta) / n_g
        precision = _n_matched(qp, bg[c], theta) / n_p if n_p else 0.0
        f[c] = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return f, present


class BoundaryF1:
    """Accumulates per-image, per-class BF scores (computed on the CPU with numpy and OpenCV)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, threshold: float = 0.0075) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.threshold = float(threshold)
        # [sum of F per class (C), images scored per class (C), sum of image BFs, images scored]
        self.totals = torch.zeros(2 * self.num_classes + 2, dtype=torch.float64)

    def reset(self) -> None:
        self.totals.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of (B, H, W) class-index maps (``target`` may hold ``ignore_index``)."""
        if pred.shape != target.shape or target.dim() != 3:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be the same (B, H, W)")
        p, t = pred.detach().cpu().numpy(), target.detach().cpu().numpy()
        bad = (t != self.ignore_index) & ((t < 0) | (t >= self.num_classes))
        if bad.any():
            raise ValueError(f"label value {int(t[bad][0])} outside 0..{self.num_classes - 1} "
                             f"(and ≠ ignore {self.ignore_index})")
        n = self.num_classes
        for pi, ti in zip(p, t):
            f, present = boundary_f1(pi, ti, n, self.ignore_index, self.threshold)
            self.totals[:n] += torch.from_numpy(np.where(present, f, 0.0))
            self.totals[n:2 * n] += torch.from_numpy(present.astype(np.float64))
            if present.any():
                self.totals[2 * n] += float(f[present].mean())
                self.totals[2 * n + 1] += 1

    def all_reduce(self) -> None:
        """Sum the per-class sums and counts over all ranks (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized():
            on_gpu = dist.get_backend() == "nccl"
            t = self.totals.to(torch.device("cuda", torch.cuda.current_device())) if on_gpu else self.totals
            dist.all_reduce(t)
            self.totals.copy_(t)

    def compute(self, class_names: Optional[Sequence[str]] = None) -> dict:
        """``bf_score`` (mean over scored classes), ``per_class_bf`` (None if never scored), ``image_bf`` (mean
        over scored images: computeBFmeasure.m's aggregation, the paper's figure), ``num_images_scored``."""
        n = self.num_classes
        sums, counts = self.totals[:n], self.totals[n:2 * n]
        names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
        per_class = [float(s / c) if c > 0 else None for s, c in zip(sums, counts)]
        scored = [v for v in per_class if v is not None]
        img_sum, img_count = float(self.totals[2 * n]), float(self.totals[2 * n + 1])
        return {
            "bf_score": float(np.mean(scored)) if scored else float("nan"),
            "per_class_bf": dict(zip(names, per_class)),
            "image_bf": img_sum / img_count if img_count else float("nan"),
            "num_images_scored": int(img_count),
        }
