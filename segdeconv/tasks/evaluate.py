"""``evaluate_checkpoint(cfg)``: metrics of a checkpoint on a dataset split, from its own config.

Optional test-time augmentation / sliding windows / CRF (:mod:`segdeconv.inference.strategies`) or
Monte-Carlo dropout (``mc_samples=N``: the mean softmax of a Bayesian SegNet, BatchNorm in eval); writes
metrics.json, a normalized confusion-matrix PNG, a grid of the worst-IoU images, and all of it to
TensorBoard (tb/).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from segdeconv.config import split_dataset
from segdeconv.engine.bf_score import BoundaryF1
from segdeconv.engine.distributed import cleanup, env_info, init_distributed
from segdeconv.engine.eval_loop import eval_loader, evaluate
from segdeconv.engine.metrics import format_table
from segdeconv.engine.outputs import atomic_file
from segdeconv.engine.report import WorstImages, write_report
from segdeconv.engine.runtime import resolve_channels_last, resolve_device, resolve_precision
from segdeconv.inference.montecarlo import require_dropout
from segdeconv.inference.strategies import describe, make_predict_fn
from segdeconv.trained import load_trained

log = logging.getLogger("segdeconv")


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; write ``metrics.json``, figures and ``tb/`` into
    ``cfg.output_dir``. ``cfg.tta`` / ``cfg.sliding`` / ``cfg.crf`` / ``cfg.mc_samples`` choose the inference
    strategy."""
    info = env_info()
    device = resolve_device(cfg.device, info.local_rank)
    info = init_distributed(device)
    trained = load_trained(cfg.ckpt_path, device)
    amp_dtype = resolve_precision(cfg.precision or trained.precision, device)
    mc = (cfg.get("mc_samples"), cfg.get("mc_seed", 0))
    predict = make_predict_fn(cfg.get("tta"), cfg.get("sliding"), cfg.get("crf"), *mc)  # config errors first
    if mc[0] is not None:
        require_dropout(trained.model, f"ckpt_path={cfg.ckpt_path}")
    dataset = split_dataset(trained.dataset_cfg, cfg.get("dataset"), cfg.split, ckpt_path=cfg.ckpt_path)
    workers = cfg.num_workers if cfg.num_workers is not None else trained.dataset_cfg.get("num_workers", 0)
    loader = eval_loader(dataset, int(cfg.batch_size or trained.val_batch_size), int(workers), device,
                         info.rank, info.world_size)
    model, ignore_index = trained.model, trained.ignore_index
    report = cfg.get("report") or {}
    worst = WorstImages(int(report.get("worst_k", 8)), model.num_classes, ignore_index)
    bf = BoundaryF1(model.num_classes, ignore_index) if report.get("bf_score", True) else None

    def on_batch(images: torch.Tensor, masks: torch.Tensor, pred: torch.Tensor) -> None:
        worst(images, masks, pred)
        if bf is not None:
            bf.update(pred, masks)

    t0 = time.perf_counter()
    # the layout training validated with (NHWC vs NCHW can move bf16 logits by an ulp): same numbers
    channels_last = resolve_channels_last(trained.channels_last, device, amp_dtype)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    cm = evaluate(model, loader, model.num_classes, device, amp_dtype, ignore_index, channels_last,
                  predict=predict, on_batch=on_batch)
    cm.all_reduce()  # torchrun: each rank saw its own unpadded shard; the sum is the whole split
    if bf is not None:
        bf.all_reduce()
    seconds = time.perf_counter() - t0
    cleanup()
    m = cm.compute(trained.class_names)
    if bf is not None:  # boundary F1 (SegNet TPAMI §4): bf_score, per_class_bf, image_bf
        m.update(bf.compute(trained.class_names))
    m.update(num_images=len(dataset), split=cfg.split, checkpoint=str(cfg.ckpt_path),
             precision=str(amp_dtype or "fp32"), images_per_s=round(len(dataset) / seconds, 3),
             **describe(cfg.get("tta"), cfg.get("sliding"), cfg.get("crf"), *mc))
    if not info.is_main:
        return m  # only rank 0 writes (its worst-IoU grid covers its own shard)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "metrics.json", "metrics") as tmp:  # never a half-written file
        tmp.write_text(json.dumps(m, indent=1))
    print(format_table(m))
    if report.get("figures", True):
        files = write_report(out, cm.mat, m, worst, trained.palette, _image_names(dataset), trained.step,
                             bool(report.get("tensorboard", True)))
        log.info("figures: %s", ", ".join(files.values()))
    print(f"{len(dataset)} images, {m['images_per_s']:.2f} img/s; metrics written to {out / 'metrics.json'}")
    return m


def _image_names(dataset: Any) -> Optional[list[str]]:
    """File names of the dataset's images (for figure captions), if it has them."""
    paths = getattr(dataset, "image_paths", None)
    return [Path(p).name for p in paths] if paths is not None else None
