"""``recompute_bn(cfg)``: a checkpoint with its BatchNorm statistics recomputed over a split.

    python recompute_bn.py ckpt_path=run/checkpoints/best.pt output=run/checkpoints/best_bn.pt

The SegNet/DeconvNet step after training (:mod:`segdeconv.engine.bn_stats`), as each original did it
(``windows=auto``, :data:`~segdeconv.engine.bn_stats.PROTOCOLS`): the split (``split=train``) seen through
the checkpoint's *training* transform (its windows: DeconvNet's random 224 crops of 250² images, SegNet's
whole frames), in shuffled batches of the original's size (DeconvNet 28, 501 batches; SegNet the
training's ``dataset.batch_size``, one pass) — the statistics average per-batch variances, so the batch
size matters. ``windows=eval`` reads whole images through the deterministic val transform instead (as
before issue #29; VOC's pads to 512², padding counted). The new file is the input checkpoint with
``model`` replaced and ``bn_recomputed: {split, windows, images, batch_size, batches, seed}`` added; it
never overwrites a file.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, open_dict
from torch.utils.data import Subset

from segdeconv.config import split_dataset
from segdeconv.engine.bn_stats import BNProtocol, batch_norms, bn_protocol, recompute_bn_statistics, window_loader
from segdeconv.engine.checkpoint import load_checkpoint, save_checkpoint, weights_key
from segdeconv.engine.outputs import check_output_file
from segdeconv.engine.runtime import resolve_device, resolve_precision
from segdeconv.errors import ConfigError
from segdeconv.models import registry
from segdeconv.trained import load_trained


def new_output_path(output: Any, source: Any) -> Path:
    """``output`` as a path that is neither ``source`` nor any existing file (never overwrite).

    Stricter than :func:`segdeconv.engine.outputs.check_output_file` (which refuses inputs and existing
    checkpoints): a recomputed checkpoint always goes to a new file."""
    if not output:
        raise ConfigError("output is required: pass output=<new file>.pt")
    dst = Path(str(output)).expanduser()
    same = dst.resolve() == Path(str(source)).expanduser().resolve()
    if same or dst.exists():
        what = "is the input checkpoint" if same else "already exists"
        raise ConfigError(f"output={dst} {what}; choose a new file name (e.g. {dst.with_name(dst.stem + '_bn.pt')}) "
                          "— recompute_bn.py never overwrites a file")
    return check_output_file(dst, [source], "output")  # a writable place, checked before any work


WINDOWS = ("auto", "train", "eval")
SEED = 0  # the training windows' crops, mirrors and order


def bn_plan(cfg: DictConfig, family: str, training_batch: int) -> tuple[str, int, Optional[int], BNProtocol]:
    """(windows, batch size, batches or None for one pass, the protocol) from ``cfg`` and the original's."""
    proto = bn_protocol(family)
    windows = str(cfg.get("windows") or "auto")
    if windows not in WINDOWS:
        raise ConfigError(f"windows={windows} is unknown; use one of {', '.join(WINDOWS)}")
    batches = cfg.get("batches", "auto")
    if batches != "auto" and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
        raise ConfigError(f"batches={batches!r} must be auto or an integer ≥ 1; e.g. batches=501")
    original = windows == "auto"
    return (proto.windows if original else windows,
            int(cfg.get("batch_size") or (proto.batch_size if original else None) or training_batch),
            (proto.batches if original else None) if batches == "auto" else int(batches), proto)


def windows_dataset(cfg: DictConfig, trained: Any, windows: str) -> Any:
    """``cfg.split`` through the checkpoint's training transform (``windows=train``: its ``dataset.train`` node
    with the split replaced) or its deterministic val transform (``eval``); ``dataset.*`` overrides apply."""
    stored, chosen = dict(trained.dataset_cfg), cfg.get("dataset")
    if windows == "train":
        if not isinstance(stored.get("train"), dict):
            raise ConfigError(f"{cfg.ckpt_path} records no dataset.train node; use windows=eval")
        stored["val"] = stored["train"]
        if chosen is not None and "_target_" in (chosen.get("train") or {}):  # dataset=<name> given
            whole = copy.deepcopy(cfg)
            with open_dict(whole.dataset):
                whole.dataset.val = whole.dataset.train
            chosen = whole.dataset
    return split_dataset(stored, chosen, cfg.split, ckpt_path=cfg.ckpt_path)


def recompute_bn(cfg: DictConfig) -> dict[str, Any]:
    """Recompute ``cfg.ckpt_path``'s BatchNorm statistics over ``cfg.split``; write ``cfg.output``."""
    dst = new_output_path(cfg.get("output"), cfg.ckpt_path)
    limit = cfg.get("limit")  # range-checked by config.check_config (run_task)
    device = resolve_device(cfg.device, key="device")
    trained = load_trained(cfg.ckpt_path, device)
    amp_dtype = resolve_precision(cfg.precision or trained.precision, device)
    family = str(registry.from_legacy(dict(trained.config.get("model") or {})).get("name", ""))
    windows, batch_size, batches, proto = bn_plan(cfg, family, int(trained.dataset_cfg.get("batch_size") or 1))
    dataset = windows_dataset(cfg, trained, windows)
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    workers = cfg.num_workers if cfg.num_workers is not None else trained.dataset_cfg.get("num_workers", 0)
    loader = window_loader(dataset, batch_size, batches, int(workers), device, SEED, shuffle=windows == "train")
    recompute_bn_statistics(trained.model, loader, device, amp_dtype)
    ckpt = load_checkpoint(cfg.ckpt_path)
    ckpt[weights_key(ckpt)] = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
    info = {"split": str(cfg.split), "windows": windows, "images": len(dataset), "batch_size": batch_size,
            "batches": len(loader), "seed": SEED}
    ckpt["bn_recomputed"] = info
    save_checkpoint(ckpt, dst)
    how = f"as {proto.source}" if cfg.get("windows", "auto") == "auto" else f"windows={windows}"
    print(f"recomputed {len(batch_norms(trained.model))} BatchNorm layers over {len(loader)} batches of "
          f"{batch_size} {windows} windows of the {len(dataset)} images of split {cfg.split} ({how}); wrote {dst}")
    return {"path": str(dst), **info}
