"""Confusion-matrix metrics (as torchvision references/segmentation): one type for training
validation, evaluate.py, DDP and TensorBoard.

Conventions: rows = ground truth, columns = prediction. Pixels whose target is ``ignore_index``
are dropped. A class that appears neither in the ground truth nor in the predictions has an
undefined IoU and Dice (0/0) and is *excluded* from the means (reported as NaN per class).
Dice = 2TP / (2TP + FP + FN) (Dice, Ecology 1945): the F1 of pixel precision TP/(TP+FP) and recall TP/(TP+FN).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix with ``torch.bincount`` on the data's device."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: Optional[torch.device] = None):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` class indices (any shape) and ``target`` of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        n = self.num_classes
        target = target.to(self.mat.device).flatten()
        pred = pred.to(self.mat.device).flatten()
        keep = target != self.ignore_index
        target, pred = target[keep].long(), pred[keep].long()
        if target.numel() and (int(target.max()) >= n or int(target.min()) < 0):
            raise ValueError(
                f"label value {int(target.max())} outside 0..{n - 1} (and ≠ ignore {self.ignore_index})"
            )
        self.mat += torch.bincount(target * n + pred, minlength=n * n).view(n, n)

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)

    def compute(self, class_names: Optional[Sequence[str]] = None) -> dict:
        """mIoU, pixel accuracy, mean class accuracy, frequency-weighted IoU, mean Dice, per-class IoU/Dice."""
        h = self.mat.double().cpu()
        tp, gt, pr = h.diag(), h.sum(1), h.sum(0)
        union = gt + pr - tp
        iou = tp / union  # NaN where the class is absent from GT and prediction
        dice = 2 * tp / (gt + pr)  # 2TP / (2TP + FP + FN): NaN exactly where IoU is
        acc = tp / gt  # NaN where the class is absent from GT
        total = h.sum()
        valid = union > 0
        freq = gt / total if total > 0 else gt
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        return {
            "mIoU": float(iou[valid].mean()) if valid.any() else float("nan"),
            "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_acc": float(acc[gt > 0].mean()) if (gt > 0).any() else float("nan"),
            "fw_iou": float((freq[valid] * iou[valid]).sum()) if valid.any() else float("nan"),
            "per_class_iou": {n: float(v) for n, v in zip(names, iou.tolist())},
            "mean_dice": float(dice[valid].mean()) if valid.any() else float("nan"),
            "per_class_dice": {n: float(v) for n, v in zip(names, dice.tolist())},
            "num_pixels": int(total),
        }


def format_table(metrics: dict) -> str:
    """A per-class IoU / Dice table plus the summary metrics, as monospaced text."""
    def pct(v: float) -> str:
        return f"{'n/a':>8}" if v != v else f"{100 * v:8.2f}"

    dice, bf = metrics.get("per_class_dice", {}), metrics.get("per_class_bf")
    rows = [f"{'class':<16}{'IoU':>8}{'Dice':>8}" + (f"{'BF':>8}" if bf is not None else "")]
    for name, v in metrics["per_class_iou"].items():
        b = "" if bf is None else pct(float("nan") if bf.get(name) is None else bf[name])
        rows.append(f"{name:<16}{pct(v)}{pct(dice.get(name, float('nan')))}{b}")
    for key in ("mIoU", "mean_dice", "bf_score", "image_bf", "pixel_acc", "mean_acc", "fw_iou"):
        if key in metrics:
            rows.append(f"{key:<16}{100 * metrics[key]:8.2f}{SUMMARY_NOTES.get(key, '')}")
    return "\n".join(rows)


# The two BF aggregations (segdeconv.engine.bf_score): SegNet's tables report the image mean.
SUMMARY_NOTES = {"bf_score": "  BF, mean over classes of each class's mean over its images",
                 "image_bf": "  BF, mean over images of each image's class mean (computeBFmeasure.m: the paper's)"}
