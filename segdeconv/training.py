"""``fit(cfg)``: the wiring layer — the only library module that reads the Hydra config.

It instantiates ``cfg.dataset.train/val``, ``cfg.model``, ``cfg.optimizer`` (partial) and
``cfg.scheduler`` (partial, given ``total_steps``), then runs epochs of
:func:`segdeconv.engine.train_batches` + :func:`segdeconv.engine.evaluate`, writing
``checkpoints/{last,best}.pt``, ``tb/`` and ``val_metrics.json`` into ``cfg.output_dir``.

Reliability: step checkpoints (``trainer.checkpoint_every_steps``, the last ``trainer.keep_last``
kept) carry everything a bit-exact resume needs; ``trainer.resume=auto`` continues from the newest
loadable one; SIGTERM/SIGINT finish the current step, save and exit 0; non-finite weights are never
written over a checkpoint.
"""
from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from segdeconv import __version__
from segdeconv.checkpoint import (
    check_resumable,
    describe_model,
    find_resumable,
    load_checkpoint,
    load_model_state,
    prune_step_checkpoints,
    remove_stale_temp_files,
    resume_candidates,
    save_checkpoint,
    step_checkpoint_path,
    unwrap,
)
from segdeconv.data.sampler import EpochSampler, Head, SeededItems, loader_generator, pad_collate, quiet_worker
from segdeconv.distributed import DistInfo, cleanup, init_distributed
from segdeconv.engine import LoopState, NonFiniteLoss, StepConfig, StopRequest, Throughput, evaluate, train_batches
from segdeconv.errors import CheckpointError, ConfigError
from segdeconv.logging_utils import TBLogger, progress
from segdeconv.rng import capture_rng, restore_rng, seed_everything
from segdeconv.runtime import describe_cpu, resolve_channels_last, resolve_device, resolve_precision
from segdeconv.wiring import (
    build_model,
    check_config,
    class_info,
    dataset_classes,
    eval_loader,
    instantiate_node,
    make_criterion,
    val_batch_size,
)

log = logging.getLogger("segdeconv")


class Trainer:
    """Holds everything one run needs; :meth:`fit` runs it. Built from a composed config."""

    def __init__(self, cfg: DictConfig) -> None:
        check_config(cfg)
        self.cfg, t = cfg, cfg.trainer
        self.out = Path(cfg.output_dir)
        self.device = resolve_device(t.device)
        self.dist: DistInfo = init_distributed(self.device, float(t.get("dist_timeout_s", 300)))
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp_dtype = resolve_precision(t.precision, self.device)
        self.channels_last = resolve_channels_last(t.channels_last, self.device, self.amp_dtype)
        seed_everything(int(t.seed), bool(t.deterministic))
        self.train_ds, self.val_ds = self._datasets()
        self.class_names, self.palette = class_info(cfg, self.train_ds)
        self.model = build_model(cfg, self.device, self.train_ds)
        self.loaders()
        self.steps_per_epoch = max(1, len(self.train_loader) // int(t.accumulate_grad_batches))
        self.total_steps = int(t.max_steps) if t.max_steps else self.steps_per_epoch * int(t.max_epochs)
        self.optimizer = instantiate(cfg.optimizer)(self.model.parameters())
        self.scheduler = instantiate(cfg.scheduler)(self.optimizer, total_steps=self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.criterion = make_criterion(cfg, self.train_ds, self.out, self.device, self.dist.is_main)
        self.state = LoopState()
        self.history: list[dict] = []
        self.stop = StopRequest()
        self.train_model = self._wrap(self.model)
        self.tb: Optional[TBLogger] = None

    def _datasets(self):
        t = self.cfg.trainer
        train = instantiate_node(self.cfg.dataset.train, "dataset.train")
        val = instantiate_node(self.cfg.dataset.val, "dataset.val")
        if t.get("limit_train_images"):
            train = Head(train, int(t.limit_train_images))
        if t.get("limit_val_images"):
            val = Head(val, int(t.limit_val_images))
        train = SeededItems(train, int(t.seed))
        dataset_classes(self.cfg, train.dataset, val)
        return train, val

    def loaders(self) -> None:
        d, t, info = self.cfg.dataset, self.cfg.trainer, self.dist
        common = dict(
            num_workers=int(d.num_workers),
            pin_memory=self.device.type == "cuda",
            collate_fn=pad_collate,
            persistent_workers=False,
            worker_init_fn=quiet_worker if int(d.num_workers) else None,
        )
        self.train_sampler = EpochSampler(len(self.train_ds), True, int(t.seed), info.world_size, info.rank)
        self.train_loader = DataLoader(
            self.train_ds, batch_size=int(d.batch_size), sampler=self.train_sampler, drop_last=True,
            generator=loader_generator(int(t.seed)), **common
        )
        self.batches_per_epoch = len(self.train_loader)
        self.val_loader = eval_loader(self.val_ds, val_batch_size(d), int(d.num_workers), self.device,
                                      info.rank, info.world_size)
        if len(self.train_loader) == 0:
            raise ConfigError(
                f"dataset.batch_size={d.batch_size} is larger than the {len(self.train_ds)} training images "
                f"(per process); lower dataset.batch_size"
            )

    def _wrap(self, model: nn.Module) -> nn.Module:
        t = self.cfg.trainer
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dist.enabled:
            if t.get("sync_bn") and self.device.type != "cuda":
                log.warning("trainer.sync_bn=true needs CUDA (SyncBatchNorm has no CPU kernel); "
                            "keeping per-process BatchNorm on %s", self.device)
            elif t.get("sync_bn"):
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.model = model
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if t.compile:
            model = torch.compile(model)
        return model

    # ------------------------------------------------------------------ run
    def fit(self) -> dict[str, Any]:
        t = self.cfg.trainer
        self._maybe_resume()
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.tb = TBLogger(self.out / "tb", self.palette, purge_step=self.state.step + 1 if self.state.step else None)
            log.info("device %s, precision %s, %s, cpu %s", self.device, self.amp_dtype or "fp32",
                     "channels_last" if self.channels_last else "NCHW", describe_cpu())
        history = self.history
        try:
            with self.stop:  # SIGTERM/SIGINT: finish the step, save, stop (see _after_step)
                while not self._done() and not self.stop.stopped:
                    self._train_epoch()
                    if self.stop.stopped:
                        break
                    if self.state.epoch % int(t.val_every_epochs) == 0 or self._done():
                        history.append(self._validate())
                    self._save_epoch(history)
                    self.stop.stopped = not self._done() and self._stop_requested()  # signal in validation
            if self.stop.stopped:
                self._report_stop()
        finally:
            if self.tb is not None:
                self.tb.close()
            cleanup()
        return history[-1] if history else {}

    def _done(self) -> bool:
        t = self.cfg.trainer
        if t.max_steps:
            return self.state.step >= int(t.max_steps)
        return self.state.epoch >= int(t.max_epochs)

    def _train_epoch(self) -> None:
        s, t = self.state, self.cfg.trainer
        self.train_sampler.set_epoch(s.epoch, start=s.batch_in_epoch * int(self.cfg.dataset.batch_size))
        self.train_ds.epoch = s.epoch
        self.train_loader.generator = loader_generator(int(t.seed), s.epoch)  # worker seeds = f(seed, epoch)
        step_cfg = StepConfig(self.device, self.amp_dtype, int(t.accumulate_grad_batches),
                              self.channels_last, t.grad_clip, int(t.get("skip_nonfinite_steps") or 0))
        bar = progress(self.train_loader, self.dist.is_main and t.progress, f"epoch {s.epoch + 1}")
        speed = Throughput()

        def on_step(loss: float, images: int) -> bool:
            ips = speed.add(images * self.dist.world_size)
            lr = self.optimizer.param_groups[0]["lr"]
            s.losses.append(loss)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}", refresh=False)
            if self.tb is not None and s.step % int(t.log_every_steps) == 0:
                self.tb.scalars({"train/loss": loss, "train/lr": lr, "train/img_per_s": ips}, s.step)
            self._after_step()
            return not self._done() and not self.stop.stopped

        n0, t0 = len(s.losses), time.perf_counter()
        train_batches(self.train_model, bar, self.criterion, self.optimizer, self.scheduler,
                      self.scaler, step_cfg, s, on_step)
        bar.close()
        if self.dist.is_main and len(s.losses) > n0:
            dt = time.perf_counter() - t0
            log.info("epoch %d: %d steps in %.0f s (%.2f img/s), mean loss %.4f", s.epoch + 1, len(s.losses) - n0,
                     dt, speed.n / dt, sum(s.losses[n0:]) / (len(s.losses) - n0))
        if self.stop.stopped:
            return  # mid-epoch: the checkpoint holds batch_in_epoch, the resumed run continues there
        if not self._done() or s.batch_in_epoch >= self.batches_per_epoch:
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0

    def _validate(self) -> dict:
        t = self.cfg.trainer
        grid: list = []

        def keep(images, masks, pred):
            if len(grid) < int(t.log_images):
                grid.extend(zip(images.cpu(), masks.cpu(), pred.cpu()))

        t0 = time.perf_counter()
        cm = evaluate(self.model, self.val_loader, self.model.num_classes, self.device, self.amp_dtype,
                      int(self.cfg.loss.ignore_index), self.channels_last, on_batch=keep)
        cm.all_reduce()
        m = cm.compute(self.class_names)
        m.update(epoch=self.state.epoch, step=self.state.step, seconds=round(time.perf_counter() - t0, 2))
        if self.tb is not None:
            self.tb.metrics(m, self.state.step)
            self.tb.images(grid[: int(t.log_images)], self.state.step)
        if self.dist.is_main:
            s = self.state  # stopped by max_steps mid-epoch: name the epoch that was cut short
            where = f"epoch {s.epoch + 1} (batch {s.batch_in_epoch})" if s.batch_in_epoch else f"epoch {s.epoch}"
            log.info("%s step %d: val mIoU %.4f pixel acc %.4f", where, s.step, m["mIoU"], m["pixel_acc"])
        return m

    # ------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs (plus the config/classes to rebuild the model)."""
        s = self.state
        return {
            "model": unwrap(self.model).state_dict(),  # BatchNorm running statistics included
            "optimizer": self.optimizer.state_dict(),  # momentum / Adam moments
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": s.epoch, "step": s.step, "batch_in_epoch": s.batch_in_epoch,  # sampler position
            "best_metric": s.best_metric, "losses": list(s.losses), "history": list(self.history),
            "skipped_steps": s.skipped_steps, "nonfinite_run": s.nonfinite_run,
            "rng": capture_rng(),  # worker seeds and augmentations derive from (seed, epoch, index)
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "class_names": list(self.class_names), "palette": [list(map(int, c)) for c in self.palette],
            "version": __version__,
        }

    def _checked_state(self) -> dict[str, Any]:
        """:meth:`checkpoint_state`, refusing non-finite weights (they must never replace a good file)."""
        state = self.checkpoint_state()
        bad = next((k for k, v in state["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()),
                   None)
        if bad is not None:
            raise NonFiniteLoss(
                f"weights became non-finite ({bad}) by step {self.state.step}; nothing saved, the checkpoints in "
                f"{self.out / 'checkpoints'} are intact. Lower optimizer.lr or set trainer.grad_clip"
            )
        return state

    def _save_epoch(self, history: list[dict]) -> None:
        if not self.dist.is_main:
            return
        ckpt_dir = self.out / "checkpoints"
        state = self._checked_state()
        save_checkpoint(state, ckpt_dir / "last.pt")
        last = history[-1] if history else None
        if last is not None and last.get("step") == self.state.step and last["mIoU"] > self.state.best_metric:
            self.state.best_metric = last["mIoU"]
            state["best_metric"] = last["mIoU"]
            save_checkpoint(state, ckpt_dir / "best.pt")
            save_checkpoint(state, ckpt_dir / "last.pt")
        (self.out / "val_metrics.json").write_text(json.dumps(history, indent=1))

    def _after_step(self) -> None:
        """Step checkpoints every ``trainer.checkpoint_every_steps``; on SIGTERM/SIGINT save and stop."""
        every, s = self.cfg.trainer.get("checkpoint_every_steps"), self.state
        if every and s.step % int(every) == 0 and self.dist.is_main:
            ckpt_dir = self.out / "checkpoints"
            save_checkpoint(self._checked_state(), step_checkpoint_path(ckpt_dir, s.step))
            prune_step_checkpoints(ckpt_dir, int(self.cfg.trainer.keep_last), s.step)
        if not self._done() and self._stop_requested():  # the last step ends the run normally anyway
            self.stop.stopped = True
            if self.dist.is_main:
                log.warning("received %s: finished step %d, saving a checkpoint", self.stop.name or "stop", s.step)
                save_checkpoint(self._checked_state(), self.out / "checkpoints" / "last.pt")

    def _stop_requested(self) -> bool:
        """True once a stop signal arrived (under torchrun: on any rank, so all stop at the same step)."""
        flag = self.stop.signum is not None
        if self.dist.enabled:
            t = torch.tensor([float(flag)], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(t)
            flag = bool(t.item())
        return flag

    def _report_stop(self) -> None:
        if not self.dist.is_main:
            return
        overrides: list[str] = ["…"]
        try:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.initialized():
                overrides = [o for o in HydraConfig.get().overrides.task
                             if not o.startswith(("trainer.resume=", "hydra.run.dir="))]
        except ImportError:
            pass
        cmd = " ".join(["python train.py", *map(shlex.quote, overrides), "trainer.resume=auto",
                        shlex.quote(f"hydra.run.dir={self.out}")])
        log.warning("stopped by %s at epoch %d, step %d; checkpoint: %s. Resume with:\n  %s",
                    self.stop.name or "request", self.state.epoch + 1, self.state.step,
                    self.out / "checkpoints" / "last.pt", cmd)

    # ------------------------------------------------------------ resume
    def _maybe_resume(self) -> None:
        r, ckpt_dir = self.cfg.trainer.resume, self.out / "checkpoints"
        if not r:
            if ckpt_dir.is_dir() and resume_candidates(ckpt_dir) and self.dist.is_main:
                log.warning("%s already holds checkpoints; this new run overwrites them "
                            "(trainer.resume=auto continues that run instead)", ckpt_dir)
            return
        if r == "auto":
            if self.dist.is_main and ckpt_dir.is_dir():
                for p in remove_stale_temp_files(ckpt_dir):
                    log.info("removed %s (a checkpoint write that was interrupted)", p.name)
            found = find_resumable(ckpt_dir) if ckpt_dir.is_dir() else None
            if found is None:
                log.info("trainer.resume=auto: no checkpoint in %s, starting fresh", ckpt_dir)
                return
            path, ckpt = found
        else:
            path = Path(str(r)).expanduser()
            ckpt = load_checkpoint(path, key="trainer.resume")
            check_resumable(ckpt, path)
        self._load_training_state(path, ckpt)

    def _load_training_state(self, path: Path, ckpt: dict[str, Any]) -> None:
        """Restore model, optimizer, scheduler, scaler, counters, history and RNG from ``ckpt``."""
        self._check_same_setup(path, ckpt)
        load_model_state(unwrap(self.model), ckpt["model"], path)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: its optimizer/scheduler state does not fit this run ({e}); "
                                  f"resume with the optimizer=… and scheduler=… it was trained with") from None
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        s = self.state
        s.epoch, s.step, s.batch_in_epoch = ckpt["epoch"], ckpt["step"], ckpt.get("batch_in_epoch", 0)
        s.best_metric, s.losses = ckpt.get("best_metric", float("-inf")), list(ckpt.get("losses", []))
        s.skipped_steps, s.nonfinite_run = ckpt.get("skipped_steps", 0), ckpt.get("nonfinite_run", 0)
        self.history = list(ckpt["history"]) if "history" in ckpt else self._load_history()
        restore_rng(ckpt.get("rng"))
        log.info("resumed from %s at epoch %d, step %d (batch %d of the epoch)", path, s.epoch + 1, s.step,
                 s.batch_in_epoch)

    def _check_same_setup(self, path: Path, ckpt: dict[str, Any]) -> None:
        """A checkpoint of another architecture/class count/optimizer: one error naming both."""
        was, now = ckpt.get("config") or {}, OmegaConf.to_container(self.cfg, resolve=True)
        for key, describe in (("model", describe_model), ("optimizer", lambda c: c.get("_target_"))):
            a, b = was.get(key), now.get(key)
            if isinstance(a, dict) and isinstance(b, dict) and describe(a) != describe(b):
                raise CheckpointError(
                    f"{path} was trained with {key} {describe(a)} but this run builds {describe(b)}; resume with "
                    f"the same {key}/dataset options, or start a new run without trainer.resume"
                )

    def _load_history(self) -> list[dict]:
        """Validation history of checkpoints older than the ``history`` entry: val_metrics.json, cut at the
        resume point."""
        p, s = self.out / "val_metrics.json", self.state
        hist = json.loads(p.read_text()) if s.step and p.is_file() else []
        return [h for h in hist if h.get("step", 0) <= s.step and h.get("epoch", 0) <= s.epoch]

def fit(cfg: DictConfig) -> dict[str, Any]:
    """Train a model as ``cfg`` describes; returns the last validation metrics."""
    return Trainer(cfg).fit()
