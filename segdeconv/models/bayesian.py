"""Bayesian SegNet (Kendall, Badrinarayanan & Cipolla, "Bayesian SegNet", 2015): Monte-Carlo dropout.

Training is SegNet with ``nn.Dropout(0.5)`` after the central encoder and decoder stages
(``SegNet(dropout=0.5)``, ``conf/model/bayesian_segnet*.yaml``); ``model.eval()`` turns it off like
any dropout. At test time the original keeps sampling dropout masks (``sample_weights_test: true``
in ``bayesian_segnet_inference.prototxt``) while BatchNorm uses its running statistics
(``bn_mode: INFERENCE``), runs a batch of T copies of the image and takes the mean softmax as the
prediction and its variance as the uncertainty (``Scripts/test_bayesian_segnet.py``: ``np.mean`` /
``np.var`` over the batch; §3.1 of the paper). :func:`mc_dropout` sets up exactly those modes and
:func:`mc_predict` draws the samples.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from segdeconv.errors import ConfigError


def dropout_plan(p: float, stages: Optional[int], num_pools: int) -> int:
    """How many deepest encoder/decoder stages get dropout: ``stages``, or by default all but the two
    outermost ("central" units: 3 of 5 for VGG16, 2 of 4 for SegNet-Basic, as both prototxts); 0 if p=0."""
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"model.dropout={p} must be in [0, 1) (Bayesian SegNet: 0.5; 0 = no dropout)")
    n = max(0, num_pools - 2) if stages is None else stages
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= num_pools:
        raise ConfigError(
            f"model.dropout_stages={stages!r} must be an integer in 0..{num_pools} (or null: {num_pools - 2})"
        )
    return n if p > 0 else 0


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """Every dropout module of ``model``, in registration order."""
    return [m for m in model.modules() if isinstance(m, _DropoutNd)]


@contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Monte-Carlo dropout mode: only the dropout modules train, everything else (BatchNorm) is in
    eval mode; every module's previous mode is restored on exit, also after an exception."""
    drops = dropout_layers(model)
    if not drops:
        raise ConfigError(
            f"{type(model).__name__} has no dropout layers, so Monte-Carlo samples would all be equal; "
            f"train a Bayesian model (model=bayesian_segnet or bayesian_segnet_basic, i.e. model.dropout=0.5)"
        )
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    for d in drops:
        d.train()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def mc_predict(model: nn.Module, x: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """``(mean, variance)`` of the softmax over ``samples`` dropout draws, each ``(B, C, H, W)``.

    Samples run one after another (memory of one forward pass); the variance is the population
    variance over the samples, as ``np.var`` in the original script.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"Monte-Carlo samples={samples!r} must be an integer ≥ 1 (the original used 10–50)")
    total: Optional[Tensor] = None
    total_sq: Optional[Tensor] = None
    with mc_dropout(model):
        for _ in range(samples):
            p = model(x).float().softmax(dim=1)  # (B, C, H, W)
            total = p if total is None else total.add_(p)
            total_sq = p * p if total_sq is None else total_sq.addcmul_(p, p)
    assert total is not None and total_sq is not None  # samples >= 1 (checked above): the loop ran
    mean = total / samples
    return mean, (total_sq / samples - mean * mean).clamp_(min=0.0)
