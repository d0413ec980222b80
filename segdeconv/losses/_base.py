"""Shared argument checks and the base class of every segmentation loss.

Every loss maps ``logits (B, C, H, W)`` and ``target (B, H, W)`` int64 to a scalar tensor that is
always connected to the graph: a batch without a usable pixel gives exactly ``0`` with a zero
gradient, so gradient accumulation over micro-batches is never poisoned by NaN.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from segdeconv.errors import ConfigError

WeightsLike = Union[Tensor, Sequence[float], None]
NORMALIZE = ("valid", "weight")


def as_class_weights(class_weights: WeightsLike) -> Optional[Tensor]:
    """``class_weights`` as a 1-D float32 tensor (``None`` stays ``None``); rejects bad values."""
    if class_weights is None:
        return None
    try:
        if not isinstance(class_weights, Tensor):  # lists, tuples, ListConfig
            class_weights = [float(v) for v in class_weights]
        w = torch.as_tensor(class_weights, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"loss.class_weights: {class_weights!r} is not a list of numbers ({e})") from None
    if w.dim() != 1 or w.numel() == 0:
        raise ConfigError(f"loss.class_weights must be a non-empty 1-D list, got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ConfigError(f"loss.class_weights must be finite and >= 0, got {w.tolist()}")
    if not bool((w > 0).any()):
        raise ConfigError("loss.class_weights are all zero; at least one class needs a positive weight")
    return w


def check_int(name: str, value: object, minimum: Optional[int] = None) -> int:
    """``value`` as an ``int`` (bools and floats rejected), optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(name: str, value: object, low: float, high: float = math.inf,
                low_open: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and v <= high
    if not ok:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"
        raise ConfigError(f"{name} must be in {span}, got {value!r}")
    return v


def check_normalize(value: object) -> str:
    """``normalize`` is ``"valid"`` (Caffe) or ``"weight"`` (PyTorch)."""
    if value not in NORMALIZE:
        raise ConfigError(f"loss.criterion.normalize must be one of {list(NORMALIZE)}, got {value!r}")
    return str(value)


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, and ``num`` itself (which is then 0) where ``den == 0``: no NaN in value or grad."""
    return num / torch.where(den > 0, den, torch.ones_like(den))


class SegLoss(nn.Module):
    """Base class: holds ``class_weights`` (a non-persistent buffer) and ``ignore_index``."""

    class_weights: Optional[Tensor]

    def __init__(self, class_weights: WeightsLike = None, ignore_index: int = 255) -> None:
        super().__init__()
        self.register_buffer("class_weights", as_class_weights(class_weights), persistent=False)
        self.ignore_index = check_int("loss.ignore_index", ignore_index)

    def weights_for(self, logits: Tensor, target: Tensor) -> Optional[Tensor]:
        """Check shapes; return the class weights on ``logits``' device and dtype (or ``None``)."""
        if logits.dim() < 2 or target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(f"{type(self).__name__}: logits {tuple(logits.shape)} (B, C, H, W) and target "
                             f"{tuple(target.shape)} (B, H, W) do not match")
        w = self.class_weights
        if w is None:
            return None
        if w.numel() != logits.shape[1]:
            raise ConfigError(f"loss.class_weights has {w.numel()} values but the logits have "
                              f"{logits.shape[1]} classes; give one weight per class")
        return w.to(device=logits.device, dtype=logits.dtype)

    def valid_mask(self, target: Tensor) -> Tensor:
        """``target != ignore_index``."""
        return target != self.ignore_index

    def extra_repr(self) -> str:
        w = None if self.class_weights is None else [round(v, 4) for v in self.class_weights.tolist()]
        return f"class_weights={w}, ignore_index={self.ignore_index}"
