"""The evaluation loop: a confusion matrix over a loader, optionally through a ``PredictFn`` (TTA,
sliding window, CRF — :mod:`segdeconv.inference.strategies`), scored at the labels' size (logits
upsampled to it when the model predicts at another). Shared by the trainer's validation and
``evaluate.py``; the caller all-reduces the matrix under DDP."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from segdeconv.data.sampler import EpochSampler, loader_generator, pad_collate, quiet_worker
from segdeconv.engine.metrics import ConfusionMatrix
from segdeconv.engine.step import autocast, to_device


def eval_loader(dataset: Any, batch_size: int, num_workers: int, device: torch.device, rank: int = 0,
                world_size: int = 1) -> DataLoader:
    """Ordered, rank-sharded (no padding, so nothing is counted twice) evaluation loader."""
    sampler = EpochSampler(len(dataset), False, 0, world_size, rank, pad=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=device.type == "cuda", collate_fn=pad_collate, generator=loader_generator(0),
                      worker_init_fn=quiet_worker if num_workers else None)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    ignore_index: int = 255,
    channels_last: bool = False,
    predict: Optional[Callable[[nn.Module, Tensor], Tensor]] = None,
    on_batch: Optional[Callable[[Tensor, Tensor, Tensor], None]] = None,
) -> ConfusionMatrix:
    """Accumulate a confusion matrix over ``batches`` (the caller all-reduces it under DDP).

    ``predict(model, images) -> logits`` replaces plain ``model(images)`` (TTA, sliding window);
    ``on_batch(images, masks, pred)`` sees every batch (image grids, worst-case mining)."""
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    for images, masks in batches:
        images = to_device(images, device, channels_last)
        masks = to_device(masks, device)
        with autocast(device, amp_dtype):
            logits = predict(model, images) if predict else model(images)
        pred = to_label_size(logits, masks).argmax(1)
        cm.update(pred, masks)
        if on_batch is not None:
            on_batch(to_label_size(images, masks), masks, pred)
    return cm


def to_label_size(x: Tensor, masks: Tensor) -> Tensor:
    """``x`` (logits or images, N×C×h×w) bilinearly resized to the labels' H×W when they differ: a model
    predicting at its own resolution is scored against labels kept at their native size (``segnet_eval``)."""
    if tuple(x.shape[-2:]) == tuple(masks.shape[-2:]):
        return x
    return F.interpolate(x.float(), size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)
