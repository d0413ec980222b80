"""Timings of the Zeiler & Fergus projection (CPU, fp32).

    python benchmarks/bench_visualize.py                       # one projection, VGG16-BN, 360×480
    python benchmarks/bench_visualize.py --ckpt best.pt --camvid ../shared/data/camvid   # + top-9

1. One activation projected through the full-width VGG16-BN SegNet encoder at 360×480: at a given
   position (receptive-field crops), at the channel's maximum (adds a whole-image forward), and the
   whole-image baseline (autograd forward + backward of the same unit, as captum would run it).
2. The top-9 over CamVid val for 8 channels of conv3_3 and conv5_3 with a checkpoint's encoder.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from segdeconv.engine.runtime import describe_cpu
from segdeconv.models import Pool, VGGEncoder
from segdeconv.visualize import Projector, collect_tiles, search_topk


def median_s(fn: Callable[[], object], repeat: int) -> str:
    """Median wall time and CPU time (all threads: core-seconds, robust to a shared machine)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return f"{statistics.median(wall):.3f} s wall, {statistics.median(cpu):.3f} core-s"


def whole_image_gradient(enc: VGGEncoder, proj: Projector, x: torch.Tensor, layer: str, c: int, y: int, xx: int) -> None:
    inp = x[None].clone().requires_grad_()
    h = inp
    for m in enc.features[:proj.layer_index(layer) + 1]:
        h = m(h)[0] if isinstance(m, Pool) else m(h)
    torch.autograd.grad(h[0, c, y, xx], inp)


def bench_projection(repeat: int) -> None:
    torch.manual_seed(0)
    enc = VGGEncoder("vgg16", width=1.0, compact_switches=False).eval()
    proj, x = Projector.from_model(enc), torch.randn(3, 360, 480)
    print(f"VGG16-BN encoder, 360x480, fp32, {describe_cpu()}; median of {repeat}")
    for layer, pos in [("conv3_3", (45, 60)), ("conv5_3", (11, 15))]:
        for method in ("deconvnet", "guided_backprop", "gradient"):
            t = median_s(lambda: proj.project(x, layer, 3, pos, method), repeat)
            print(f"  {layer} {method:16s} at {pos}: {t}")
        t = median_s(lambda: proj.project(x, layer, 3), repeat)
        print(f"  {layer} deconvnet        at the channel max: {t} (incl. whole-image forward)")
        t = median_s(lambda: whole_image_gradient(enc, proj, x, layer, 3, *pos), repeat)
        print(f"  {layer} whole-image autograd baseline: {t}")


def bench_topk(ckpt: str, root: str) -> None:
    from segdeconv.data.camvid import CamVid
    from segdeconv.trained import load_trained

    proj = Projector.from_model(load_trained(ckpt).model)
    data = CamVid(root, "val")
    layers, channels = ["conv3_3", "conv5_3"], list(range(8))
    t0, c0 = time.perf_counter(), time.process_time()
    tables = search_topk(proj, data, layers, channels, k=9, show_progress=False)
    t1, c1 = time.perf_counter(), time.process_time()
    collect_tiles(proj, data, tables, "deconvnet", show_progress=False)
    t2, c2 = time.perf_counter(), time.process_time()
    print(f"top-9 over CamVid val ({len(data)} images), 8 channels x {layers}: "
          f"search {t1 - t0:.1f} s wall / {c1 - c0:.1f} core-s, "
          f"{8 * 9 * 2} projections {t2 - t1:.1f} s wall / {c2 - c1:.1f} core-s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--ckpt", help="checkpoint for the top-k timing")
    ap.add_argument("--camvid", help="CamVid root (SegNet layout) for the top-k timing")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_projection(args.repeat)
    if args.ckpt and args.camvid:
        bench_topk(args.ckpt, args.camvid)


if __name__ == "__main__":
    main()
