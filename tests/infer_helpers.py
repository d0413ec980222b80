"""Helpers shared by the inference/predict tests."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn


class _Payload:
    """Unpickling this calls open(marker, "w"): code execution if the loader allowed it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint whose unpickling would create ``marker``; returns (checkpoint, marker)."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": {}, "hook": _Payload(marker)}, path)
    return path, marker


def not_inplace(module: nn.Module) -> nn.Module:
    """A copy whose ReLUs are not in-place (captum's ReLU backward hooks need that)."""
    out = copy.deepcopy(module)
    for m in out.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return out
