"""The least peak memory an *exact* training step can have, against issue #18's memory targets.

    python benchmarks/memory_floor.py --reference-gib 4.33                    # SegNet 360×480, batch 4
    python benchmarks/memory_floor.py --model deconvnet --reference-gib 5.65  # DeconvNet 224×224, batch 8

An exact conv–BN–ReLU backward needs one stored map of each convolution's output size: BatchNorm's
input gradient reads the normalised input x̂ at *every* position (also where ReLU cut the gradient to
zero), and ReLU is not invertible, so x̂ cannot be rebuilt from anything smaller (InPlace-ABN, Rota Bulò
et al. 2018, has to switch to leaky ReLU for that). The lean graph (``model.lean``) keeps exactly that
one map. Going below it means recomputing convolutions (``model.checkpoint``) or storing lossy maps.

Memory peaks at one of two moments of a step, and each has parts no exact graph avoids:
A — start of backward: what ``python train.py`` imports plus the optimizer (measured in a fresh process),
    fp32 weights, the
    optimizer state, autocast's bf16 weight copies (kept by the convolutions for backward), every stored
    convolution output and the first gradient map (the largest output's size);
B — end of backward: the import, weights, optimizer state and a gradient for every weight.
The floor max(A, B) is printed beside the target (ratio × the reference's peak RSS from bench_train.py,
measured in its own run: ``--reference-gib``). Allocator slack, oneDNN's reorders and BatchNorm's
backward temporaries come on top.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from bench_train import SETTINGS, train_overrides  # noqa: E402
from common import PY, REPO, compose, machine_line  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

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


def conv_outputs(model, size: tuple[int, int]) -> tuple[int, int]:
    """(values in all conv / transposed-conv outputs, values in the largest one) for one image."""
    import torch

    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel())) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, *size))
    for h in hooks:
        h.remove()
    return sum(sizes), max(sizes)


def floor_rows(model_name: str, size: tuple[int, int], batch: int, ref_gib: float | None) -> list[tuple]:
    """``(part, fp32 GiB, bf16 GiB)`` rows of the table."""
    overrides = [*train_overrides(model_name, batch), f"dataset.image_size=[{size[0]},{size[1]}]"]
    group = next((o.split("=", 1)[1] for o in overrides if o.startswith("optimizer=")), "adamw")  # train.yaml's
    opt = OmegaConf.load(REPO / "conf" / "optimizer" / f"{group}.yaml")._target_
    base = import_floor_gib(opt)

    import torch

    from segdeconv.config import model_from_config

    cfg = compose([overrides])[0]
    if isinstance(cfg, Exception):
        raise cfg
    assert cfg.optimizer._target_ == opt, (cfg.optimizer._target_, opt)
    model = model_from_config(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    cast = sum(p.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d,
                                                                  torch.nn.Linear)) for p in m.parameters(False))
    states = 2 if opt.endswith("AdamW") or opt.endswith("Adam") else int(bool(cfg.optimizer.get("momentum")))
    stored, largest = conv_outputs(model, size)
    rows = [("imports of train.py + optimizer (measured)", base, base),
            (f"weights ({params / 1e6:.2f} M, fp32)", params * 4 / GIB, params * 4 / GIB),
            (f"optimizer state ({opt.rsplit('.', 1)[1]}: {states} × fp32)", states * params * 4 / GIB,
             states * params * 4 / GIB),
            ("autocast's bf16 weight copies", 0.0, cast * 2 / GIB),
            (f"stored conv outputs ({stored / 1e6:.1f} M values/image × {batch})", stored * batch * 4 / GIB,
             stored * batch * 2 / GIB),
            ("first gradient map (largest output)", largest * batch * 4 / GIB, largest * batch * 2 / GIB)]
    a = tuple(sum(r[i] for r in rows) for i in (1, 2))
    b = tuple(base + params * 4 * (1 + states + 1) / GIB for _ in (1, 2))  # + fp32 gradients
    rows += [("**A: start of backward**", *a), ("**B: end of backward (+ fp32 gradients)**", *b),
             ("**floor = max(A, B)**", max(a[0], b[0]), max(a[1], b[1]))]
    if ref_gib:
        t = TARGETS[model_name]
        rows += [("floor / reference", rows[-1][1] / ref_gib, rows[-1][2] / ref_gib),
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
