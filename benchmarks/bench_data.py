"""Data-loading throughput: decode (cv2 vs PIL) and CamVid train decode+augment per worker count.

    python benchmarks/bench_data.py --root ../shared/data/camvid [--images 96] [--workers 0,1,2]
                                    [--voc ../shared/data/voc_sample]

Prints markdown tables (images/s) and the CPU capability torch dispatches to. A script, not a
test: numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))  # runnable from a checkout without installing the package

from segdeconv.data.camvid import CamVid  # noqa: E402
from segdeconv.data.image import read_image  # noqa: E402
from segdeconv.data.transforms import segnet_train  # noqa: E402


def pil_decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def cv2_decode(path: Path) -> np.ndarray:
    return read_image(path)


def per_second(fn: Callable[[Path], object], paths: Sequence[Path], repeats: int = 2) -> float:
    """Best-of-``repeats`` items/s of ``fn`` over ``paths``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        best = min(best, time.perf_counter() - t0)
    return len(paths) / best


def loader_rate(ds: CamVid, workers: int, images: int, batch_size: int) -> float:
    """Images/s through a DataLoader (decode + augment + to tensors), after one warm-up batch."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for images_, _ in itertools.islice(it, max(1, images // batch_size)):
        n += images_.shape[0]
    return n / (time.perf_counter() - t0)


def decode_table(camvid: Path, voc: Path | None, n: int) -> list[str]:
    rows = ["| decode | file | cv2 img/s | PIL img/s |", "|---|---|---:|---:|"]
    sets = [("CamVid PNG 480x360", sorted((camvid / "train").glob("*.png"))[:n])]
    if voc is not None:
        sets.append(("VOC JPEG ~500x375", sorted(voc.rglob("JPEGImages/*.jpg"))[:n]))
    for name, paths in sets:
        if paths:
            cv2_rate, pil_rate = per_second(cv2_decode, paths), per_second(pil_decode, paths)
            rows.append(f"| RGB image | {name}, n={len(paths)} | {cv2_rate:.0f} | {pil_rate:.0f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=HERE.parent / "shared" / "data" / "camvid")
    ap.add_argument("--voc", type=Path, default=HERE.parent / "shared" / "data" / "voc_sample")
    ap.add_argument("--images", type=int, default=96, help="images timed per worker setting")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()

    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()}, cores: {os.cpu_count()}, "
          f"torch threads: {torch.get_num_threads()}, cv2 threads: {cv2.getNumThreads()}\n")
    print("\n".join(decode_table(args.root, args.voc if args.voc.is_dir() else None, 40)) + "\n")
    ds = CamVid(args.root, "train", transform=segnet_train())
    rows = [f"| CamVid train decode+augment (segnet_train, batch {args.batch_size}) | images/s |",
            "|---|---:|"]
    for w in (int(x) for x in args.workers.split(",")):
        rows.append(f"| num_workers={w} | {loader_rate(ds, w, args.images, args.batch_size):.1f} |")
    # In-process loading shares torch's intra-op thread pool; on busy cores its spin-waits make
    # default_collate's torch.stack slow. Workers run with 1 torch thread, as this row does.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows.append(f"| num_workers=0, torch.set_num_threads(1) | "
                f"{loader_rate(ds, 0, args.images, args.batch_size):.1f} |")
    torch.set_num_threads(threads)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
