"""Timings of the Zeiler & Fergus projection (CPU, fp32).

    python benchmarks/bench_visualize.py                       # one projection, VGG16-BN, 360×480
    python benchmarks/bench_visualize.py --ckpt best.pt --camvid ../shared/data/camvid   # + top-9
    python benchmarks/bench_visualize.py --ckpt checkpoints/camvid_segnet_cpu.pt \
        --camvid ../shared/data/camvid --only occlusion                              # occlusion only

1. One activation projected through the full-width VGG16-BN SegNet encoder at 360×480: at a given
   position (receptive-field crops), at the channel's maximum (adds a whole-image forward), and the
   whole-image baseline (autograd forward + backward of the same unit, as captum would run it).
2. The top-9 over CamVid val for 8 channels of conv3_3 and conv5_3 with a checkpoint's encoder.
3. Z&F §4.2 occlusion of one 360×480 CamVid val image ("Car", 32-px patch, stride 16: 638 windows)
   at the checkpoint's training size (timed once) and at the native size (one batch of 16 timed,
   times the number of batches).
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_line, machine_line  # noqa: E402

from segdeconv.engine.runtime import describe_cpu  # noqa: E402
from segdeconv.models import Pool, VGGEncoder  # noqa: E402
from segdeconv.visualize import Projector, collect_tiles, occlusion_map, search_topk  # noqa: E402
from segdeconv.visualize.occlusion import window_starts  # noqa: E402


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


def bench_occlusion(ckpt: str, root: str, image: int = 0) -> None:
    from segdeconv.data.camvid import CamVid
    from segdeconv.trained import load_trained

    t = load_trained(ckpt)
    x = CamVid(root, "val")[image][0]  # (3, 360, 480), normalized
    h, w = x.shape[-2:]
    n = len(window_starts(h, 32, 16)) * len(window_starts(w, 32, 16))
    t0, c0 = time.perf_counter(), time.process_time()
    occlusion_map(t.model, x, "Car", class_names=t.class_names, input_size=t.image_size, batch_size=32)
    print(f"occlusion, CamVid val #{image} {h}x{w}, Car, patch 32 stride 16 ({n} windows), model at "
          f"{t.image_size[0]}x{t.image_size[1]} (patch 16 stride 8 there): "
          f"{time.perf_counter() - t0:.1f} s wall / {time.process_time() - c0:.1f} core-s")
    copies = x.expand(16, -1, -1, -1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        t.model(copies[:1])
        t0, c0 = time.perf_counter(), time.process_time()
        t.model(copies)
    k = -(-n // 16)
    print(f"occlusion, same image at the native {h}x{w}: one batch of 16 copies {time.perf_counter() - t0:.1f} s "
          f"wall / {time.process_time() - c0:.1f} core-s, x {k} batches = "
          f"{k * (time.perf_counter() - t0):.0f} s wall (estimated)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--ckpt", help="checkpoint for the top-k timing")
    ap.add_argument("--camvid", help="CamVid root (SegNet layout) for the top-k and occlusion timings")
    ap.add_argument("--only", choices=["projection", "topk", "occlusion"], help="run one of the rows only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{machine_line()} · {load_line()}\n`python benchmarks/bench_visualize.py {shlex.join(sys.argv[1:])}`\n")
    if args.only in (None, "projection"):
        bench_projection(args.repeat)
    if args.ckpt and args.camvid and args.only in (None, "topk"):
        bench_topk(args.ckpt, args.camvid)
    if args.ckpt and args.camvid and args.only in (None, "occlusion"):
        bench_occlusion(args.ckpt, args.camvid)


if __name__ == "__main__":
    main()
