"""``evaluate_checkpoint(cfg)``: metrics of a checkpoint on a dataset split, from its own config.

Optional test-time augmentation / sliding windows / CRF (:mod:`segdeconv.inference.strategies`) or
Monte-Carlo dropout (``mc_samples=N``: the mean softmax of a Bayesian SegNet, BatchNorm in eval); writes
metrics.json, a normalized confusion-matrix PNG, a grid of the worst-IoU images, and all of it to
TensorBoard (tb/).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from segdeconv.config import split_dataset
from segdeconv.data.labelled import UNDEFINED, require_labelled, split_name
from segdeconv.data.sampler import dataset_inputs
from segdeconv.engine.bf_score import BoundaryF1
from segdeconv.engine.distributed import cleanup, env_info, init_distributed
from segdeconv.engine.eval_loop import eval_loader, evaluate
from segdeconv.engine.metrics import format_table
from segdeconv.engine.outputs import check_output_file
from segdeconv.engine.report import WorstImages, write_report
from segdeconv.engine.runtime import resolve_channels_last, resolve_device, resolve_precision
from segdeconv.engine.writer import write_json
from segdeconv.inference.montecarlo import require_dropout
from segdeconv.inference.quantize import Int8Model, check_int8_strategy, check_quantize, describe_parity, quantize_int8, require_int8
from segdeconv.inference.strategies import describe, make_predict_fn
from segdeconv.trained import load_trained

log = logging.getLogger("segdeconv")


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; write ``metrics.json``, figures and ``tb/`` into
    ``cfg.output_dir``. ``cfg.tta`` / ``cfg.sliding`` / ``cfg.crf`` / ``cfg.mc_samples`` choose the inference
    strategy."""
    info = env_info()
    device = resolve_device(cfg.device, info.local_rank, key="device")
    info = init_distributed(device)
    trained = load_trained(cfg.ckpt_path, device)
    amp_dtype = resolve_precision(cfg.precision or trained.precision, device)
    mc = (cfg.get("mc_samples"), cfg.get("mc_seed", 0))
    quant = _check_int8(cfg, device)
    predict = make_predict_fn(cfg.get("tta"), cfg.get("sliding"), cfg.get("crf"), *mc)  # config errors first
    if mc[0] is not None:
        require_dropout(trained.model, f"ckpt_path={cfg.ckpt_path}")
    dataset = split_dataset(trained.dataset_cfg, cfg.get("dataset"), cfg.split, ckpt_path=cfg.ckpt_path)
    check_output_file(Path(cfg.output_dir) / "metrics.json", [cfg.ckpt_path, *dataset_inputs(dataset)], "output_dir")
    workers = cfg.num_workers if cfg.num_workers is not None else trained.dataset_cfg.get("num_workers", 0)
    batch_size = int(cfg.batch_size or trained.val_batch_size)
    loader = eval_loader(dataset, batch_size, int(workers), device, info.rank, info.world_size)
    model, ignore_index, num_classes = trained.model, trained.ignore_index, trained.num_classes
    report = cfg.get("report") or {}
    worst = WorstImages(int(report.get("worst_k", 8)), num_classes, ignore_index)
    bf = BoundaryF1(num_classes, ignore_index) if report.get("bf_score", True) else None

    def on_batch(images: torch.Tensor, masks: torch.Tensor, pred: torch.Tensor) -> None:
        worst(images, masks, pred)
        if bf is not None:
            bf.update(pred, masks)

    # the layout training validated with (NHWC vs NCHW can move bf16 logits by an ulp): same numbers
    channels_last = resolve_channels_last(trained.channels_last, device, amp_dtype)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    qmodel: Optional[Int8Model] = None
    if quant:  # the checkpoint's own numbers first, then the int8 model's on the same images
        cm = evaluate(model, loader, num_classes, device, amp_dtype, ignore_index, channels_last, predict=predict)
        cm.all_reduce()
        reference = cm.compute(trained.class_names)
        qmodel = _int8_model(trained, cfg, batch_size, amp_dtype)  # the int8 model keeps num_classes
        model, amp_dtype, channels_last = qmodel, None, False
    t0 = time.perf_counter()
    cm = evaluate(model, loader, num_classes, device, amp_dtype, ignore_index, channels_last,
                  predict=predict, on_batch=on_batch)
    cm.all_reduce()  # torchrun: each rank saw its own unpadded shard; the sum is the whole split
    if bf is not None:
        bf.all_reduce()
    seconds = time.perf_counter() - t0
    cleanup()
    m = cm.compute(trained.class_names)
    require_labelled(m["num_pixels"], split_name(dataset, "dataset"), ignore_index)  # mIoU NaN is no result
    if bf is not None:  # boundary F1 (SegNet TPAMI §4): bf_score, per_class_bf, image_bf
        m.update(bf.compute(trained.class_names))
    m.update(num_images=len(dataset), split=cfg.split, checkpoint=str(cfg.ckpt_path),
             precision=getattr(model, "precision", str(amp_dtype or "fp32")),
             images_per_s=round(len(dataset) / seconds, 3),
             **describe(cfg.get("tta"), cfg.get("sliding"), cfg.get("crf"), *mc))
    if qmodel is not None:  # quant
        m.update(_int8_report(m, reference, qmodel))
    if info.is_main:  # only rank 0 writes (its worst-IoU grid covers its own shard)
        _write_outputs(Path(cfg.output_dir), m, cm, worst, trained, dataset, report)
    return m


def _write_outputs(out: Path, m: dict[str, Any], cm: Any, worst: WorstImages, trained: Any, dataset: Any,
                   report: Any) -> None:
    """metrics.json (atomically), the table on stdout, and the figures / TensorBoard report."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", m, "metrics", UNDEFINED)  # strict JSON, never a half-written file
    print(format_table(m))
    if report.get("figures", True):
        files = write_report(out, cm.mat, m, worst, trained.palette, _image_names(dataset), trained.step,
                             bool(report.get("tensorboard", True)))
        log.info("figures: %s", ", ".join(files.values()))
    print(f"{len(dataset)} images, {m['images_per_s']:.2f} img/s; metrics written to {out / 'metrics.json'}")


def _check_int8(cfg: DictConfig, device: torch.device) -> Optional[str]:
    """``quantize`` checked, with everything int8 cannot run refused before any scoring."""
    quant = check_quantize(cfg.get("quantize"))
    if quant:
        require_int8(device)
        check_int8_strategy(cfg.get("tta"), (cfg.get("sliding") or {}).get("window"), cfg.get("mc_samples"))
        if str(cfg.get("calibration_split") or "train") == str(cfg.split):
            log.warning("calibration_split=%s is the split being scored: the int8 numbers are then optimistic",
                        cfg.split)
    return quant


def _int8_model(trained: Any, cfg: DictConfig, batch_size: int, amp_dtype: Optional[torch.dtype]) -> Int8Model:
    """The checkpoint's model quantized to int8, calibrated on the first ``calibration_images`` images of
    ``calibration_split`` (the training images by default: never the images being scored; a whole
    number of batches); its float ops in bf16 when the evaluation's precision is bf16."""
    split = str(cfg.get("calibration_split") or "train")
    n = int(cfg.get("calibration_images") or 32)
    data = split_dataset(trained.dataset_cfg, cfg.get("dataset"), split, ckpt_path=cfg.ckpt_path)
    loader = eval_loader(data, batch_size, 0, torch.device("cpu"))
    model = trained.model.to(memory_format=torch.contiguous_format)
    return quantize_int8(model, (images for images, _ in loader), max_batches=-(-n // batch_size),
                         mixed_bf16=amp_dtype == torch.bfloat16)


def _int8_report(m: dict[str, Any], reference: dict[str, Any], qmodel: Int8Model) -> dict[str, Any]:
    """metrics.json keys of an int8 evaluation: the reference's mIoU / pixel accuracy and the deltas."""
    d_miou, d_acc = m["mIoU"] - reference["mIoU"], m["pixel_acc"] - reference["pixel_acc"]
    print(f"int8: mIoU {100 * m['mIoU']:.2f} vs {100 * reference['mIoU']:.2f} unquantized "
          f"(Δ {100 * d_miou:+.2f} points), pixel accuracy Δ {100 * d_acc:+.2f}; {describe_parity(qmodel.parity)}")
    return {"quantize": "int8", "reference_mIoU": reference["mIoU"], "reference_pixel_acc": reference["pixel_acc"],
            "mIoU_delta": d_miou, "pixel_acc_delta": d_acc, "int8_parity": qmodel.parity}


def _image_names(dataset: Any) -> Optional[list[str]]:
    """File names of the dataset's images (for figure captions), if it has them."""
    paths = getattr(dataset, "image_paths", None)
    return [Path(p).name for p in paths] if paths is not None else None
