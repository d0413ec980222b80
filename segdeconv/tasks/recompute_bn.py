"""``recompute_bn(cfg)``: a checkpoint with its BatchNorm statistics recomputed over a split.

    python recompute_bn.py ckpt_path=run/checkpoints/best.pt output=run/checkpoints/best_bn.pt

The SegNet/DeconvNet step after training (:mod:`segdeconv.engine.bn_stats`): the training split
(``split=train``) is read through the checkpoint's deterministic ``dataset.val`` transforms (the
images inference sees), in batches of the training's ``dataset.batch_size`` (the statistics average
per-batch variances, so the batch size matters; the originals use the training batch). The new file
is the input checkpoint with ``model`` replaced and ``bn_recomputed: {split, images, batch_size}``
added; it never overwrites a file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch.utils.data import Subset

from segdeconv.config import split_dataset
from segdeconv.engine.bn_stats import batch_norms, bn_loader, recompute_bn_statistics
from segdeconv.engine.checkpoint import load_checkpoint, save_checkpoint, weights_key
from segdeconv.engine.outputs import check_output_file
from segdeconv.engine.runtime import resolve_device, resolve_precision
from segdeconv.errors import ConfigError
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


def recompute_bn(cfg: DictConfig) -> dict[str, Any]:
    """Recompute ``cfg.ckpt_path``'s BatchNorm statistics over ``cfg.split``; write ``cfg.output``."""
    dst = new_output_path(cfg.get("output"), cfg.ckpt_path)
    limit, batch_size = cfg.get("limit"), cfg.get("batch_size")  # range-checked by config.RANGES (run_task)
    device = resolve_device(cfg.device, key="device")
    trained = load_trained(cfg.ckpt_path, device)
    amp_dtype = resolve_precision(cfg.precision or trained.precision, device)
    dataset = split_dataset(trained.dataset_cfg, cfg.get("dataset"), cfg.split, ckpt_path=cfg.ckpt_path)
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    batch_size = batch_size or int(trained.dataset_cfg.get("batch_size") or 1)
    workers = cfg.num_workers if cfg.num_workers is not None else trained.dataset_cfg.get("num_workers", 0)
    loader = bn_loader(dataset, batch_size, int(workers), device)
    recompute_bn_statistics(trained.model, loader, device, amp_dtype)
    ckpt = load_checkpoint(cfg.ckpt_path)
    ckpt[weights_key(ckpt)] = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
    info = {"split": str(cfg.split), "images": len(dataset), "batch_size": batch_size}
    ckpt["bn_recomputed"] = info
    save_checkpoint(ckpt, dst)
    print(f"recomputed {len(batch_norms(trained.model))} BatchNorm layers over {len(dataset)} images of "
          f"split {cfg.split} (batch {batch_size}); wrote {dst}")
    return {"path": str(dst), **info}
