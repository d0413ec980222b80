"""Segmentation losses: ``forward(logits (B, C, H, W), target (B, H, W) int64) -> scalar``.

Every constructor takes ``class_weights`` (length C, or ``None``) and ``ignore_index`` plus its own
options; a batch without a usable pixel gives 0 with a zero gradient. Config group: ``conf/loss/``.
"""
from segdeconv.losses.combined import WeightedSum
from segdeconv.losses.cross_entropy import CrossEntropy
from segdeconv.losses.dice import Dice
from segdeconv.losses.focal import Focal
from segdeconv.losses.lovasz import LovaszSoftmax, lovasz_grad, lovasz_softmax_flat
from segdeconv.losses.ohem import OHEMCrossEntropy

__all__ = ["CrossEntropy", "Dice", "Focal", "LovaszSoftmax", "OHEMCrossEntropy", "WeightedSum",
           "lovasz_grad", "lovasz_softmax_flat"]
