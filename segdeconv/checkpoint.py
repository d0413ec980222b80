"""Checkpoint files: atomic writes, safe (``weights_only``) loads, prefix stripping, clear errors.

A checkpoint is a dict ``{"model", "optimizer", "scheduler", "scaler", "epoch", "step", "rng",
"best_metric", "config", "class_names", "palette", "version"}`` of tensors and plain containers,
loadable with ``torch.load(weights_only=True)``: nothing in it can execute code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import nn

from segdeconv.errors import CheckpointError

PathLike = Union[str, Path]
_PREFIXES = ("module.", "_orig_mod.")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove ``module.`` / ``_orig_mod.`` prefixes left by DDP / torch.compile (any nesting)."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def save_checkpoint(state: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``state`` atomically: temp file in the same directory, fsync, ``os.replace``.

    A crash at any moment leaves either the previous file or the new one, never a torn file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror}; choose a writable hydra.run.dir") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {e}") from None
        raise
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; any problem is a :class:`CheckpointError`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass ckpt_path=<run dir>/checkpoints/best.pt")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(
                f"checkpoint {path} contains Python objects that could execute code; refused "
                f"(only tensors and plain containers are loaded). Re-save it as a state dict."
            ) from None
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated ({msg}); use another file") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(
            f"checkpoint {path} is not a segdeconv checkpoint (no 'model' entry); "
            f"for raw VGG weights use model.encoder.weights=… instead"
        )
    ckpt["model"] = strip_prefixes(ckpt["model"])
    return ckpt


def load_model_state(model: nn.Module, state: Mapping[str, Any], path: PathLike = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with a readable message on architecture/class mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shape:
        detail = (
            f"shape of {shape[0]}: file {tuple(state[shape[0]].shape)} vs model {tuple(own[shape[0]].shape)}"
            if shape else f"{len(missing)} missing keys (e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]})"
        )
        raise CheckpointError(
            f"{path} does not fit this model ({detail}); it was trained with a different "
            f"architecture or class count — build the model from the checkpoint's own config"
        )
    model.load_state_dict(state)
