"""The training step: autocast, gradient accumulation, GradScaler, the non-finite guard (Caffe's
``iter_size`` is our ``accumulate``). Plain arguments only."""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor, nn

from segdeconv.errors import UserError

log = logging.getLogger("segdeconv")


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
    skip_nonfinite: int = 0  # fp32/bf16: tolerate this many non-finite steps in a row (update skipped)


@dataclass
class LoopState:
    """Progress counters saved in checkpoints."""

    epoch: int = 0
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # micro-batches consumed in the current epoch
    best_metric: float = float("-inf")
    losses: list = field(default_factory=list)
    nonfinite_run: int = 0  # consecutive skipped (non-finite) steps
    skipped_steps: int = 0  # all skipped steps of the run


class NonFiniteLoss(UserError):
    """The loss or gradients became NaN/Inf."""


class StopRequest:
    """While active (``with``), SIGTERM/SIGINT only set :attr:`signum`: the training loop finishes its
    step, saves a checkpoint and stops. A second signal aborts at once (KeyboardInterrupt). Handlers
    are installed from the main thread only (elsewhere the request is a plain flag)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.stopped = False  # the loop acted on the request
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            if handler is not None:
                signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # no I/O here: the main thread may be inside a write
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


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
    and returns False to stop early (max_steps, pre-emption).

    A step whose loss or gradients are not finite updates nothing (weights, optimizer state and
    BatchNorm statistics stay as before it); the fp16 scaler handles its own, otherwise more than
    ``cfg.skip_nonfinite`` such steps in a row raise :class:`NonFiniteLoss`."""
    model.train()
    optimizer.zero_grad(set_to_none=True)  # never carry a partial accumulation across epochs
    run_loss, run_imgs, loss_ok, saved = 0.0, 0, True, None
    for images, masks in batches:
        saved = saved if saved is not None else _buffers(model)
        images = to_device(images, cfg.device, cfg.channels_last)
        masks = masks.to(cfg.device, non_blocking=True)
        with autocast(cfg.device, cfg.amp_dtype):
            logits = model(images)  # (B, C, H, W)
        loss = criterion(logits.float(), masks) / cfg.accumulate
        loss_ok = loss_ok and bool(torch.isfinite(loss))
        (scaler.scale(loss) if scaler is not None else loss).backward()
        state.batch_in_epoch += 1
        run_loss += float(loss.detach()) * cfg.accumulate
        run_imgs += images.shape[0]
        if state.batch_in_epoch % cfg.accumulate:
            continue
        if _optimizer_step(model, optimizer, scaler, cfg.grad_clip, loss_ok):
            state.nonfinite_run = 0
        else:
            _restore_buffers(model, saved)
            _skipped(state, scaler, cfg, loss_ok, run_loss / cfg.accumulate, optimizer.param_groups[0]["lr"])
        scheduler.step()
        state.step += 1
        keep_going = on_step(run_loss / cfg.accumulate, run_imgs) if on_step else True
        run_loss, run_imgs, loss_ok, saved = 0.0, 0, True, None
        if not keep_going:
            return


def _buffers(model: nn.Module) -> list[Tensor]:
    return [b.detach().clone() for b in model.buffers()]


def _restore_buffers(model: nn.Module, saved: Optional[list[Tensor]]) -> None:
    """Undo the BatchNorm statistics (and counters) a non-finite forward pass polluted."""
    with torch.no_grad():
        for b, v in zip(model.buffers(), saved or []):
            b.copy_(v)


def _skipped(state: LoopState, scaler, cfg: StepConfig, loss_ok: bool, loss: float, lr: float) -> None:
    """Book-keep a skipped step; raise :class:`NonFiniteLoss` once the tolerance is used up."""
    state.nonfinite_run += 1
    state.skipped_steps += 1
    what = f"loss is {loss}" if not loss_ok else f"gradients are not finite (loss {loss:.4g})"
    if scaler is not None and scaler.is_enabled():
        log.debug("step %d: %s; the fp16 scaler skipped the update", state.step + 1, what)
        return
    if state.nonfinite_run > cfg.skip_nonfinite:
        raise NonFiniteLoss(
            f"{what} at step {state.step + 1} (lr {lr:.3g}"
            f"{f', {state.nonfinite_run} bad steps in a row' if state.nonfinite_run > 1 else ''}); stopped without "
            f"updating the weights, checkpoints on disk are intact. Lower optimizer.lr, set trainer.grad_clip, "
            f"use trainer.precision=fp32, check the labels/class weights, or tolerate isolated bad batches "
            f"with trainer.skip_nonfinite_steps=N"
        )
    log.warning("step %d: %s (lr %.3g); update skipped (%d in a row, trainer.skip_nonfinite_steps=%d)",
                state.step + 1, what, lr, state.nonfinite_run, cfg.skip_nonfinite)


def _optimizer_step(model: nn.Module, optimizer, scaler, grad_clip: Optional[float], loss_ok: bool = True) -> bool:
    """Clip and step; returns False (and changes nothing) when the loss or gradients are not finite."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.zeros(())
    if grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    elif scaler is None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else norm
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skips by itself on inf/NaN gradients, then lowers the scale
        scaler.update()
        ok = scaler.get_scale() >= scale
    else:
        ok = loss_ok and bool(torch.isfinite(norm))
        if ok:
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return ok


class Throughput:
    """Images per second over a sliding window of steps."""

    def __init__(self) -> None:
        self.t0, self.n = time.perf_counter(), 0

    def add(self, images: int) -> float:
        self.n += images
        dt = time.perf_counter() - self.t0
        return self.n / dt if dt > 0 else math.nan
