"""Per-optimizer-step learning-rate schedules; each takes ``total_steps`` from the trainer."""
from __future__ import annotations

import math
from typing import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warm(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def poly(optimizer: Optimizer, total_steps: int, power: float = 0.9, warmup_steps: int = 0) -> LambdaLR:
    """lr · (1 − step/total)^power (Chen et al., DeepLab), linear warm-up first."""
    return LambdaLR(
        optimizer,
        lambda s: _warm(s, warmup_steps) * max(0.0, 1.0 - s / max(1, total_steps)) ** power,
    )


def cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> LambdaLR:
    """Cosine decay to ``min_lr_ratio`` · lr after a linear warm-up."""

    def f(s: int) -> float:
        t = min(1.0, max(0, s - warmup_steps) / max(1, total_steps - warmup_steps))
        return _warm(s, warmup_steps) * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    return LambdaLR(optimizer, f)


def step(optimizer: Optimizer, total_steps: int, milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1) -> LambdaLR:
    """Multiply lr by ``gamma`` at each milestone, given as a fraction of ``total_steps``."""
    marks = [int(m * total_steps) for m in milestones]
    return LambdaLR(optimizer, lambda s: gamma ** sum(s >= m for m in marks))
