"""Training throughput and peak memory: segdeconv (end to end, as a user runs it) vs a plain reference.

    python benchmarks/bench_train.py                       # SegNet 360×480 batch 4 (the perf issue's setting)
    python benchmarks/bench_train.py --model deconvnet     # DeconvNet 224×224 batch 8
    python benchmarks/bench_train.py --malloc jemalloc     # both sides under LD_PRELOAD=libjemalloc.so.2

Ours: ``python train.py model=… dataset=synthetic … trainer.max_steps=N`` for two N; img/s is
(N₂−N₁)·batch / (t₂−t₁), so start-up and validation cancel; CPU s/img likewise from the processes'
CPU time (user + system, all threads), which other load on a shared machine disturbs far less than
wall time. Reference (benchmarks/reference.py: MaxPool2d/MaxUnpool2d int64, fp32, eager, NCHW,
SGD): timed in-process after one warm-up step. Peak memory is each process's max RSS. GFLOP/s
counts a train step as 3× the forward FLOPs (forward + two backward matmuls per conv). Prints one
markdown table (machine line and load average first), then checks that compact switches give
bit-identical logits and gradients to int64 MaxPool2d/MaxUnpool2d ones.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MALLOCS, PY, Measured, load_line, machine_line, malloc_env, run_measured  # noqa: E402

# Ours trains on the synthetic data's 5 classes; the SegNet reference keeps the paper's 11 (its 3×3
# classifier is 0.5% of the FLOPs, in the reference's disfavour), DeconvNet's uses 5 (1×1: < 0.1%).
SETTINGS = {"segnet": dict(size=(360, 480), batch=4, classes=11), "deconvnet": dict(size=(224, 224), batch=8, classes=5)}
CONFIGS = {  # name -> extra train.py overrides
    "segdeconv default": [],
    "segdeconv plain graph": ["model.lean=false"],
    "segdeconv fp32 plain graph": ["trainer.precision=fp32", "model.lean=false"],
    "segdeconv NCHW": ["trainer.channels_last=false"],
    "segdeconv fp32": ["trainer.precision=fp32"],
    "segdeconv channels_last": ["trainer.channels_last=true"],
    "segdeconv int64 switches": ["model.encoder.compact_switches=false"],
    "segdeconv + recompute every stage": ["model.recompute=true"],
    "segdeconv + recompute 1 shallowest stage": ["model.recompute=1"],
    "segdeconv + recompute 2 shallowest stages": ["model.recompute=2"],
    "segdeconv + recompute 3 shallowest stages": ["model.recompute=3"],
}


def reference_worker(model: str, steps: int) -> None:
    """Child process: train the reference for 1 + steps steps; print img/s and CPU s/img of the timed steps."""
    import torch
    from reference import ref_model

    s = SETTINGS[model]
    m = ref_model(model, s["classes"])
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(s["batch"], 3, *s["size"])
    y = torch.randint(0, s["classes"], (s["batch"], *s["size"]))
    times, cpu = [], []
    for _ in range(steps + 1):
        t, c = time.perf_counter(), time.process_time()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(json.dumps({"img_s": s["batch"] * steps / sum(times[1:]), "cpu_img": sum(cpu[1:]) / (s["batch"] * steps)}))


def train_overrides(model: str, images: int) -> list[str]:
    """The train.py overrides of the benchmark setting: ``model`` on synthetic data at its SETTINGS size
    and batch, ``images`` training images, one validation image (also used by gpu_check.py)."""
    s = SETTINGS[model]
    out = [f"model={model}", "dataset=synthetic", f"dataset.image_size=[{s['size'][0]},{s['size'][1]}]",
           f"dataset.batch_size={s['batch']}", f"dataset.train.length={images}", "dataset.val.length=1",
           "trainer.progress=false", "loss=ce"]  # the reference's loss (the default is ce_lovasz)
    if model == "deconvnet":  # the reference's optimizer (SGD, as voc_deconvnet): with 252M parameters
        out.append("optimizer=sgd")  # AdamW's second state alone would add 1 GB
    return out


def ours_runs(model: str, extra: list[str], steps: tuple[int, int], env: dict | None, root: Path) -> list[Measured]:
    """train.py with ``extra`` overrides once per step count, each in its own run directory ``root/<steps>``
    (one ``hydra.run.dir`` for both would have the second refused as overwriting the first run's record)."""
    s = SETTINGS[model]
    base = [PY, "train.py", *train_overrides(model, s["batch"] * steps[1]), *extra]
    return [run_measured(base + [f"trainer.max_steps={n}", "trainer.max_epochs=1", f"hydra.run.dir={root}/{n}"], env)
            for n in steps]


def per_image(images: int, runs: list[Measured]) -> tuple[float, float, float]:
    """(img/s, CPU s/img, peak RSS GiB) of ``images`` more images in ``runs[1]`` than in ``runs[0]``.

    Raises ValueError when the longer run took no more wall or CPU time: start-up noise then exceeds the
    timed steps, and the difference would be a meaningless (negative or infinite) rate."""
    wall, cpu = runs[1].wall_s - runs[0].wall_s, runs[1].cpu_s - runs[0].cpu_s
    if wall <= 0 or cpu <= 0:
        raise ValueError(f"the longer run took no more time than the shorter one (wall {wall:+.2f} s, CPU "
                         f"{cpu:+.2f} s): start-up noise exceeds the timed steps; widen --steps")
    return images / wall, cpu / images, max(r.rss_gib for r in runs)


def ours(model: str, extra: list[str], steps: tuple[int, int], env: dict | None) -> tuple[float, float, float]:
    """(img/s, CPU s/img, peak RSS GiB) of train.py with ``extra`` overrides, from two step counts."""
    with tempfile.TemporaryDirectory(prefix="segdeconv_bench_") as tmp:
        runs = ours_runs(model, extra, steps, env, Path(tmp))
    return per_image(SETTINGS[model]["batch"] * (steps[1] - steps[0]), runs)


def train_gflop_per_image(model: str) -> float:
    """3 × forward GFLOP of one image at the benchmark size (forward + input and weight gradients)."""
    import torch
    from reference import ref_model

    from segdeconv.models.flops import forward_gflops

    s = SETTINGS[model]
    return 3 * forward_gflops(ref_model(model, s["classes"]).eval(), torch.randn(1, 3, *s["size"]))


def switches_bit_exact(model: str) -> float:
    """max |Δ| over logits and every gradient, compact vs int64 switches (same weights, fp32, odd size)."""
    import torch

    from segdeconv.models import DeconvNet, SegNet, VGGEncoder

    size = (237, 229) if model == "deconvnet" else (93, 125)
    x, out = torch.randn(2, 3, *size), []
    for compact in (False, True):
        torch.manual_seed(0)
        enc = VGGEncoder(width=0.25, compact_switches=compact)
        m = SegNet(11, enc) if model == "segnet" else DeconvNet(21, enc, fc_channels=64)
        y = m(x)
        y.square().mean().backward()
        out.append([y.detach()] + [p.grad for p in m.parameters()])
    return max((a - b).abs().max().item() for a, b in zip(*out))


def gemm_ceiling_gflops(n: int = 2048, reps: int = 10) -> float:
    """fp32 GFLOP/s of a large square matmul (best of ``reps``): about the most convolutions can reach here."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(reps + 1):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="segnet", choices=sorted(SETTINGS))
    ap.add_argument("--steps", type=int, nargs=2, default=(2, 6))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--malloc", default="glibc", choices=sorted(MALLOCS), help="allocator for every process (LD_PRELOAD)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not 1 <= a.steps[0] < a.steps[1]:
        ap.error(f"--steps {a.steps[0]} {a.steps[1]}: need 1 <= N1 < N2 (img/s is the difference of the two runs)")
    unknown = [n for n in a.configs.split(",") if n not in CONFIGS]
    if unknown:
        ap.error(f"--configs: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(CONFIGS)}")
    if a.worker:
        return reference_worker(a.model, a.steps[1] - a.steps[0])
    env = malloc_env(a.malloc)
    run = run_measured([PY, __file__, "--worker", "--model", a.model, "--steps", *map(str, a.steps)], env)
    got = json.loads(run.out.strip().splitlines()[-1])
    ref, ref_cpu, ref_rss = got["img_s"], got["cpu_img"], run.rss_gib
    s = SETTINGS[a.model]
    print(f"\n{machine_line()} · malloc {a.malloc} · {load_line()}\n\n"
          f"{a.model} {s['size'][0]}×{s['size'][1]}, batch {s['batch']}, full train step\n")
    gf = train_gflop_per_image(a.model)
    print("| config | train img/s | vs reference | CPU s/img | vs reference | GFLOP/s | peak RSS GiB | vs reference |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| reference (MaxUnpool2d int64, fp32, eager, NCHW) | {ref:.3f} | 1.00× | {ref_cpu:.2f} | 1.00× | "
          f"{ref * gf:.0f} | {ref_rss:.2f} | 1.00× |")
    for name in a.configs.split(","):
        try:
            img_s, cpu, rss = ours(a.model, CONFIGS[name], tuple(a.steps), env)
        except ValueError as e:
            print(f"bench_train.py: {name}: {e}", file=sys.stderr)
            sys.exit(2)
        print(f"| {name} | {img_s:.3f} | {img_s / ref:.2f}× | {cpu:.2f} | {ref_cpu / cpu:.2f}× | {img_s * gf:.0f} | "
              f"{rss:.2f} | {rss / ref_rss:.2f}× |", flush=True)
    print(f"\n{load_line()} at the end.")
    print(f"\n{gf:.0f} GFLOP per training image. Compact vs int64 switches, max |Δ| over logits and all "
          f"gradients (fp32): {switches_bit_exact(a.model):.1e}. fp32 GEMM ceiling on this CPU (2048³ matmul): "
          f"{gemm_ceiling_gflops():.0f} GFLOP/s.")


if __name__ == "__main__":
    main()
