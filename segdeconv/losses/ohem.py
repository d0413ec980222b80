"""Cross-entropy with online hard example mining (OHEM) over pixels.

Pixel selection as open-mmlab/mmsegmentation ``mmseg/structures/sampler/ohem_pixel_sampler.py``
(``OHEMPixelSampler.sample``), the PSPNet-style recipe (Zhao et al. 2017); the idea is Shrivastava
et al., "Training Region-based Object Detectors with Online Hard Example Mining", CVPR 2016.
Mining runs under ``no_grad`` on the non-ignored pixels:

* ``thresh`` set: keep every pixel whose true-class probability is ``< thresh``, and at least the
  ``k = min(min_kept * B, #valid)`` hardest (lowest true-class probability). ``min_kept`` is per
  image, as in mmseg (``batch_kept = min_kept * batch_size``). mmseg's ``prob < sorted[k]`` can
  keep ``k - 1`` (or fewer, on ties); here the ``k`` hardest are always kept.
* ``thresh=None``: keep the ``k`` pixels of largest (weighted) cross-entropy, with
  ``k = min(max(min_kept * B, ceil(top_k_ratio * #valid)), #valid)``.

The loss on the kept pixels is :class:`~segdeconv.losses.CrossEntropy` with the same
``normalize`` (``"weight"``: by ``sum w[y]`` of the kept pixels, ``"valid"``: by their number).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from segdeconv.errors import ConfigError
from segdeconv.losses._base import SegLoss, WeightsLike, check_float, check_int, check_normalize
from segdeconv.losses.cross_entropy import reduce_ce, weighted_nll


class OHEMCrossEntropy(SegLoss):
    """Cross-entropy on the hard pixels only; see the module docstring for the keep rule.

    Args:
        class_weights: per-class weights of the cross-entropy (length C).
        ignore_index: label of pixels never kept.
        thresh: keep pixels with true-class probability below this, in ``(0, 1]``; ``None`` = top-k.
        min_kept: at least this many pixels per image are kept (``>= 1``).
        top_k_ratio: top-k mode only: keep at least this fraction of the valid pixels, ``(0, 1]``.
        normalize: ``"weight"`` or ``"valid"``, as :class:`~segdeconv.losses.CrossEntropy`.
    """

    def __init__(self, class_weights: WeightsLike = None, ignore_index: int = 255,
                 thresh: Optional[float] = 0.7, min_kept: int = 100000,
                 top_k_ratio: Optional[float] = None, normalize: str = "weight") -> None:
        super().__init__(class_weights, ignore_index)
        self.thresh = None if thresh is None else check_float("loss.criterion.thresh", thresh, 0.0, 1.0,
                                                              low_open=True)
        self.min_kept = check_int("loss.criterion.min_kept", min_kept, 1)
        if top_k_ratio is not None and thresh is not None:
            raise ConfigError("loss.criterion.top_k_ratio only applies with loss.criterion.thresh=null "
                              "(top-k mode); set one of them")
        self.top_k_ratio = None if top_k_ratio is None else check_float(
            "loss.criterion.top_k_ratio", top_k_ratio, 0.0, 1.0, low_open=True)
        self.normalize = check_normalize(normalize)

    @torch.no_grad()
    def kept_mask(self, logits: Tensor, target: Tensor) -> Tensor:
        """``(B, H, W)`` bool: the valid pixels the loss is computed on."""
        w = self.weights_for(logits, target)
        logits = logits.detach()
        valid = self.valid_mask(target)
        n_valid = int(valid.sum())
        k = self.min_kept * target.shape[0]
        if self.thresh is None and self.top_k_ratio is not None:
            k = max(k, math.ceil(self.top_k_ratio * n_valid))
        k = min(k, n_valid)
        if self.thresh is not None:  # hardness = low true-class probability
            labels = target.masked_fill(~valid, 0).unsqueeze(1)
            score = -logits.softmax(dim=1).gather(1, labels).squeeze(1)[valid]
        else:  # hardness = high (weighted) cross-entropy
            score = weighted_nll(logits, target, w, self.ignore_index)[valid]
        keep = torch.zeros_like(score, dtype=torch.bool)
        keep[torch.topk(score, k, sorted=False).indices] = True
        if self.thresh is not None:
            keep |= score > -self.thresh
        out = torch.zeros_like(valid)
        out[valid] = keep
        return out

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        w = self.weights_for(logits, target)
        kept = self.kept_mask(logits, target)
        mined = target.masked_fill(~kept, self.ignore_index)
        return reduce_ce(logits, mined, w, self.ignore_index, self.normalize)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, thresh={self.thresh}, min_kept={self.min_kept}, "
                f"top_k_ratio={self.top_k_ratio}, normalize={self.normalize!r}")
