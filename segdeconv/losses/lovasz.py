"""Lovász-Softmax loss: a convex surrogate of the per-class Jaccard loss (1 - IoU).

Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss: A tractable surrogate for the
optimization of the intersection-over-union measure in neural networks", CVPR 2018 (§3, Alg. 1).
Ported from the reference implementation, bermanmaxim/LovaszSoftmax ``pytorch/lovasz_losses.py``
(MIT): :func:`lovasz_grad` is the reference function; :func:`lovasz_softmax_flat` is the reference
loop over classes done for all classes at once (one sort per class row, same values).

Deviations: an image without a valid pixel is left out of the ``per_image`` mean (the reference
counts it as 0), and ``class_weights`` turn the mean over classes into ``sum w_c l_c / sum w_c``.

``bins=N`` (:func:`lovasz_softmax_binned`) replaces the per-class sort by N error bins: the same loss for
errors that are equal within a bin, and within ``1/N`` of it otherwise, in O(P) instead of O(P log P)
(issue #31: the sort was most of a CPU training step at 352×480).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from segdeconv.errors import ConfigError
from segdeconv.losses._base import SegLoss, WeightsLike, safe_div

Classes = Union[str, Sequence[int]]


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing
    order (Berman et al. Alg. 1); ``gt_sorted`` is ``(P,)`` or ``(P, C)`` of 0/1, sorted along dim 0."""
    p = gt_sorted.shape[0]
    gts = gt_sorted.sum(dim=0)
    intersection = gts - gt_sorted.cumsum(dim=0)
    union = gts + (1.0 - gt_sorted).cumsum(dim=0)
    jaccard = 1.0 - intersection / union
    if p > 1:  # cover 1-pixel case
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_softmax_flat(probas: Tensor, labels: Tensor, classes: Classes = "present",
                        class_weights: Union[Tensor, None] = None, bins: int = 0) -> Tensor:
    """Lovász-Softmax over ``P`` pixels: ``probas (P, C)``, ``labels (P,)`` in ``[0, C)``.

    ``classes``: ``"all"``, ``"present"`` (classes in ``labels``) or a list of class ids to average;
    ``bins``: 0 = the exact sort, N = :func:`lovasz_softmax_binned`.
    """
    if probas.numel() == 0:  # only void pixels: the gradient must be 0
        return probas.sum() * 0.0
    c = probas.shape[1]
    # class-major (C, P): each class's errors are one contiguous row, which sorts ~2.5× faster on a
    # CPU than a strided column of (P, C) (same values; ties may be ordered differently)
    fg = (labels.unsqueeze(0) == torch.arange(c, device=labels.device).unsqueeze(1)).to(probas.dtype)
    errors = (fg - probas.t()).abs()
    if bins:
        losses = lovasz_softmax_binned(errors, fg, bins)
    else:
        errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
        fg_sorted = fg.gather(1, perm)
        losses = (errors_sorted * lovasz_grad(fg_sorted.t()).t()).sum(dim=1)  # (C,)
    if classes == "present":
        keep = fg.sum(dim=1) > 0
    elif classes == "all":
        keep = torch.ones(c, dtype=torch.bool, device=probas.device)
    else:
        keep = torch.zeros(c, dtype=torch.bool, device=probas.device)
        keep[torch.as_tensor(list(classes), dtype=torch.long, device=probas.device)] = True
    w = keep.to(probas.dtype) if class_weights is None else class_weights * keep
    return safe_div((losses * w).sum(), w.sum())


def lovasz_softmax_binned(errors: Tensor, fg: Tensor, bins: int) -> Tensor:
    """Per-class Lovász losses ``(C,)`` from ``errors`` and 0/1 ``fg`` (both ``(C, P)``) without a sort.

    The Lovász extension sums each error times the Jaccard increment at its rank (Berman et al. Alg. 1).
    Errors are grouped in ``bins`` equal-width bins of [0, 1], each split into its foreground pixels then its
    background pixels: a group contributes its mean error times the Jaccard increment over the whole group,
    which needs only counts. Exact when errors are equal within each bin; otherwise each class's loss moves
    by less than ``1 / bins`` (the increments sum to ≤ 1). Each pixel's gradient is its group's mean increment.
    """
    c = errors.shape[0]
    slots = 2 * bins  # slot 2k: foreground of the k-th highest bin, 2k + 1: its background
    b = (errors.detach() * bins).long().clamp_(0, bins - 1)
    key = 2 * (bins - 1 - b) + (fg < 0.5).long() + torch.arange(c, device=errors.device).unsqueeze(1) * slots
    key = key.reshape(-1)
    n = torch.bincount(key, minlength=c * slots).view(c, slots).to(errors.dtype)
    n_fg = n.clone()
    n_fg[:, 1::2] = 0
    e_sum = errors.new_zeros(c * slots).index_add(0, key, errors.reshape(-1)).view(c, slots)
    gts = n_fg.sum(dim=1, keepdim=True)
    intersection = gts - n_fg.cumsum(dim=1)
    union = gts + (n - n_fg).cumsum(dim=1)
    jaccard = torch.where(union > 0, 1.0 - intersection / union.clamp_min(1.0), torch.zeros_like(union))
    increments = jaccard - torch.nn.functional.pad(jaccard[:, :-1], (1, 0))
    return (e_sum / n.clamp_min(1.0) * increments).sum(dim=1)


def _check_classes(classes: object) -> Classes:
    if classes in ("all", "present"):
        return str(classes)
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) == 0 or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in classes):
        raise ConfigError(f"loss.criterion.classes must be 'present', 'all' or a non-empty list of "
                          f"class ids >= 0, got {classes!r}")
    return [int(k) for k in classes]


class LovaszSoftmax(SegLoss):
    """Lovász-Softmax on ``softmax(logits)`` (Berman et al. 2018).

    Args:
        class_weights: weights of the per-class terms in the mean (length C).
        ignore_index: label of pixels left out.
        classes: ``"present"`` (average over classes in the target), ``"all"``, or a list of ids.
        per_image: one loss per image, averaged over images (else one over the whole batch).
        bins: 0 = the reference's exact sort; N ≥ 2 = errors grouped in N bins
            (:func:`lovasz_softmax_binned`: O(P), each class's loss within 1/N of exact).
    """

    def __init__(self, class_weights: WeightsLike = None, ignore_index: int = 255,
                 classes: Classes = "present", per_image: bool = False, bins: int = 0) -> None:
        super().__init__(class_weights, ignore_index)
        self.classes = _check_classes(classes)
        if not isinstance(per_image, bool):
            raise ConfigError(f"loss.criterion.per_image must be true or false, got {per_image!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins == 1 or bins < 0:
            raise ConfigError(f"loss.criterion.bins must be 0 (exact sort) or an integer >= 2, got {bins!r}")
        self.per_image = per_image
        self.bins = bins

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        w = self.weights_for(logits, target)
        c = logits.shape[1]
        if not isinstance(self.classes, str) and max(self.classes) >= c:
            raise ConfigError(f"loss.criterion.classes {self.classes} name a class >= the {c} classes")
        probas = logits.softmax(dim=1).movedim(1, -1)  # (B, H, W, C)
        if not self.per_image:
            return self._flat(probas.reshape(-1, c), target.reshape(-1), w)
        valid = self.valid_mask(target).reshape(target.shape[0], -1).any(dim=1)
        losses = [self._flat(p.reshape(-1, c), t.reshape(-1), w) for p, t in zip(probas, target)]
        n = valid.sum().to(probas.dtype)
        return safe_div((torch.stack(losses) * valid.to(probas.dtype)).sum(), n)

    def _flat(self, probas: Tensor, labels: Tensor, w: Union[Tensor, None]) -> Tensor:
        valid = labels != self.ignore_index
        return lovasz_softmax_flat(probas[valid], labels[valid], self.classes, w, self.bins)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, classes={self.classes!r}, per_image={self.per_image}, bins={self.bins}"
