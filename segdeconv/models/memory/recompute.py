"""Activation recomputation (``model.recompute``; "activation checkpointing" in Chen et al. 2016,
"Training deep nets with sublinear memory cost"): keep a stage's input, run it again in backward.

``torch.utils.checkpoint`` re-runs the stage's forward; a BatchNorm in training mode would then
update its running statistics a second time (momentum applied twice per step). :func:`recomputed`
restores the statistics after the recomputation, so a recomputed model trains exactly like the
plain one: same outputs, same gradients, same running statistics. Dropout inside a recomputed
stage (Bayesian SegNet) draws the same masks again: ``torch.utils.checkpoint`` restores the RNG
state before recomputing (``preserve_rng_state``, its default; ``tests/test_bayesian.py``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from segdeconv.errors import ConfigError


@contextmanager
def kept_bn_stats(module: nn.Module) -> Iterator[None]:
    """Restore every BatchNorm buffer (running mean/var, counter) of ``module`` on exit."""
    bufs = [b for m in module.modules() if isinstance(m, _BatchNorm) for b in m.buffers()]
    saved = [b.detach().clone() for b in bufs]
    try:
        yield
    finally:  # also when checkpoint's early stop ends the recomputation with an exception
        with torch.no_grad():
            for b, v in zip(bufs, saved):
                b.copy_(v)


def recomputed(module: nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` (which runs ``module``) with its activations recomputed in backward.

    Only when autograd records (training); in ``no_grad``/inference it is a plain call. The first
    call is the real forward; the second, made by autograd during backward, keeps BatchNorm
    statistics as they were.
    """
    if not torch.is_grad_enabled():
        return fn(*args)
    calls = 0

    def run(*a: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return fn(*a)
        with kept_bn_stats(module):
            return fn(*a)

    return checkpoint(run, *args, use_reentrant=False)


def stage_is_recomputed(setting: Union[bool, int], depth: int, key: str = "model.recompute") -> bool:
    """``model.recompute``: ``True`` = every stage, ``N`` = the N shallowest (depth 0 = full resolution,
    where activations are largest and convolutions cheapest to recompute per byte kept), ``False``/0 = none."""
    if isinstance(setting, bool):
        return setting
    if not isinstance(setting, int) or setting < 0:
        raise ConfigError(f"{key}={setting!r}: use false, true, or a number of stages ≥ 0")
    return depth < setting
