"""``Trainer``: epochs of :func:`~segdeconv.engine.step.train_batches` + validation + checkpoints.

Built from plain objects that :mod:`segdeconv.tasks.train` resolves the config into (:class:`TrainSettings`,
a :class:`~segdeconv.engine.runtime.Runtime`, model, datasets, criterion, optimizer/scheduler factories);
writes ``checkpoints/{last,best}.pt``, ``tb/`` and ``val_metrics.json`` into ``settings.out_dir``. Step
checkpoints carry everything a bit-exact resume needs (:mod:`segdeconv.engine.resume`); SIGTERM/SIGINT
finish the step, save and exit 0; non-finite weights never replace a checkpoint; the run directory is
locked (:class:`~segdeconv.engine.rundir.RunLock`); a resumed run completes the epoch end it was killed in.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segdeconv import __version__
from segdeconv.data.labelled import UNDEFINED, LabelWatch, no_labelled_pixel, require_labelled, split_name
from segdeconv.data.sampler import EpochSampler, dataset_len, loader_generator, pad_collate, quiet_worker
from segdeconv.engine.checkpoint import FORMAT as CHECKPOINT_FORMAT
from segdeconv.engine.checkpoint import finite_state, prune_step_checkpoints, save_checkpoint, step_checkpoint_path, unwrap
from segdeconv.engine.distributed import cleanup
from segdeconv.engine.ema import WeightEMA
from segdeconv.engine.eval_loop import eval_loader, evaluate
from segdeconv.engine.logger import progress
from segdeconv.engine.parallel import training_model
from segdeconv.engine.resume import resume_run
from segdeconv.engine.rng import capture_rng
from segdeconv.engine.rundir import RunLock
from segdeconv.engine.runtime import Runtime
from segdeconv.engine.step import LoopState, StepConfig, StopRequest, Throughput, train_batches
from segdeconv.engine.trackers import Loggers, open_loggers
from segdeconv.engine.writer import write_json
from segdeconv.errors import ConfigError
from segdeconv.models import registry

log = logging.getLogger("segdeconv")


@dataclass(frozen=True)
class TrainSettings:
    """What the loop reads, resolved once. The ``trainer.*`` fields carry their knob's name; type, range,
    default and doc are declared once in :mod:`segdeconv.schema` (no defaults here to drift from it)."""

    # trainer.* (segdeconv/schema.py)
    max_epochs: int
    max_steps: Optional[int]
    seed: int
    accumulate_grad_batches: int
    grad_clip: Optional[float]
    skip_nonfinite_steps: int
    val_every_epochs: int
    log_every_steps: int
    log_images: int
    checkpoint_every_steps: Optional[int]
    keep_last: int
    progress: bool
    sync_bn: bool
    compile: bool
    ema_decay: Optional[float]
    resume: Optional[str]  # None | "auto" | a checkpoint path
    # the run and its data
    out_dir: Path
    batch_size: int
    val_batch_size: int
    num_workers: int
    ignore_index: int
    resume_command: str  # printed when a signal stops the run


class Trainer:
    """Holds everything one run needs; :meth:`fit` runs it."""

    def __init__(self, settings: TrainSettings, runtime: Runtime, model: nn.Module, train_ds: Dataset,
                 val_ds: Dataset, criterion: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any], class_names: list[str], palette: list[list[int]],
                 config: dict[str, Any]) -> None:
        self.settings, self.rt, self.config = settings, runtime, config
        self.out, self.device, self.dist = settings.out_dir, runtime.device, runtime.dist
        self.train_ds, self.val_ds, self.criterion = train_ds, val_ds, criterion
        self.class_names, self.palette, self.model = class_names, palette, model
        self._loaders()
        self.steps_per_epoch = len(self.train_loader) // settings.accumulate_grad_batches
        # an epoch's leftover len % accumulate micro-batches are not run (see train_batches)
        self.batches_per_epoch = self.steps_per_epoch * settings.accumulate_grad_batches
        self.total_steps = settings.max_steps or self.steps_per_epoch * settings.max_epochs
        self.optimizer = optimizer(self.model.parameters())
        self.scheduler = scheduler(self.optimizer, total_steps=self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type) if runtime.amp_dtype == torch.float16 else None
        self.state = LoopState()
        self.history: list[dict] = []
        self.stop = StopRequest()
        self.model, self.train_model = training_model(model, self.device, self.dist, runtime.channels_last,
                                                      settings.sync_bn, settings.compile)
        self.ema = WeightEMA(unwrap(self.model), settings.ema_decay) if settings.ema_decay else None
        self.trackers: Optional[Loggers] = None

    def _loaders(self) -> None:
        s, info = self.settings, self.dist
        self.train_sampler = EpochSampler(dataset_len(self.train_ds), True, s.seed, info.world_size, info.rank)
        self.train_loader = DataLoader(
            self.train_ds, batch_size=s.batch_size, sampler=self.train_sampler, drop_last=True,
            generator=loader_generator(s.seed), num_workers=s.num_workers, pin_memory=self.device.type == "cuda",
            collate_fn=pad_collate, persistent_workers=False, worker_init_fn=quiet_worker if s.num_workers else None)
        self.val_loader = eval_loader(self.val_ds, s.val_batch_size, s.num_workers, self.device, info.rank,
                                      info.world_size)
        if len(self.train_loader) == 0:
            raise ConfigError(f"dataset.batch_size={s.batch_size} is larger than the {dataset_len(self.train_ds)} training "
                              f"images (per process); lower dataset.batch_size")
        if len(self.train_loader) < s.accumulate_grad_batches:
            raise ConfigError(f"trainer.accumulate_grad_batches={s.accumulate_grad_batches} needs that many micro-batches per epoch "
                              f"but an epoch has {len(self.train_loader)} (per process); lower "
                              f"trainer.accumulate_grad_batches or dataset.batch_size")


    # ------------------------------------------------------------------ run
    def fit(self, on_start: Optional[Callable[[], None]] = None) -> dict[str, Any]:
        """Train to the end (or a stop signal) holding the run directory's lock; returns the last metrics.
        ``on_start()`` runs once the directory is owned and a resume was accepted, before the run writes
        anything (the train task records its config there)."""
        with RunLock(self.out, self.dist.is_main):
            self.resume()
            if self.dist.is_main:
                if on_start is not None:
                    on_start()
                self.out.mkdir(parents=True, exist_ok=True)
                self.trackers = open_loggers(self.config, self.out, self.palette,  # logger=[tensorboard, mlflow, wandb]
                                       purge_step=self.state.step + 1 if self.state.step else None)
                log.info(self.rt.describe())
            try:
                with self.stop:  # SIGTERM/SIGINT: finish the step, save, stop (see _after_step)
                    self._loop()
                if self.stop.stopped and self.dist.is_main:
                    log.warning("stopped by %s at epoch %d, step %d; checkpoint: %s. Resume with:\n  %s",
                                self.stop.name or "request", self.state.epoch + 1, self.state.step,
                                self.out / "checkpoints" / "last.pt", self.settings.resume_command)
            finally:
                if self.trackers is not None:
                    self.trackers.close()
                cleanup()
        return self.history[-1] if self.history else {}

    def _loop(self) -> None:
        """Epochs, each closed by :meth:`_end_epoch`. A resumed run first completes the epoch end its
        checkpoint was written before (killed after the last step, or while validating)."""
        while not self.stop.stopped:
            if not self._epoch_end_pending():
                if self._done():
                    return
                self._train_epoch()
                if self.stop.stopped:
                    return  # mid-epoch: the checkpoint holds batch_in_epoch, the resumed run continues there
            self._end_epoch()
            self.stop.stopped = not self._done() and self._stop_requested()  # signal in validation

    def _epoch_end_pending(self) -> bool:
        """The epoch's batches are used up but it was not closed, or the validation due at this epoch
        boundary (or the last step) is missing from the history."""
        st = self.state
        if st.step == 0:
            return False
        if st.batch_in_epoch >= self.batches_per_epoch:
            return True
        validated = bool(self.history) and self.history[-1].get("step") == st.step
        return (st.batch_in_epoch == 0 or self._done()) and self._val_due() and not validated

    def _val_due(self) -> bool:
        return self.state.epoch % self.settings.val_every_epochs == 0 or self._done()

    def _done(self) -> bool:
        s = self.settings
        return self.state.step >= s.max_steps if s.max_steps else self.state.epoch >= s.max_epochs

    def _train_epoch(self) -> None:
        st, s = self.state, self.settings
        self.train_sampler.set_epoch(st.epoch, start=st.batch_in_epoch * s.batch_size)
        # any dataset object takes the attribute; SeededItems (what tasks.train passes) seeds items with it
        cast(Any, self.train_ds).epoch = st.epoch
        self.train_loader.generator = loader_generator(s.seed, st.epoch)  # worker seeds = f(seed, epoch)
        step_cfg = StepConfig(self.device, self.rt.amp_dtype, s.accumulate_grad_batches, self.rt.channels_last, s.grad_clip,
                              s.skip_nonfinite_steps)
        bar = progress(self.train_loader, self.dist.is_main and s.progress, f"epoch {st.epoch + 1}")
        speed, whole, watch = Throughput(), st.batch_in_epoch == 0, LabelWatch(s.ignore_index)

        def on_step(loss: float, images: int) -> bool:
            ips = speed.add(images * self.dist.world_size)
            lr = self.optimizer.param_groups[0]["lr"]
            st.losses.append(loss)
            if self.ema is not None:
                self.ema.update(unwrap(self.model))
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}", refresh=False)
            if self.trackers is not None and st.step % s.log_every_steps == 0:
                self.trackers.scalars({"train/loss": loss, "train/lr": lr, "train/img_per_s": ips}, st.step)
            self._after_step()
            return not self._done() and not self.stop.stopped

        n0, t0 = len(st.losses), time.perf_counter()
        train_batches(self.train_model, watch(bar), self.criterion, self.optimizer, self.scheduler,
                      self.scaler, step_cfg, st, on_step, max_batches=self.batches_per_epoch - st.batch_in_epoch)
        bar.close()
        if whole and st.batch_in_epoch >= self.batches_per_epoch and not watch.seen_anywhere(self.dist.enabled,
                                                                                               self.device):
            raise no_labelled_pixel(split_name(self.train_ds, "dataset.train"), s.ignore_index)  # before last.pt
        if self.dist.is_main and len(st.losses) > n0:
            dt = time.perf_counter() - t0
            log.info("epoch %d: %d steps in %.0f s (%.2f img/s), mean loss %.4f", st.epoch + 1, len(st.losses) - n0,
                     dt, speed.n / dt, sum(st.losses[n0:]) / (len(st.losses) - n0))

    def _validate(self) -> dict:
        grid: list = []
        n_images = self.settings.log_images

        def keep(images, masks, pred):
            if len(grid) < n_images:
                grid.extend(zip(images.cpu(), masks.cpu(), pred.cpu()))

        t0 = time.perf_counter()
        model = self.ema.module if self.ema is not None else self.model  # what is shipped is what is scored
        cm = evaluate(model, self.val_loader, registry.num_classes_of(self.model), self.device, self.rt.amp_dtype,
                      self.settings.ignore_index, self.rt.channels_last, on_batch=keep)
        cm.all_reduce()
        m = cm.compute(self.class_names)
        require_labelled(m["num_pixels"], split_name(self.val_ds, "dataset.val"), self.settings.ignore_index)
        m.update(epoch=self.state.epoch, step=self.state.step, seconds=round(time.perf_counter() - t0, 2))
        if self.trackers is not None:
            self.trackers.metrics(m, self.state.step)
            self.trackers.images(grid[:n_images], self.state.step)
        if self.dist.is_main:
            st = self.state  # stopped by max_steps mid-epoch: name the epoch that was cut short
            where = f"epoch {st.epoch + 1} (batch {st.batch_in_epoch})" if st.batch_in_epoch else f"epoch {st.epoch}"
            log.info("%s step %d: val mIoU %.4f pixel acc %.4f", where, st.step, m["mIoU"], m["pixel_acc"])
        return m

    # ------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs (plus the config/classes to rebuild the model)."""
        return {
            "model": unwrap(self.model).state_dict(),  # BatchNorm running statistics included
            **(self.ema.checkpoint() if self.ema is not None else {}),  # ema_model: what inference loads
            "optimizer": self.optimizer.state_dict(),  # momentum / Adam moments
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            **asdict(self.state),  # epoch, step, batch_in_epoch (sampler position), best_metric, losses, …
            "history": list(self.history),
            "rng": capture_rng(),  # worker seeds and augmentations derive from (seed, epoch, index)
            "config": self.config,
            "class_names": list(self.class_names), "palette": [list(map(int, c)) for c in self.palette],
            "version": __version__, "format": CHECKPOINT_FORMAT, "arch": registry.arch_of(self.config["model"]),
        }

    def _checked_state(self) -> dict[str, Any]:
        """:meth:`checkpoint_state`, refusing non-finite weights (they must never replace a good file)."""
        return finite_state(self.checkpoint_state(), self.state.step, self.out / "checkpoints")

    def _end_epoch(self) -> None:
        """Close the epoch (once its batches are used up: max_steps may cut the last one short) and save
        last.pt, so its training is safe before validation reads a file; validate when due, update
        ``best_metric``, then write best.pt (new best) before last.pt: a failed write never leaves a
        last.pt whose validation has no best.pt (a false "new best" after the resume)."""
        st = self.state
        if st.batch_in_epoch >= self.batches_per_epoch:
            st.epoch, st.batch_in_epoch = st.epoch + 1, 0
        self._save()
        if self._val_due():
            m = self._validate()
            self.history.append(m)
            best = m["mIoU"] > st.best_metric
            if best:
                st.best_metric = m["mIoU"]
            self._save(best)

    def _save(self, best: bool = False) -> None:
        """``last.pt`` (and ``best.pt``) + ``val_metrics.json`` from rank 0, every write atomic."""
        if not self.dist.is_main:
            return
        state, ckpt_dir = self._checked_state(), self.out / "checkpoints"
        if best:
            save_checkpoint(state, ckpt_dir / "best.pt")
        save_checkpoint(state, ckpt_dir / "last.pt")
        write_json(self.out / "val_metrics.json", self.history, "metrics", UNDEFINED)

    def _after_step(self) -> None:
        """Step checkpoints every ``checkpoint_every_steps``; on SIGTERM/SIGINT save and stop."""
        every, st = self.settings.checkpoint_every_steps, self.state
        if every and st.step % every == 0 and self.dist.is_main:
            ckpt_dir = self.out / "checkpoints"
            save_checkpoint(self._checked_state(), step_checkpoint_path(ckpt_dir, st.step))
            prune_step_checkpoints(ckpt_dir, self.settings.keep_last, st.step)
        if not self._done() and self._stop_requested():  # the last step ends the run normally anyway
            self.stop.stopped = True
            if self.dist.is_main:
                log.warning("received %s: finished step %d, saving a checkpoint", self.stop.name or "stop", st.step)
                save_checkpoint(self._checked_state(), self.out / "checkpoints" / "last.pt")

    def _stop_requested(self) -> bool:
        """True once a stop signal arrived (under torchrun: on any rank, so all stop at the same step)."""
        flag = self.stop.signum is not None
        if self.dist.enabled:
            t = torch.tensor([float(flag)], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(t)
            flag = bool(t.item())
        return flag

    def resume(self) -> Optional[Path]:
        """Continue from ``settings.resume`` (:func:`~segdeconv.engine.resume.resume_run`); its path or None."""
        found = resume_run(self.settings.resume, self.out, self.dist.is_main, self.config, unwrap(self.model),
                           self.optimizer, self.scheduler, self.scaler, self.ema)
        if found is None:
            return None
        path, self.state, self.history = found
        if self._done() and not self._epoch_end_pending():
            log.info("the run was complete at step %d; nothing left to do (raise trainer.max_epochs or "
                     "trainer.max_steps to train longer)", self.state.step)
        return path
