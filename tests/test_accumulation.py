"""Gradient accumulation (Caffe's iter_size): k micro-batches = one k× batch, the loss division, the
leftover policy at an epoch's end, and DDP all-reducing once per optimizer step (no_sync)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from segdeconv.engine.step import LoopState, StepConfig, train_batches
from segdeconv.losses import CrossEntropy

CPU = torch.device("cpu")


class Identity:
    def step(self) -> None:
        pass


def tiny_net(seed: int = 0) -> nn.Module:
    """A conv net without BatchNorm, so micro-batching changes nothing but the summation order."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).double()


def data(n: int, batch: int, seed: int = 1, ignored_rows: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (n, 8, 10), generator=g)
    y[0, :ignored_rows] = 255  # ignored pixels in the first image only
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


class Recorder(nn.Module):
    """Cross-entropy that counts its calls and records each micro-batch's value."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.values = CrossEntropy(), []

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.inner(logits.double(), target)
        self.values.append(float(loss.detach()))
        return loss


def one_step(model: nn.Module, batches, accumulate: int, lr: float = 0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses: list[float] = []
    crit = Recorder()
    train_batches(model, batches, crit, opt, Identity(), None, StepConfig(CPU, accumulate=accumulate),
                  LoopState(), lambda loss, n: losses.append(loss) or True)
    return losses, crit.values


def test_k_micro_batches_equal_one_k_times_larger_batch():
    big, small = tiny_net(), tiny_net()
    _, _ = one_step(big, data(8, 8), accumulate=1)
    losses, micro = one_step(small, data(8, 2), accumulate=4)
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert len(losses) == 1 and len(micro) == 4


def test_reported_loss_is_the_mean_of_the_micro_batch_losses():
    losses, micro = one_step(tiny_net(), data(8, 2), accumulate=4)
    assert losses[0] == pytest.approx(sum(micro) / 4, rel=1e-6)  # the loop computes the loss in fp32


def test_with_unequal_valid_pixels_each_micro_batch_is_normalised_on_its_own():
    """As Caffe's iter_size: the step's gradient is the mean of the micro-batch means, not the mean over
    all valid pixels — so a micro-batch with fewer valid pixels weighs its pixels more."""
    batches = data(8, 2, ignored_rows=4)
    acc, manual = tiny_net(), tiny_net()
    one_step(acc, batches, accumulate=4)
    crit, opt = CrossEntropy(), torch.optim.SGD(manual.parameters(), lr=0.1)
    sum(crit(manual(x), y) for x, y in batches).div(4).backward()
    opt.step()
    for a, b in zip(acc.parameters(), manual.parameters()):  # the loop's loss is fp32, the manual one fp64
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    big = tiny_net()
    one_step(big, data(8, 8, ignored_rows=4), accumulate=1)
    assert not all(torch.allclose(a, b, rtol=1e-6, atol=1e-8) for a, b in zip(acc.parameters(), big.parameters()))


def test_leftover_micro_batches_are_never_run():
    """10 micro-batches, accumulate 4: max_batches=8 (what the trainer passes) runs exactly 8."""
    model, crit, state = tiny_net(), Recorder(), LoopState()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_batches(model, data(10, 1), crit, opt, Identity(), None, StepConfig(CPU, accumulate=4), state,
                  max_batches=8)
    assert len(crit.values) == 8 and state.step == 2 and state.batch_in_epoch == 8


def test_trainer_refuses_an_epoch_shorter_than_one_accumulated_step(tmp_path):
    from conftest import TINY, compose_cfg

    from segdeconv.errors import ConfigError
    from segdeconv.tasks.train import build_trainer

    cfg = compose_cfg(TINY + ["trainer.accumulate_grad_batches=8", f"output_dir={tmp_path}"])  # 16 / 4 = 4 batches
    with pytest.raises(ConfigError, match="accumulate_grad_batches=8 needs that many micro-batches"):
        build_trainer(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, accumulate: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = nn.parallel.DistributedDataParallel(tiny_net())
        calls = []

        def count(state, bucket):  # DDP's own all-reduce, counted
            calls.append(1)
            return allreduce_hook(state, bucket)

        model.register_comm_hook(None, count)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_batches(model, data(2 * accumulate, 1, seed=rank), CrossEntropy(), opt, Identity(), None,
                      StepConfig(CPU, accumulate=accumulate), LoopState())
        out[rank] = (len(calls), [p.detach().clone() for p in model.module.parameters()])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_all_reduces_once_per_optimizer_step():
    """2 gloo processes, accumulate 4, 2 steps: the gradient hook fires for 2 steps' buckets, not 8;
    both ranks end with the same weights."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_worker, args=(_free_port(), 4, out), nprocs=2, join=True)
        (calls0, w0), (calls1, w1) = out[0], out[1]
    buckets_per_reduce = 1  # the tiny net fits one 25 MB bucket
    assert calls0 == calls1 == 2 * buckets_per_reduce
    assert all(torch.equal(a, b) for a, b in zip(w0, w1))
