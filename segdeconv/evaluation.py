"""``evaluate_checkpoint(cfg)``: metrics of a checkpoint on a dataset split, from its own config.

Optional test-time augmentation / sliding windows (:mod:`segdeconv.tta`); writes metrics.json, a
normalized confusion-matrix PNG, a grid of the worst-IoU images, and all of it to TensorBoard (tb/).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from segdeconv.checkpoint import load_checkpoint
from segdeconv.engine import evaluate
from segdeconv.errors import ConfigError
from segdeconv.eval_report import WorstImages, write_report
from segdeconv.metrics import format_table
from segdeconv.runtime import resolve_channels_last, resolve_device, resolve_precision
from segdeconv.tta import describe, make_predict_fn
from segdeconv.distributed import cleanup, env_info, init_distributed
from segdeconv.wiring import (default_palette, eval_loader, instantiate_node, model_from_checkpoint,
                              val_batch_size)

log = logging.getLogger("segdeconv")


def dataset_config(cfg: DictConfig, ckpt: dict) -> DictConfig:
    """The checkpoint's dataset config, or the one chosen on the command line, with root overridden."""
    trained = OmegaConf.create(ckpt["config"]["dataset"])
    chosen = cfg.get("dataset") or {}
    ds = OmegaConf.merge(trained, {}) if "val" not in chosen else OmegaConf.create(
        OmegaConf.to_container(chosen, resolve=True))
    if int(ds.num_classes) != int(trained.num_classes):
        raise ConfigError(
            f"dataset {ds.get('name')} has {ds.num_classes} classes but the checkpoint was trained with "
            f"{trained.num_classes}; evaluate on a dataset with the same classes"
        )
    root = chosen.get("root")
    if root is not None:
        ds.root = root
        if "root" in ds.val:
            ds.val.root = root
    return ds


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; write ``metrics.json``, figures and ``tb/`` into
    ``cfg.output_dir``. ``cfg.tta`` / ``cfg.sliding`` / ``cfg.crf`` choose the inference strategy."""
    ckpt = load_checkpoint(cfg.ckpt_path)
    train_cfg = ckpt["config"]
    info = env_info()
    device = resolve_device(cfg.device, info.local_rank)
    info = init_distributed(device)
    precision = cfg.precision or train_cfg.get("trainer", {}).get("precision", "fp32")
    amp_dtype = resolve_precision(precision, device)
    predict = make_predict_fn(cfg.get("tta"), cfg.get("sliding"), cfg.get("crf"))  # config errors first
    ds_cfg = dataset_config(cfg, ckpt)
    dataset = instantiate_node(ds_cfg.val, "dataset.val", split=cfg.split)
    loader = eval_loader(dataset, int(cfg.batch_size or val_batch_size(ds_cfg)),
                         int(cfg.num_workers if cfg.num_workers is not None else ds_cfg.num_workers), device,
                         info.rank, info.world_size)
    model = model_from_checkpoint(ckpt, device, cfg.ckpt_path)
    ignore_index = int(train_cfg.get("loss", {}).get("ignore_index", 255))
    report = cfg.get("report") or {}
    worst = WorstImages(int(report.get("worst_k", 8)), model.num_classes, ignore_index)
    t0 = time.perf_counter()
    # the layout training validated with (NHWC vs NCHW can move bf16 logits by an ulp): same numbers
    channels_last = resolve_channels_last(train_cfg.get("trainer", {}).get("channels_last", False), device, amp_dtype)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    cm = evaluate(model, loader, model.num_classes, device, amp_dtype, ignore_index, channels_last,
                  predict=predict, on_batch=worst)
    cm.all_reduce()  # torchrun: each rank saw its own unpadded shard; the sum is the whole split
    seconds = time.perf_counter() - t0
    cleanup()
    m = cm.compute(ckpt.get("class_names"))
    m.update(num_images=len(dataset), split=cfg.split, checkpoint=str(cfg.ckpt_path),
             precision=str(amp_dtype or "fp32"), images_per_s=round(len(dataset) / seconds, 3),
             **describe(cfg.get("tta"), cfg.get("sliding"), cfg.get("crf")))
    if not info.is_main:
        return m  # only rank 0 writes (its worst-IoU grid covers its own shard)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=1))
    print(format_table(m))
    if report.get("figures", True):
        files = write_report(out, cm.mat, m, worst, ckpt.get("palette") or default_palette(model.num_classes),
                             _image_names(dataset), int(ckpt.get("step") or 0), bool(report.get("tensorboard", True)))
        log.info("figures: %s", ", ".join(files.values()))
    print(f"{len(dataset)} images, {m['images_per_s']:.2f} img/s; metrics written to {out / 'metrics.json'}")
    return m


def _image_names(dataset: Any) -> Optional[list[str]]:
    """File names of the dataset's images (for figure captions), if it has them."""
    paths = getattr(dataset, "image_paths", None)
    return [Path(p).name for p in paths] if paths is not None else None
