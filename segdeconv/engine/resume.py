"""Resuming a run: find the newest loadable checkpoint, check it fits this run, restore the state.

``trainer.resume=auto`` looks in ``<run dir>/checkpoints`` (``last.pt`` and ``step_*.pt``, newest by
mtime first; truncated files are reported and skipped); ``trainer.resume=PATH`` takes one file.
"""
from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from segdeconv.engine.checkpoint import PathLike, load_checkpoint, load_model_state, step_files
from segdeconv.engine.rng import restore_rng
from segdeconv.engine.step import LoopState
from segdeconv.errors import CheckpointError
from segdeconv.knobs import flatten
from segdeconv.schema import REFUSE, WARN, resume_policy  # what a resume may change, per key

log = logging.getLogger("segdeconv")
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "step")
_TEMP_GLOB = ".*.pt.*.tmp"  # save_checkpoint's temp files, left behind only by a kill mid-write


def remove_stale_temp_files(ckpt_dir: PathLike) -> list[Path]:
    """Remove the temp files of writes that were killed half-way (never a complete checkpoint)."""
    stale = sorted(Path(ckpt_dir).glob(_TEMP_GLOB))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def resume_candidates(ckpt_dir: PathLike) -> list[Path]:
    """``last.pt`` and the step checkpoints of a run directory, newest (by mtime) first."""
    d = Path(ckpt_dir)
    files = [p for _, p in step_files(d)] + ([d / "last.pt"] if (d / "last.pt").is_file() else [])
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.pt"), reverse=True)


def check_resumable(ckpt: Mapping[str, Any], path: PathLike) -> None:
    """A checkpoint to resume from must carry the optimizer/scheduler state and counters."""
    missing = [k for k in RESUME_KEYS if ckpt.get(k) is None]
    if missing:
        raise CheckpointError(
            f"{path} cannot be resumed from (no {', '.join(missing)}); resume from checkpoints/last.pt "
            f"or step_*.pt of a segdeconv run, or start a new run (model.encoder.weights=… for pretrained weights)"
        )


def find_resumable(ckpt_dir: PathLike) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint in ``ckpt_dir`` that loads and can be resumed (None: the dir has none).

    Truncated or corrupt files are reported and skipped; if every candidate is bad, that is an error
    (starting afresh would overwrite them).
    """
    candidates = resume_candidates(ckpt_dir)
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
            check_resumable(ckpt, path)
            return path, ckpt
        except CheckpointError as e:
            log.warning("trainer.resume=auto: skipping %s (%s)", path, str(e).splitlines()[0])
    if candidates:
        raise CheckpointError(
            f"trainer.resume=auto: none of the {len(candidates)} checkpoints in {ckpt_dir} can be loaded "
            f"(newest: {candidates[0].name}); pass trainer.resume=<file> or use a new hydra.run.dir"
        )
    return None


def describe_model(model_cfg: Mapping[str, Any]) -> str:
    """``segnet (11 classes, vgg16 encoder, width 0.25)`` from a model config dict."""
    enc = model_cfg.get("encoder") or {}
    bits = [f"{model_cfg.get('num_classes')} classes"]
    if isinstance(enc, Mapping):
        bits.append(f"{enc.get('arch', 'vgg')} encoder, width {enc.get('width', model_cfg.get('width', 1.0))}")
    elif "width" in model_cfg:
        bits.append(f"width {model_cfg['width']}")
    return f"{model_cfg.get('name', '?')} ({', '.join(bits)})"


def resume_point(resume: Optional[str], ckpt_dir: Path, is_main: bool) -> Optional[tuple[Path, dict[str, Any]]]:
    """The checkpoint ``trainer.resume`` names (``auto``: the newest loadable one in ``ckpt_dir``, or
    None for a fresh start); None without ``resume``. A run dir whose ``ckpt_dir`` holds checkpoints is
    only ever continued (``auto`` or one of its own files), never overwritten by another run."""
    path = None if resume in (None, "", "auto") else Path(str(resume)).expanduser()
    if resume != "auto" and (path is None or path.resolve().parent != ckpt_dir.resolve()):
        held = resume_candidates(ckpt_dir) if is_main and ckpt_dir.is_dir() else []
        if held:
            raise CheckpointError(
                f"{ckpt_dir.parent} already holds a training run ({ckpt_dir.name}/{held[0].name}); a new run would "
                f"overwrite its checkpoints: continue it with trainer.resume=auto, or train into a new directory "
                f"(hydra.run.dir=…)")
    if path is None and resume != "auto":
        return None
    if resume == "auto":
        if is_main and ckpt_dir.is_dir():
            for p in remove_stale_temp_files(ckpt_dir):
                log.info("removed %s (a checkpoint write that was interrupted)", p.name)
        found = find_resumable(ckpt_dir) if ckpt_dir.is_dir() else None
        if found is None:
            log.info("trainer.resume=auto: no checkpoint in %s, starting fresh", ckpt_dir)
        return found
    assert path is not None  # path None returned above unless resume=auto, which returned too
    ckpt = load_checkpoint(path, key="trainer.resume")
    check_resumable(ckpt, path)
    return path, ckpt


def check_resume_config(path: PathLike, was: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Refuse a resume that changes a REFUSE key (one error naming the keys, old → new); return one
    line per changed WARN key, to be logged."""
    a, b = flatten(was), flatten(now)
    changed = [(k, a[k], b[k]) for k in b if k in a and a[k] != b[k]]
    refused = [f"{k} ({x!r} → {y!r})" for k, x, y in changed if resume_policy(k) == REFUSE]
    if refused:
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        ma, mb = was.get("model"), now.get("model")
        head = (f"{path} was trained with model {describe_model(ma)} but this run builds {describe_model(mb)}"
                if isinstance(ma, Mapping) and isinstance(mb, Mapping) and describe_model(ma) != describe_model(mb)
                else f"{path} was trained with other options")
        raise CheckpointError(
            f"{head}: a resume continues the saved run and cannot change {', '.join(refused[:3])}{more}; drop "
            f"{'that override' if len(refused) == 1 else 'those overrides'}, or start a new run without trainer.resume")
    return [f"{k} changes from {x!r} to {y!r}: the resumed run uses the new value" for k, x, y in changed
            if resume_policy(k) == WARN]


def restore_state(path: PathLike, ckpt: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, scaler: Optional[torch.amp.GradScaler], ema: Any = None) -> LoopState:
    """Load weights, optimizer/scheduler/scaler state, the weight EMA and RNG from ``ckpt``; return its
    loop counters. An EMA the checkpoint lacks starts again from the restored weights."""
    load_model_state(model, ckpt["model"], path)
    if ema is not None:
        ema.restore(ckpt if ckpt.get("ema_model") is not None else {"ema_model": model.state_dict(),
                                                                     "ema_updates": 0})
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: its optimizer/scheduler state does not fit this run ({e}); "
                              f"resume with the optimizer=… and scheduler=… it was trained with") from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt.get("rng"))
    return loop_state(ckpt)


def loop_state(ckpt: Mapping[str, Any]) -> LoopState:
    """The :class:`LoopState` saved (``dataclasses.asdict``) in a checkpoint; absent fields keep defaults."""
    saved = {f.name: ckpt[f.name] for f in fields(LoopState) if ckpt.get(f.name) is not None}
    state = LoopState(**saved)
    state.losses = list(state.losses)
    return state


def load_history(out_dir: Path, state: LoopState) -> list[dict]:
    """Validation history of checkpoints older than the ``history`` entry: val_metrics.json, cut at the
    resume point."""
    p = out_dir / "val_metrics.json"
    hist = json.loads(p.read_text()) if state.step and p.is_file() else []
    return [h for h in hist if h.get("step", 0) <= state.step and h.get("epoch", 0) <= state.epoch]


def resume_run(resume: Optional[str], out_dir: Path, is_main: bool, config: Mapping[str, Any], model: nn.Module,
               optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Optional[torch.amp.GradScaler],
               ema: Any = None) -> Optional[tuple[Path, LoopState, list[dict]]]:
    """The whole resume: :func:`resume_point`, :func:`check_resume_config` (refuse or log each change),
    :func:`restore_state`; returns ``(checkpoint, loop state, validation history)`` or None (fresh run)."""
    found = resume_point(resume, out_dir / "checkpoints", is_main)
    if found is None:
        return None
    path, ckpt = found
    changes = check_resume_config(path, ckpt.get("config") or {}, config)
    state = restore_state(path, ckpt, model, optimizer, scheduler, scaler, ema)
    history = list(ckpt["history"]) if "history" in ckpt else load_history(out_dir, state)
    for line in changes if is_main else []:
        log.warning("trainer.resume: %s", line)
    log.info("resumed from %s at epoch %d, step %d (batch %d of the epoch)", path, state.epoch + 1, state.step,
             state.batch_in_epoch)
    return path, state, history
