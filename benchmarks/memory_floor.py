"""The least peak memory an *exact* training step can have, against issue #18's memory targets.

    python benchmarks/memory_floor.py --reference-gib 4.33                    # SegNet 360×480, batch 4
    python benchmarks/memory_floor.py --model deconvnet --reference-gib 5.65  # DeconvNet 224×224, batch 8

An exact conv–BN–ReLU backward needs one stored map of each convolution's output size: BatchNorm's
input gradient reads the normalised input x̂ at *every* position (also where ReLU cut the gradient to
zero), and ReLU is not invertible, so x̂ cannot be rebuilt from anything smaller (InPlace-ABN, Rota Bulò
et al. 2018, has to switch to leaky ReLU for that). The lean graph (``model.lean``) keeps exactly that
one map. Going below it means recomputing convolutions (``model.recompute``) or storing lossy maps.

The floor walks backward through the convolutions (reverse forward order). At convolution i alive are,
at the least: what ``python train.py`` imports plus the optimizer (measured in a fresh process), the
fp32 weights and optimizer state; the stored outputs of convolutions 1..i-1 and i's input (kept or
rebuilt: its weight gradient reads it), autocast's bf16 weight copies of 1..i; the fp32 gradients of
convolutions i..n (this one included) and, under autocast, this one's bf16 weight gradient before its
fp32 cast; the gradient maps of i's output and input. The largest such sum is printed beside the
target (× the reference's peak RSS from bench_train.py, measured in its own run: ``--reference-gib``).
Its first step (i = n) is the start of backward, its last the end; with huge layers mid-network (DeconvNet's fc6) the peak lies between.
Allocator slack, oneDNN's reorders and BatchNorm's backward temporaries come on top.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from bench_train import SETTINGS, train_overrides  # noqa: E402
from common import PY, REPO, compose, machine_line  # noqa: E402

GIB = 2**30
TARGETS = {"segnet": {"fp32": 0.50, "bf16": 0.40}, "deconvnet": {"fp32": 0.70, "bf16": 0.70}}  # issue #18


def import_floor_gib(optimizer_target: str) -> float:
    """Peak RSS (VmHWM, read in-process) of a fresh process that imported what ``python train.py`` imports
    (torch, the task layer, the albumentations transforms, TensorBoard) and built one ``optimizer_target``."""
    mod, cls = optimizer_target.rsplit(".", 1)
    code = (f"import torch, {mod} as m, segdeconv.tasks.train, segdeconv.data.transforms, train; "
            f"m.{cls}([torch.zeros(1, requires_grad=True)], lr=0.1); from torch.utils.tensorboard import SummaryWriter; "
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    out = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) * 1024 / GIB


def conv_layers(model, size: tuple[int, int]) -> list[tuple[str, int, int, int]]:
    """``(name, input values, kept output values, weight values)`` of every conv / transposed conv, in
    forward order, for one image. A conv on the RGB image keeps 0 values: the lean graph rebuilds it."""
    import torch

    from segdeconv.models.memory.lean import _is_cheap_conv

    out: list[tuple[str, int, int, int]] = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: out.append(
                 (n, i[0].numel(), 0 if _is_cheap_conv(m) else o.numel(), m.weight.numel())))
             for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, *size))
    for h in hooks:
        h.remove()
    return out


def backward_peak(layers: list[tuple[str, int, int, int]], batch: int, act_bytes: int, autocast: bool) -> tuple:
    """``(name, stored maps, bf16 weight copies, fp32 gradients, bf16 weight gradient, gradient maps)`` in
    bytes at the convolution where their sum peaks, walking backward (module docstring)."""
    best: tuple = ("", 0, 0, 0, 0, 0)
    for i in range(len(layers) - 1, -1, -1):
        name, inp, outp, w = layers[i]
        parts = ((sum(o for _, _, o, _ in layers[:i]) + inp) * batch * act_bytes,  # + its input, kept or rebuilt
                 sum(x for *_, x in layers[:i + 1]) * 2 * autocast,
                 sum(x for *_, x in layers[i:]) * 4,
                 w * 2 * autocast,
                 (inp + outp) * batch * act_bytes)
        if sum(parts) > sum(best[1:]):
            best = (name, *parts)
    return best


def floor_rows(model_name: str, size: tuple[int, int], batch: int, ref_gib: float | None) -> list[tuple]:
    """``(part, fp32 GiB, bf16 GiB)`` rows of the table."""
    from segdeconv.config import model_from_config

    cfg = compose([[*train_overrides(model_name, batch), f"dataset.image_size=[{size[0]},{size[1]}]"]])[0]
    if isinstance(cfg, Exception):
        raise cfg
    opt = cfg.optimizer._target_
    base = import_floor_gib(opt)
    model = model_from_config(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    states = 2 if opt.endswith(("Adam", "AdamW")) else int(bool(cfg.optimizer.get("momentum")))
    layers = conv_layers(model, size)
    f32, b16 = backward_peak(layers, batch, 4, False), backward_peak(layers, batch, 2, True)
    at = f32[0] if f32[0] == b16[0] else f"fp32: {f32[0]}, bf16: {b16[0]}"
    stored = sum(o for _, _, o, _ in layers)
    rows = [("imports of train.py + optimizer (measured)", base, base),
            (f"weights ({params / 1e6:.2f} M, fp32)", params * 4 / GIB, params * 4 / GIB),
            (f"optimizer state ({opt.rsplit('.', 1)[1]}: {states} × fp32)", states * params * 4 / GIB,
             states * params * 4 / GIB)]
    labels = (f"stored conv outputs not yet used + this conv's input (all kept: {stored / 1e6:.1f} M values/image × {batch})",
              "autocast's bf16 weight copies not yet used", "fp32 weight gradients formed so far",
              "this layer's bf16 weight gradient (before its fp32 cast)", "gradient maps of its output and input")
    rows += [(label, x / GIB, y / GIB) for label, x, y in zip(labels, f32[1:], b16[1:])]
    floor = (sum(r[1] for r in rows), sum(r[2] for r in rows))
    rows += [(f"**floor: peak of the backward walk** (at {at})", *floor)]
    if ref_gib:
        t = TARGETS[model_name]
        rows += [("floor / reference", floor[0] / ref_gib, floor[1] / ref_gib),
                 ("issue #18 target (× reference)", t["fp32"], t["bf16"])]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="segnet", choices=sorted(SETTINGS))
    ap.add_argument("--reference-gib", type=float, default=None,
                    help="the reference's peak RSS (GiB) measured by bench_train.py on this machine")
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="default: the benchmark's")
    ap.add_argument("--batch", type=int, default=None, help="default: the benchmark's")
    a = ap.parse_args(argv)
    s = SETTINGS[a.model]
    size, batch = tuple(a.size or s["size"]), a.batch or s["batch"]
    if a.reference_gib is not None and a.reference_gib <= 0:
        ap.error(f"--reference-gib must be > 0 (a peak RSS in GiB), got {a.reference_gib}")
    if min(size) < 32 or batch < 1:
        ap.error(f"--size must be ≥ 32 × 32 (five 2× poolings) and --batch ≥ 1, got {size} and {batch}")
    print(f"\n{machine_line()}\n\n{a.model} {size[0]}×{size[1]}, batch {batch}: the least peak RSS of an exact "
          f"training step (benchmarks/memory_floor.py)\n\n| part | fp32 GiB | bf16 GiB |\n|---|---:|---:|")
    for name, f32, b16 in floor_rows(a.model, size, batch, a.reference_gib):
        fmt = "{:.2f}×" if "reference" in name else "{:.2f}"
        print(f"| {name} | {fmt.format(f32)} | {fmt.format(b16)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
