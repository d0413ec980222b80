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
    """``SegNet (11 classes, vgg16 encoder, width 0.25)`` from a model config dict."""
    enc = model_cfg.get("encoder") or {}
    bits = [f"{model_cfg.get('num_classes')} classes"]
    if isinstance(enc, Mapping):
        bits.append(f"{enc.get('arch', 'vgg')} encoder, width {enc.get('width', model_cfg.get('width', 1.0))}")
    elif "width" in model_cfg:
        bits.append(f"width {model_cfg['width']}")
    return f"{str(model_cfg.get('_target_', '?')).rsplit('.', 1)[-1]} ({', '.join(bits)})"


def resume_point(resume: Optional[str], ckpt_dir: Path, is_main: bool) -> Optional[tuple[Path, dict[str, Any]]]:
    """The checkpoint ``trainer.resume`` names (``auto``: the newest loadable one in ``ckpt_dir``, or
    None for a fresh start); None without ``resume`` (warning if ``ckpt_dir`` holds checkpoints)."""
    if not resume:
        if is_main and ckpt_dir.is_dir() and resume_candidates(ckpt_dir):
            log.warning("%s already holds checkpoints; this new run overwrites them "
                        "(trainer.resume=auto continues that run instead)", ckpt_dir)
        return None
    if resume == "auto":
        if is_main and ckpt_dir.is_dir():
            for p in remove_stale_temp_files(ckpt_dir):
                log.info("removed %s (a checkpoint write that was interrupted)", p.name)
        found = find_resumable(ckpt_dir) if ckpt_dir.is_dir() else None
        if found is None:
            log.info("trainer.resume=auto: no checkpoint in %s, starting fresh", ckpt_dir)
        return found
    path = Path(str(resume)).expanduser()
    ckpt = load_checkpoint(path, key="trainer.resume")
    check_resumable(ckpt, path)
    return path, ckpt


def check_same_setup(path: PathLike, was: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """A checkpoint of another architecture/class count/optimizer: one error naming both."""
    for key, describe in (("model", describe_model), ("optimizer", lambda c: c.get("_target_"))):
        a, b = was.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and describe(a) != describe(b):
            raise CheckpointError(
                f"{path} was trained with {key} {describe(a)} but this run builds {describe(b)}; resume with "
                f"the same {key}/dataset options, or start a new run without trainer.resume"
            )


def restore_state(path: PathLike, ckpt: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, scaler: Optional[torch.amp.GradScaler]) -> LoopState:
    """Load weights, optimizer/scheduler/scaler state and RNG from ``ckpt``; return its loop counters."""
    load_model_state(model, ckpt["model"], path)
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
