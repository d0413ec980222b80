"""Soft multi-class Dice loss on softmax probabilities (after Milletari et al. 2016, V-Net, §3,
whose denominator squares the terms; here the linear sums of smp).

Follows segmentation_models_pytorch 0.6.0 ``losses/dice.py`` ``DiceLoss(mode="multiclass")``:
statistics are summed over the batch and the pixels (one Dice per class), ignored pixels are
removed from both the prediction and the one-hot target, and per class::

    dice_c = (I_c + smooth) / max(0.5 * (P_c + T_c) + smooth, eps)
    I_c = sum p_c * t_c,  P_c = sum p_c,  T_c = sum t_c,  loss_c = 1 - dice_c

A class absent from the (non-ignored) target contributes 0 — whatever probability mass it is
given — but still counts in the mean over all C classes, exactly as smp does. With class weights
the mean is weighted: ``sum w_c loss_c / sum w_c``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from segdeconv.losses._base import SegLoss, WeightsLike, check_float, safe_div


class Dice(SegLoss):
    """``1 - soft Dice`` per class, (weighted) mean over classes; see the module docstring.

    Args:
        class_weights: weights of the per-class terms in the mean (length C).
        ignore_index: label of pixels left out of every sum.
        smooth: additive smoothing of numerator and denominator (smp's ``smooth``), >= 0.
        eps: lower bound of the denominator, > 0.
    """

    def __init__(self, class_weights: WeightsLike = None, ignore_index: int = 255,
                 smooth: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__(class_weights, ignore_index)
        self.smooth = check_float("loss.criterion.smooth", smooth, 0.0)
        self.eps = check_float("loss.criterion.eps", eps, 0.0, low_open=True)

    def per_class(self, logits: Tensor, target: Tensor) -> Tensor:
        """``(C,)`` losses ``1 - dice_c``, 0 for classes absent from the valid target."""
        b, c = logits.shape[:2]
        valid = self.valid_mask(target).reshape(b, 1, -1).to(logits.dtype)
        probs = logits.log_softmax(dim=1).exp().reshape(b, c, -1) * valid
        labels = target.reshape(b, -1).masked_fill(valid[:, 0] == 0, 0)
        onehot = F.one_hot(labels, c).permute(0, 2, 1).to(logits.dtype) * valid
        inter = (probs * onehot).sum(dim=(0, 2))
        t_sum = onehot.sum(dim=(0, 2))
        den = (0.5 * (probs.sum(dim=(0, 2)) + t_sum) + self.smooth).clamp_min(self.eps)
        dice = (inter + self.smooth) / den
        return (1.0 - dice) * (t_sum > 0).to(logits.dtype)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        w = self.weights_for(logits, target)
        loss = self.per_class(logits, target)
        if w is None:
            return loss.mean()
        return safe_div((loss * w).sum(), w.sum())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, smooth={self.smooth}, eps={self.eps}"
