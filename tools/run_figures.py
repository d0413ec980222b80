"""Figures for the README from a finished run: TensorBoard curves and example predictions.

    python tools/run_figures.py RUN_DIR CKPT --out docs/camvid_segnet_cpu [--images 3]

Writes <out>_curve.png (train loss, val mIoU per step) and <out>_predictions.png
(image | ground truth | prediction rows from the checkpoint's own val split).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from segdeconv.config import split_dataset  # noqa: E402
from segdeconv.engine.logger import image_row  # noqa: E402
from segdeconv.trained import load_trained  # noqa: E402


def curve(run: Path, out: Path) -> None:
    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    loss = ea.Scalars("train/loss")
    ax[0].plot([e.step for e in loss], [e.value for e in loss], lw=0.8)
    ax[0].set(xlabel="optimizer step", ylabel="train loss (median-freq weighted CE)", title="training loss")
    miou = ea.Scalars("val/mIoU")
    ax[1].plot([e.step for e in miou], [100 * e.value for e in miou], marker="o")
    ax[1].set(xlabel="optimizer step", ylabel="val mIoU (%)", title="CamVid val mIoU")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def predictions(ckpt_path: Path, out: Path, n: int) -> None:
    trained = load_trained(ckpt_path)
    model = trained.model
    ds = split_dataset(trained.dataset_cfg, None, "val")
    rows = []
    for i in np.linspace(0, len(ds) - 1, n).astype(int):
        x, y = ds[int(i)]
        with torch.inference_mode():
            pred = model(x[None]).argmax(1)[0]
        rows.append(image_row(x, y, pred, trained.palette))
    Image.fromarray(np.concatenate(rows, 0)).save(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--out", default="docs/run")
    ap.add_argument("--images", type=int, default=3)
    a = ap.parse_args()
    curve(a.run, Path(f"{a.out}_curve.png"))
    predictions(a.ckpt, Path(f"{a.out}_predictions.png"), a.images)


if __name__ == "__main__":
    main()
