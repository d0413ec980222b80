"""The training step and the evaluation loop (no config reading here: plain arguments only)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor, nn

from segdeconv.errors import UserError
from segdeconv.metrics import ConfusionMatrix


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(x: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


@dataclass
class StepConfig:
    """How one optimisation step runs."""

    device: torch.device
    amp_dtype: Optional[torch.dtype] = None
    accumulate: int = 1
    channels_last: bool = False
    grad_clip: Optional[float] = None


@dataclass
class LoopState:
    """Progress counters saved in checkpoints."""

    epoch: int = 0
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # micro-batches consumed in the current epoch
    best_metric: float = float("-inf")
    losses: list = field(default_factory=list)


class NonFiniteLoss(UserError):
    """The loss or gradients became NaN/Inf."""


def train_batches(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    criterion: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: Optional[torch.amp.GradScaler],
    cfg: StepConfig,
    state: LoopState,
    on_step: Optional[Callable[[float, int], bool]] = None,
) -> None:
    """Consume ``batches``: forward, loss/accumulate, backward, and an optimizer step every
    ``cfg.accumulate`` micro-batches. ``on_step(loss, images)`` runs after each optimizer step
    and returns False to stop early (max_steps, pre-emption)."""
    model.train()
    run_loss, run_imgs = 0.0, 0
    for images, masks in batches:
        images = to_device(images, cfg.device, cfg.channels_last)
        masks = masks.to(cfg.device, non_blocking=True)
        with autocast(cfg.device, cfg.amp_dtype):
            logits = model(images)  # (B, C, H, W)
        loss = criterion(logits.float(), masks) / cfg.accumulate
        if not torch.isfinite(loss):
            if scaler is None or not scaler.is_enabled():
                raise NonFiniteLoss(
                    f"loss is {loss.item()} at step {state.step} (lr {optimizer.param_groups[0]['lr']:.3g}); "
                    f"lower optimizer.lr, use trainer.precision=fp32, or check the labels/class weights"
                )
        (scaler.scale(loss) if scaler is not None else loss).backward()
        state.batch_in_epoch += 1
        run_loss += float(loss.detach()) * cfg.accumulate
        run_imgs += images.shape[0]
        if state.batch_in_epoch % cfg.accumulate:
            continue
        _optimizer_step(model, optimizer, scaler, cfg.grad_clip)
        scheduler.step()
        state.step += 1
        keep_going = on_step(run_loss / cfg.accumulate, run_imgs) if on_step else True
        run_loss, run_imgs = 0.0, 0
        if not keep_going:
            return


def _optimizer_step(model: nn.Module, optimizer, scaler, grad_clip: Optional[float]) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    ignore_index: int = 255,
    channels_last: bool = False,
    predict: Optional[Callable[[nn.Module, Tensor], Tensor]] = None,
    on_batch: Optional[Callable[[Tensor, Tensor, Tensor], None]] = None,
) -> ConfusionMatrix:
    """Accumulate a confusion matrix over ``batches`` (the caller all-reduces it under DDP).

    ``predict(model, images) -> logits`` replaces plain ``model(images)`` (TTA, sliding window);
    ``on_batch(images, masks, pred)`` sees every batch (image grids, worst-case mining)."""
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    for images, masks in batches:
        images = to_device(images, device, channels_last)
        masks = masks.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = predict(model, images) if predict else model(images)
        pred = logits.argmax(1)
        cm.update(pred, masks)
        if on_batch is not None:
            on_batch(images, masks, pred)
    return cm


class Throughput:
    """Images per second over a sliding window of steps."""

    def __init__(self) -> None:
        self.t0, self.n = time.perf_counter(), 0

    def add(self, images: int) -> float:
        self.n += images
        dt = time.perf_counter() - self.t0
        return self.n / dt if dt > 0 else math.nan
