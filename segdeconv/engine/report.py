"""Evaluation figures: normalized confusion matrix and the worst-IoU images, as PNGs and in TensorBoard.

Matplotlib is used through its object-oriented API with the Agg canvas (no pyplot, no display).
"""
from __future__ import annotations

import heapq
import itertools
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from segdeconv.engine.logger import TBLogger, image_row
from segdeconv.engine.writer import write_figure


def image_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> float:
    """Mean IoU of one image over the classes present in its ground truth or prediction."""
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long().clamp(0, num_classes - 1)
    if t.numel() == 0:
        return math.nan
    t = t.clamp(0, num_classes - 1)
    cm = torch.bincount(t * num_classes + p, minlength=num_classes ** 2).view(num_classes, num_classes)
    tp, union = cm.diag().double(), (cm.sum(0) + cm.sum(1) - cm.diag()).double()
    return float((tp[union > 0] / union[union > 0]).mean())


class WorstImages:
    """An ``on_batch`` hook for :func:`segdeconv.engine.evaluate` keeping the ``k`` lowest-IoU images."""

    def __init__(self, k: int, num_classes: int, ignore_index: int = 255) -> None:
        self.k, self.num_classes, self.ignore_index = k, num_classes, ignore_index
        self._heap: list[tuple[float, int, tuple[Tensor, Tensor, Tensor]]] = []  # (-iou, index, data)
        self._index = itertools.count()

    def __call__(self, images: Tensor, masks: Tensor, pred: Tensor) -> None:
        for img, mask, p in zip(images, masks, pred):
            i = next(self._index)
            iou = image_iou(p, mask, self.num_classes, self.ignore_index)
            if self.k <= 0 or math.isnan(iou):
                continue
            if len(self._heap) < self.k or -self._heap[0][0] > iou:
                item = (-iou, i, (img.float().cpu(), mask.cpu(), p.cpu()))
                (heapq.heappush if len(self._heap) < self.k else heapq.heapreplace)(self._heap, item)

    def worst(self) -> list[tuple[float, int, tuple[Tensor, Tensor, Tensor]]]:
        """``(iou, dataset index, (image, mask, pred))``, worst first."""
        return [(-n, i, d) for n, i, d in sorted(self._heap, key=lambda e: (-e[0], e[1]))]


def confusion_figure(mat: Tensor, class_names: Sequence[str], title: str = ""):
    """Row-normalized confusion matrix (rows: ground truth, columns: prediction) as a Figure."""
    from matplotlib.figure import Figure

    m = mat.double().cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = m / m.sum(1, keepdims=True)  # NaN rows: class absent from the ground truth
    n = len(class_names)
    side = max(4.0, 0.45 * n + 2.5)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix (rows normalized)")
    if n <= 30:
        for (r, c), v in np.ndenumerate(norm):
            if not np.isnan(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7 if n > 12 else 9,
                        color="white" if v > 0.5 else "black")
    return fig


def worst_figure(rows: list[tuple[str, np.ndarray]]):
    """One row per image (image | ground truth | prediction) with its caption, as a Figure."""
    from matplotlib.figure import Figure

    h, w = rows[0][1].shape[:2]
    width = 12.0
    fig = Figure(figsize=(width, len(rows) * (width * h / w + 0.35)), layout="constrained")
    for i, (caption, row) in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        ax.imshow(row, interpolation="nearest")
        ax.set_title(caption, fontsize=9, loc="left")
        ax.axis("off")
    return fig


def write_report(out: Path, mat: Tensor, metrics: dict, worst: Optional[WorstImages], palette: Sequence,
                 names: Optional[Sequence[str]] = None, step: int = 0, tensorboard: bool = True) -> dict[str, str]:
    """Write ``confusion_matrix.png`` and ``worst_iou.png`` into ``out`` (and ``out/tb``); return the paths."""
    split = metrics.get("split", "eval")
    class_names = list(metrics["per_class_iou"])
    files: dict[str, str] = {}
    cm_fig = confusion_figure(mat, class_names, f"Confusion matrix, {split} (rows normalized)")
    write_figure(out / "confusion_matrix.png", cm_fig, "confusion matrix", dpi=120)
    files["confusion_matrix"] = str(out / "confusion_matrix.png")
    triples = worst.worst() if worst is not None else []
    if triples:
        rows = [(f"{_name(names, i)} — image IoU {100 * iou:.1f}%   (image | ground truth | prediction)",
                 image_row(img, mask, pred, palette)) for iou, i, (img, mask, pred) in triples]
        write_figure(out / "worst_iou.png", worst_figure(rows), "worst-IoU figure", dpi=100)
        files["worst_iou"] = str(out / "worst_iou.png")
    if tensorboard:
        _to_tensorboard(out / "tb", metrics, cm_fig, [d for _, _, d in triples], palette, step)
        files["tensorboard"] = str(out / "tb")
    return files


def _name(names: Optional[Sequence[str]], i: int) -> str:
    return f"#{i} {names[i]}" if names is not None and i < len(names) else f"#{i}"


def _to_tensorboard(log_dir: Path, metrics: dict, cm_fig: Any, triples: list, palette: Sequence, step: int) -> None:
    from segdeconv.engine.metrics import format_table

    split = metrics.get("split", "eval")
    tb = TBLogger(log_dir, palette)
    try:
        keys = ("mIoU", "pixel_acc", "mean_acc", "fw_iou", "bf_score", "image_bf")  # BF: class and image means
        tb.scalars({f"eval_{split}/{k}": metrics[k] for k in keys if k in metrics}, step)
        tb.scalars({f"eval_{split}_iou/{k}": v for k, v in metrics["per_class_iou"].items()}, step)
        tb.writer.add_text(f"eval_{split}/table", "```\n" + format_table(metrics) + "\n```", step)
        tb.writer.add_figure(f"eval_{split}/confusion_matrix", cm_fig, step, close=False)
        tb.images(triples, step, tag=f"eval_{split}/worst_iou_image_label_prediction")
    finally:
        tb.close()
