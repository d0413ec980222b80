"""Checkpoint files: atomic writes, safe (``weights_only``) loads, prefix stripping, clear errors.

A checkpoint is a dict ``{"model", "optimizer", "scheduler", "scaler", "epoch", "step", "rng",
"best_metric", "config", "class_names", "palette", "version", "format", "arch"}`` of tensors and plain
containers, loadable with ``torch.load(weights_only=True)``: nothing in it can execute code. ``arch``
names the architecture by registry name + keyword arguments (:mod:`segdeconv.models.registry`);
``format`` is :data:`FORMAT`, and :func:`upgrade` brings older files to it on load.

A run directory holds ``checkpoints/last.pt`` (epoch end, pre-emption), ``best.pt`` and the last
``trainer.keep_last`` step checkpoints ``step_XXXXXXX.pt``; :mod:`segdeconv.engine.resume` picks the
newest one that loads.
"""
from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import nn

from segdeconv import filekind
from segdeconv.engine.outputs import check_output_file
from segdeconv.engine.step import NonFiniteLoss
from segdeconv.engine.writer import write_file
from segdeconv.errors import CheckpointError
from segdeconv.models import registry
from segdeconv.models.memory.policy import current_names

log = logging.getLogger("segdeconv")
PathLike = Union[str, Path]
_PREFIXES = ("module.", "_orig_mod.")
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
# 1 (segdeconv 0.1.0): the model is named by its config's ``_target_`` code path; 2: ``"arch"`` holds a
# registry name + keyword arguments and ``config.model`` names it the same way.
FORMAT = 2


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
    """Write ``state`` through the one writer (:func:`~segdeconv.engine.writer.write_file`): temp file in the
    same directory, fsync, ``os.replace``. A crash at any moment leaves either the previous file or the new
    one, never a torn file; a failed write (full disk, read-only place) is a :class:`CheckpointError`
    naming the file and the free space, and the previous files stay intact."""
    return write_file(path, lambda f: torch.save(dict(state), f), "checkpoint",
                      "; the previous checkpoint files are intact", CheckpointError)


def finite_state(state: dict[str, Any], step: int, ckpt_dir: Path) -> dict[str, Any]:
    """``state`` unchanged if its weights are finite, else :class:`NonFiniteLoss` (nothing is saved)."""
    bad = next((k for k, v in state["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise NonFiniteLoss(f"weights became non-finite ({bad}) by step {step}; nothing saved, the checkpoints in "
                            f"{ckpt_dir} are intact. Lower optimizer.lr or set trainer.grad_clip")
    return state


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu",
                    key: str = "ckpt_path") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; any problem is a :class:`CheckpointError`
    (``key`` is the config key the path came from, for the hint)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass {key}=<run dir>/checkpoints/"
                              f"{'last' if key == 'trainer.resume' else 'best'}.pt")
    kind = filekind.file_kind(p)  # by signature: a text or ONNX file is no pickle that "could execute code"
    if kind not in filekind.LOADABLE:
        raise _not_loadable(path, kind, key)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met a class or function: never run
        raise CheckpointError(
            f"checkpoint {path} contains Python objects that could execute code; refused "
            f"(only tensors and plain containers are loaded). Re-save it as a state dict."
        ) from None
    except Exception as e:  # EOFError, RuntimeError (zip reader), …: the bytes are damaged
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated ({msg[:200]}); use another "
                              f"file") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(
            f"checkpoint {path} is not a segdeconv checkpoint (no 'model' entry); "
            f"for raw VGG weights use model.encoder.weights=… instead"
        )
    ckpt = upgrade(ckpt, path)
    ckpt["model"] = strip_prefixes(ckpt["model"])
    if ckpt.get("ema_model") is not None:
        ckpt["ema_model"] = strip_prefixes(ckpt["ema_model"])
    return ckpt


def _not_loadable(path: PathLike, kind: str, key: str) -> CheckpointError:
    """A file whose signature says it is no ``torch.save`` file (:mod:`segdeconv.filekind`), in words."""
    what = filekind.describe(path, kind)
    if kind == filekind.BROKEN_ZIP:
        return CheckpointError(f"checkpoint {path} is unreadable or truncated: {what}; use another file")
    fix = (f"pass {key}= the checkpoint it was exported from" if kind in (filekind.TORCHSCRIPT, filekind.ONNX) else
           f"pass {key}= a segdeconv checkpoint (<run dir>/checkpoints/best.pt)")
    return CheckpointError(f"checkpoint {path} is {what}; {fix}")


def upgrade(ckpt: dict[str, Any], path: PathLike = "checkpoint") -> dict[str, Any]:
    """``ckpt`` in today's :data:`FORMAT`. Format 1 (no ``format`` entry, e.g. the shipped
    ``camvid_segnet_cpu.pt``): ``arch`` is derived from ``config.model``'s ``_target_`` code path, which
    is rewritten to its registry name, so a resume compares like with like. Every format: the memory
    keys of ``arch`` and ``config.model`` get their current names (``checkpoint`` → ``recompute``, 2026-12-07)."""
    fmt = ckpt.get("format", 1)
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {fmt!r}, newer than this segdeconv reads "
                              f"({FORMAT}); upgrade segdeconv (pip install -U segdeconv)")
    model_cfg = (ckpt.get("config") or {}).get("model")
    if fmt == 1 and isinstance(model_cfg, Mapping):
        ckpt["config"]["model"] = registry.from_legacy(model_cfg)
        ckpt["arch"] = registry.arch_of(model_cfg)
    if isinstance(model_cfg, Mapping):
        ckpt["config"]["model"] = current_names(ckpt["config"]["model"])
    if isinstance(ckpt.get("arch"), Mapping):
        ckpt["arch"] = current_names(ckpt["arch"])
    ckpt["format"] = FORMAT
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


# ------------------------------------------------------------------ run directories and resume
def step_checkpoint_path(ckpt_dir: PathLike, step: int) -> Path:
    """``<ckpt_dir>/step_0001234.pt``."""
    return Path(ckpt_dir) / f"step_{int(step):07d}.pt"


def step_files(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the step checkpoints in ``ckpt_dir``, oldest first."""
    found = ((_STEP_FILE.match(p.name), p) for p in ckpt_dir.glob("step_*.pt"))
    return sorted((int(m.group(1)), p) for m, p in found if m)


def prune_step_checkpoints(ckpt_dir: PathLike, keep: int, current_step: int) -> list[Path]:
    """Delete all but the newest ``keep`` step checkpoints up to ``current_step``; returns the deleted.

    Files beyond ``current_step`` (left by a run that was killed and resumed from an earlier
    point) are not touched: the resumed run overwrites them when it gets there.
    """
    done = [p for s, p in step_files(Path(ckpt_dir)) if s <= current_step]
    old = done[: max(0, len(done) - max(1, int(keep)))]
    for p in old:
        p.unlink(missing_ok=True)
    return old


INFERENCE_KEYS = ("model", "format", "arch", "config", "class_names", "palette", "epoch", "step", "best_metric", "version",
                  "bn_recomputed", "ema_updates")


def weights_key(ckpt: Mapping[str, Any]) -> str:
    """Where the weights inference uses are: ``ema_model`` when the run averaged them (``trainer.ema_decay``:
    validation scored the average), else ``model``."""
    return "ema_model" if ckpt.get("ema_model") is not None else "model"


def strip_checkpoint(src: PathLike, dst: PathLike) -> Path:
    """Write an inference-only copy of ``src`` (weights, config, classes; no optimizer/RNG state).

    The weights are bit-identical, so evaluation of the copy reproduces the original's metrics. ``dst``
    may not be ``src`` or any other existing checkpoint (:func:`~segdeconv.engine.outputs.check_output_file`).
    """
    check_output_file(dst, [src], "dst")
    ckpt = load_checkpoint(src)
    return save_checkpoint({**{k: ckpt[k] for k in INFERENCE_KEYS if k in ckpt}, "model": ckpt[weights_key(ckpt)]}, dst)
