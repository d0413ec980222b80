"""Softmax focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection", §3.2, eq. 5).

Per non-ignored pixel ``i`` with true class ``y_i`` and ``p_t = softmax(logits_i)[y_i]``::

    FL_i = -alpha[y_i] * (1 - p_t) ** gamma * log p_t

``alpha`` is ``class_weights`` (1 without), and the sum is divided by the number of non-ignored
pixels (as Caffe's ``normalize: true``). ``gamma = 0`` is :class:`CrossEntropy` with
``normalize="valid"``. Without weights this equals smp's ``softmax_focal_loss_with_logits``
(``reduction="mean"``) over the valid pixels.
"""
from __future__ import annotations

import torch
from torch import Tensor

from segdeconv.losses._base import SegLoss, WeightsLike, check_float, safe_div


class Focal(SegLoss):
    """Softmax focal loss, class weights as ``alpha``, normalised by the valid pixel count.

    Args:
        class_weights: per-class ``alpha`` (length C); ``None`` = 1 for every class.
        ignore_index: label of pixels that contribute nothing.
        gamma: focusing parameter ``>= 0`` (Lin et al. use 2).
    """

    def __init__(self, class_weights: WeightsLike = None, ignore_index: int = 255,
                 gamma: float = 2.0) -> None:
        super().__init__(class_weights, ignore_index)
        self.gamma = check_float("loss.criterion.gamma", gamma, 0.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        w = self.weights_for(logits, target)
        valid = self.valid_mask(target)
        labels = target.masked_fill(~valid, 0).unsqueeze(1)
        logpt = logits.log_softmax(dim=1).gather(1, labels).squeeze(1)
        # 1 - p_t via expm1 (exact near p_t = 1); the floor keeps d/dx x**gamma finite for gamma < 1
        one_minus = (-torch.expm1(logpt)).clamp_min(torch.finfo(logpt.dtype).tiny)
        loss = -one_minus.pow(self.gamma) * logpt
        if w is not None:
            loss = loss * w[labels.squeeze(1)]
        loss = torch.where(valid, loss, torch.zeros_like(loss))
        return safe_div(loss.sum(), valid.sum().to(loss.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"
