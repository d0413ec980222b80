"""FLOP counting for benchmark tables (torch.utils.flop_counter; multiply-add = 2 FLOPs)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def forward_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GFLOPs of one forward pass of ``model`` on ``x`` (per batch)."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 1e9
