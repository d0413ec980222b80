"""Pixel-wise softmax cross-entropy with class weights and two normalisations.

``normalize="weight"`` is PyTorch's ``nn.CrossEntropyLoss(weight=w, reduction="mean")``::

    L = sum_i w[y_i] * nll_i / sum_i w[y_i]

``normalize="valid"`` is Caffe's ``SoftmaxWithLoss`` as caffe-segnet trains SegNet with median
frequency balancing (Badrinarayanan et al., TPAMI 2017, "Training"), ``loss_param {
class_weighting: … normalize: true }``: alexgkendall/caffe-segnet
``src/caffe/layers/softmax_loss_layer.cpp`` (commit 7e05cab), ``Forward_cpu`` does
``loss -= log(max(prob[label], FLT_MIN)) * class_weighting[label]; ++count`` for every non-ignored
pixel, then ``loss / count``::

    L = sum_i w[y_i] * nll_i / #{i : y_i != ignore_index}

Both sums run over the non-ignored pixels and coincide with the plain mean without weights. Unlike
Caffe (``0 / 0``) a batch with nothing to normalise by gives 0 with a zero gradient. Caffe's
``FLT_MIN`` clamp is not needed: ``log_softmax`` is finite for finite logits.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from segdeconv.losses._base import SegLoss, WeightsLike, check_normalize, safe_div


def weighted_nll(logits: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int) -> Tensor:
    """Per-pixel ``w[y] * -log softmax(logits)[y]`` (``(B, H, W)``), 0 at ignored pixels."""
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none")


def normaliser(target: Tensor, weight: Optional[Tensor], ignore_index: int, normalize: str,
               dtype: torch.dtype) -> Tensor:
    """The denominator: the non-ignored pixel count (``"valid"``) or ``sum w[y]`` (``"weight"``)."""
    valid = target != ignore_index
    if normalize == "valid" or weight is None:
        return valid.sum().to(dtype)
    return weight[target.masked_fill(~valid, 0)].masked_fill(~valid, 0).sum()


def reduce_ce(logits: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
              normalize: str) -> Tensor:
    """Weighted cross-entropy over the non-ignored pixels, normalised as ``normalize`` says."""
    num = weighted_nll(logits, target, weight, ignore_index).sum()
    return safe_div(num, normaliser(target, weight, ignore_index, normalize, num.dtype))


class CrossEntropy(SegLoss):
    """Softmax cross-entropy; ``normalize`` is ``"weight"`` (PyTorch) or ``"valid"`` (Caffe/SegNet).

    Args:
        class_weights: per-class weights ``w`` (length C), e.g. SegNet's median-frequency weights.
        ignore_index: label of pixels that contribute nothing (neither loss nor count).
        normalize: ``"weight"``: divide by ``sum w[y]`` over the valid pixels;
            ``"valid"``: divide by the number of valid pixels (caffe-segnet's ``normalize: true``).
    """

    def __init__(self, class_weights: WeightsLike = None, ignore_index: int = 255,
                 normalize: str = "weight") -> None:
        super().__init__(class_weights, ignore_index)
        self.normalize = check_normalize(normalize)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        w = self.weights_for(logits, target)
        return reduce_ce(logits, target, w, self.ignore_index, self.normalize)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, normalize={self.normalize!r}"
