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
    """``x`` on ``device`` (NHWC if ``channels_last``); an asynchronous copy only to a GPU, from the
    loader's pinned memory (``pin_memory`` is set for CUDA only)."""
    x = x.to(device, non_blocking=device.type == "cuda")
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
    max_batches: Optional[int] = None,
) -> None:
    """Consume ``batches``: forward, loss/accumulate, backward, and an optimizer step every
    ``cfg.accumulate`` micro-batches. ``on_step(loss, images)`` runs after each optimizer step
    and returns False to stop early (max_steps, pre-emption).

    Accumulation (Caffe's ``iter_size``): each micro-batch loss is divided by ``cfg.accumulate``, so the
    summed gradient is that of one ``accumulate``× batch (exactly, for a loss averaged over equally many
    pixels per micro-batch; BatchNorm statistics aside). Under DDP the non-final micro-batches run in
    ``model.no_sync()``: gradients are all-reduced once per optimizer step, not once per micro-batch.
    ``max_batches`` caps the micro-batches consumed: the trainer passes the epoch's complete steps, so
    an epoch's ``len % accumulate`` leftover micro-batches are never run (not trained and thrown away).

    A step whose loss or gradients are not finite updates nothing (weights, optimizer state and
    BatchNorm statistics stay as before it); the fp16 scaler handles its own, otherwise more than
    ``cfg.skip_nonfinite`` such steps in a row raise :class:`NonFiniteLoss`. The host waits on the
    device once per optimizer step (the loss and the finiteness decision read together), never per
    micro-batch."""
    model.train()
    optimizer.zero_grad(set_to_none=True)  # never carry a partial accumulation across epochs
    backup = _Buffers(model)
    run_loss, run_imgs, used = torch.zeros((), device=cfg.device), 0, 0
    for images, masks in batches:
        if max_batches is not None and used >= max_batches:
            return
        if state.batch_in_epoch % cfg.accumulate == 0:
            backup.save()  # BatchNorm statistics before this step's first forward pass
        final = (state.batch_in_epoch + 1) % cfg.accumulate == 0
        with _sync_unless(model, final):
            images = to_device(images, cfg.device, cfg.channels_last)
            masks = to_device(masks, cfg.device)
            with autocast(cfg.device, cfg.amp_dtype):
                logits = model(images)  # (B, C, H, W)
            loss = criterion(logits.float(), masks) / cfg.accumulate
            (scaler.scale(loss) if scaler is not None else loss).backward()
        state.batch_in_epoch += 1
        used += 1
        run_loss += loss.detach()
        run_imgs += images.shape[0]
        if not final:
            continue
        mean_loss, ok = _optimizer_step(model, optimizer, scaler, cfg.grad_clip, run_loss)
        if ok:
            state.nonfinite_run = 0
        else:
            backup.restore()
            _skipped(state, scaler, cfg, math.isfinite(mean_loss), mean_loss, optimizer.param_groups[0]["lr"])
        scheduler.step()
        state.step += 1
        keep_going = on_step(mean_loss, run_imgs) if on_step else True
        run_loss, run_imgs = torch.zeros((), device=cfg.device), 0
        if not keep_going:
            return


def _sync_unless(model: nn.Module, final: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync()`` for a non-final micro-batch (gradients stay local until the last one)."""
    no_sync = getattr(model, "no_sync", None)
    return no_sync() if no_sync is not None and not final else contextlib.nullcontext()


class _Buffers:
    """A copy of the model's buffers (BatchNorm statistics, counters), kept in preallocated storage, so
    a non-finite step can be undone without a host round-trip or a new allocation per step."""

    def __init__(self, model: nn.Module) -> None:
        self.live = [b for b in model.buffers()]
        self.copy = [b.detach().clone() for b in self.live]

    def save(self) -> None:
        if self.live:
            with torch.no_grad():
                torch._foreach_copy_(self.copy, self.live)

    def restore(self) -> None:
        """Undo the BatchNorm statistics (and counters) a non-finite forward pass polluted."""
        if self.live:
            with torch.no_grad():
                torch._foreach_copy_(self.live, self.copy)


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


def _optimizer_step(model: nn.Module, optimizer, scaler, grad_clip: Optional[float],
                    summed_loss: Tensor) -> tuple[float, bool]:
    """Clip and step unless the loss or the gradients are not finite (then nothing changes).

    Returns ``(loss, stepped)``: both come from one device→host read, the only one per step."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.zeros((), device=summed_loss.device)
    if grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    elif scaler is None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else norm
    loss, finite = torch.stack([summed_loss.float(), torch.isfinite(norm.float() + summed_loss.float()).float()]).tolist()
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skips by itself on inf/NaN gradients, then lowers the scale
        scaler.update()
        ok = scaler.get_scale() >= scale
    else:
        ok = bool(finite)
        if ok:
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, ok


class Throughput:
    """Images per second over a sliding window of steps."""

    def __init__(self) -> None:
        self.t0, self.n = time.perf_counter(), 0

    def add(self, images: int) -> float:
        self.n += images
        dt = time.perf_counter() - self.t0
        return self.n / dt if dt > 0 else math.nan
