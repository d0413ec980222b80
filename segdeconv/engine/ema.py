"""Exponential moving average of the weights (``trainer.ema_decay``), validated and shipped in their place.

Polyak & Juditsky (1992) averaging in its exponential form (as timm's ``ModelEma*`` and mmengine's
``ExponentialMovingAverage``): after every optimizer step ``ema = d·ema + (1 − d)·weights``, BatchNorm
running statistics included, with TensorFlow's ``ExponentialMovingAverage(num_updates=t)`` warm-up
``d_t = min(d, (1 + t) / (10 + t))`` so that the early, random weights are forgotten quickly. Under
torchrun the averaged buffers are broadcast from rank 0 after each update (without ``sync_bn`` every
rank's BatchNorm statistics differ a little), so every rank validates and saves the same average. Built on :class:`torch.optim.swa_utils.AveragedModel` (its
``use_buffers`` averaging and step counter); the decay is computed on the device, so an update never
waits on it. Integer buffers (``num_batches_tracked``) are copied, not averaged.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def _ema_update(decay: float):
    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], n: Tensor) -> None:
        if not (averaged[0].is_floating_point() or averaged[0].is_complex()):
            torch._foreach_copy_(averaged, current)
            return
        d = torch.clamp((1 + n) / (10 + n), max=decay).to(averaged[0].dtype)  # n ≥ 1: the first update copies
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1 - d))

    return update


class WeightEMA(AveragedModel):
    """An averaged copy of ``model`` (eval mode, no gradients); ``update(model)`` after each step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(model, multi_avg_fn=_ema_update(decay), use_buffers=True)
        self.decay = decay
        self.module.eval().requires_grad_(False)

    def update(self, model: nn.Module) -> None:
        self.update_parameters(model)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for buf in self.module.buffers():  # the parameters are already equal on every rank (DDP)
                torch.distributed.broadcast(buf, src=0)

    def train(self, mode: bool = True) -> "WeightEMA":
        """Always eval: the average is only ever used for validation and inference."""
        return super().train(False)

    def checkpoint(self) -> dict[str, Any]:
        """``{"ema_model": weights + buffers (the model's own keys), "ema_updates": steps averaged}``."""
        return {"ema_model": self.module.state_dict(), "ema_updates": int(self.n_averaged)}

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        self.module.load_state_dict(ckpt["ema_model"])
        self.n_averaged.fill_(int(ckpt["ema_updates"]))
