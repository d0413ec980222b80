"""TensorBoard and progress-bar helpers (rank 0 only; other ranks get silent stand-ins).

:func:`finite_scalars`, :func:`metric_scalars` and :func:`image_grid` define what every logger
records (TensorBoard here; MLflow and Weights & Biases in :mod:`segdeconv.engine.trackers`), so all
of them show the same names and values.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from segdeconv.data.image import denormalize
from segdeconv.palette import colorize


class _Silent:
    """A no-op progress bar with tqdm's interface, for non-zero ranks and progress=false."""

    def __init__(self, it: Iterable) -> None:
        self.it = it

    def __iter__(self):
        return iter(self.it)

    def set_postfix(self, *a, **k) -> None:
        pass

    def close(self) -> None:
        pass


_BARS: list = []  # whether a bar was ever shown in this process (tqdm leaves "\r…" without a newline)


def progress(it: Iterable, enabled: bool, desc: str):
    """tqdm over ``it`` (loss, lr, img/s in the postfix; ETA from tqdm) or a silent stand-in."""
    if not enabled:
        return _Silent(it)
    _BARS.append(True)
    return tqdm(it, desc=desc, dynamic_ncols=True, file=sys.stderr, mininterval=1.0, leave=False)


def end_progress() -> None:
    """Close the progress bars still open and end their line on stderr, so that what is printed next (the
    ``error:`` line) starts a line of its own: ``grep '^error:'`` finds it in a log."""
    if not _BARS:
        return
    from tqdm import tqdm as plain

    for bar in list(getattr(plain, "_instances", [])):
        bar.close()
    sys.stderr.write("\n")
    sys.stderr.flush()


class TBLogger:
    """Scalars, per-class IoU and image | label | prediction grids in ``tb/``."""

    def __init__(self, log_dir: Path, palette: Sequence[Sequence[int]], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the events the killed run logged after its checkpoint
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        self.palette = palette

    def scalars(self, values: dict, step: int) -> None:
        for k, v in finite_scalars(values).items():
            self.writer.add_scalar(k, v, step)

    def metrics(self, m: dict, step: int) -> None:
        self.scalars(metric_scalars(m), step)

    def images(self, triples: list, step: int, tag: str = "val/image_label_prediction") -> None:
        grid = image_grid(triples, self.palette)
        if grid is not None:
            self.writer.add_image(tag, grid, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def image_row(image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, palette) -> np.ndarray:
    """One (H, 3W, 3) uint8 row: de-normalized image | coloured label | coloured prediction."""
    img = (denormalize(image.float()).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return np.concatenate([img, colorize(mask, palette), colorize(pred, palette)], 1)


def finite_scalars(values: dict) -> dict[str, float]:
    """The int/float entries of ``values`` that are finite (NaN/Inf and non-numbers are not logged)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def metric_scalars(m: dict, prefix: str = "val") -> dict[str, float]:
    """Validation metrics as logged scalars: ``val/{mIoU,mean_dice,pixel_acc,mean_acc,fw_iou,bf_score}`` (those
    present) + ``val_iou/<class>`` and ``val_dice/<class>``."""
    keys = ("mIoU", "mean_dice", "pixel_acc", "mean_acc", "fw_iou", "bf_score")
    out = {f"{prefix}/{k}": m[k] for k in keys if k in m}
    out.update({f"{prefix}_iou/{k}": v for k, v in m["per_class_iou"].items()})
    out.update({f"{prefix}_dice/{k}": v for k, v in m.get("per_class_dice", {}).items()})
    return out


def image_grid(triples: list, palette: Sequence[Sequence[int]]) -> np.ndarray | None:
    """``(image, mask, pred)`` triples as one (H, W, 3) uint8 picture, one :func:`image_row` each; None if empty."""
    if not triples:
        return None
    rows = [image_row(img, mask, pred, palette) for img, mask, pred in triples]
    w = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, 0)
