"""A weighted sum of losses, e.g. cross-entropy + Lovász-Softmax (``conf/loss/ce_lovasz.yaml``)."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from torch import Tensor, nn

from segdeconv.errors import ConfigError
from segdeconv.losses._base import WeightsLike, as_class_weights, check_int


class WeightedSum(nn.Module):
    """``sum_k weights[k] * terms[k](logits, target)``.

    Args:
        terms: loss *constructors* (classes or ``functools.partial``; Hydra nodes with
            ``_partial_: true``), each called as ``term(class_weights=…, ignore_index=…)``.
        weights: one non-negative factor per term.
        class_weights: per-class weights handed to every term.
        ignore_index: handed to every term.
    """

    def __init__(self, terms: Sequence[Callable[..., nn.Module]], weights: Sequence[float],
                 class_weights: WeightsLike = None, ignore_index: int = 255) -> None:
        super().__init__()
        terms, weights = list(terms), list(weights)
        if not terms or len(terms) != len(weights):
            raise ConfigError(f"loss.criterion.terms ({len(terms)}) and loss.criterion.weights "
                              f"({len(weights)}) need the same, non-zero, length")
        for k, w in enumerate(weights):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"loss.criterion.weights[{k}] must be a finite number >= 0, got {w!r}")
        for k, t in enumerate(terms):
            if isinstance(t, nn.Module) or not callable(t):
                raise ConfigError(f"loss.criterion.terms[{k}] must be a loss constructor (a Hydra node "
                                  f"with _partial_: true), got {type(t).__name__}")
        cw = as_class_weights(class_weights)
        ii = check_int("loss.ignore_index", ignore_index)
        self.terms = nn.ModuleList(t(class_weights=cw, ignore_index=ii) for t in terms)
        self.weights = [float(w) for w in weights]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total: Optional[Tensor] = None
        for w, term in zip(self.weights, self.terms):
            part = w * term(logits, target)
            total = part if total is None else total + part
        assert total is not None  # __init__ refuses an empty terms list
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
