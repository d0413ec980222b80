"""What the loss costs in a CPU training step: the CPU recipe's ¼-width SegNet, one optimizer step with
cross-entropy alone, + Lovász-Softmax by the exact sort, + Lovász with binned errors (``bins``), at the two
resolutions of the progressive recipe (issue #31).

    python benchmarks/bench_loss.py                       # 176×240 batch 8 and 352×480 batch 4
    python benchmarks/bench_loss.py --rounds 5 --bins 1024

Rounds alternate between configs so machine noise hits all alike; the best round counts. Prints the
loss's own forward+backward time beside the whole step's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from segdeconv.losses import CrossEntropy, LovaszSoftmax, WeightedSum  # noqa: E402
from segdeconv.models import SegNet, VGGEncoder  # noqa: E402
from segdeconv.models.memory.policy import MemoryPolicy, apply_policy  # noqa: E402

SIZES = {"176x240": (8, 176, 240), "352x480": (4, 352, 480)}


def losses(bins: int) -> dict[str, torch.nn.Module]:
    return {"ce": CrossEntropy(),
            "ce+lovasz (sort)": WeightedSum([CrossEntropy, LovaszSoftmax], [1.0, 1.0]),
            f"ce+lovasz (bins={bins})": WeightedSum([CrossEntropy, lambda **kw: LovaszSoftmax(bins=bins, **kw)], [1.0, 1.0])}


def step_times(model: torch.nn.Module, crits: dict, x: torch.Tensor, y: torch.Tensor, rounds: int) -> dict:
    """{name: (best step s, best loss fwd+bwd s)}: loss timed on the logits of the step's own forward."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    best = {name: [float("inf"), float("inf")] for name in crits}
    for r in range(rounds + 1):  # round 0: warm-up
        for name, crit in crits.items():
            t0 = time.perf_counter()
            logits = model(x)
            t1 = time.perf_counter()
            loss = crit(logits, y)
            grad, = torch.autograd.grad(loss, logits, retain_graph=True)
            t2 = time.perf_counter()
            logits.backward(grad)
            opt.step()
            opt.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            if r:
                best[name][0] = min(best[name][0], t3 - t0)
                best[name][1] = min(best[name][1], t2 - t1)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bins", type=int, default=4096)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = ap.parse_args()
    print(machine_line())
    print("command: python benchmarks/bench_loss.py " + " ".join(sys.argv[1:]))
    print("| size | batch | loss | step s | img/s | loss fwd+bwd s | loss share |")
    print("|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for size in args.sizes:
        b, h, w = SIZES[size]
        model = apply_policy(SegNet(11, VGGEncoder(width=0.25)), MemoryPolicy()).train()  # the trainer's default: lean
        x, y = torch.randn(b, 3, h, w), torch.randint(0, 11, (b, h, w))
        for name, (step, loss) in step_times(model, losses(args.bins), x, y, args.rounds).items():
            print(f"| {size} | {b} | {name} | {step:.2f} | {b / step:.2f} | {loss:.2f} | {100 * loss / step:.0f} % |")


if __name__ == "__main__":
    main()
