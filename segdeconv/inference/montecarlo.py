"""Monte-Carlo dropout inference (Bayesian SegNet, Kendall, Badrinarayanan & Cipolla 2015, §3.1).

:class:`MCDropout` is a ``PredictFn`` (:mod:`segdeconv.inference.strategies`) shared by the
:class:`~segdeconv.inference.Predictor` and ``evaluate.py``: ``samples`` stochastic passes with dropout
on and BatchNorm in eval mode (:func:`segdeconv.models.bayesian.mc_predict`), seeded per image;
:meth:`MCDropout.stats` gives the mean softmax (the prediction) and the samples' variance (the
uncertainty). :func:`uncertainty_image` turns a variance or entropy map into an 8-bit PNG on a fixed scale.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from segdeconv.errors import ConfigError, UserError
from segdeconv.models.bayesian import dropout_layers, mc_predict

UNCERTAINTY_MEASURES = ("entropy", "variance")


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """``torch.manual_seed(seed)`` for the CPU and ``device``'s generator inside a fork: the caller's
    RNG streams are restored on exit (``nn.Dropout`` draws from the global generators)."""
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


@dataclass(frozen=True)
class MCDropout:
    """Monte-Carlo dropout: ``samples`` passes with dropout sampling and BatchNorm in eval mode
    (Kendall et al. 2015, §3.1; :func:`segdeconv.models.bayesian.mc_predict`). As a ``PredictFn`` it
    returns ``log(mean softmax)``.

    Every image is sampled on its own from ``manual_seed(seed)`` (:func:`seeded_rng`), so its result
    depends only on the image and ``seed``: not on the batch size, the DDP shard or the caller's RNG.
    Dropout draws its masks in memory order, so a channels_last model (the Predictor's ``optimize``
    on CPU fp32) samples other, equally valid masks than the NCHW one for the same seed.
    """

    samples: int
    seed: int = 0

    def stats(self, model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, variance)`` of the softmax over the samples, each (B, C, H, W) float32."""
        means, variances = [], []
        for x in images.split(1):
            with seeded_rng(self.seed, images.device):
                mean, var = mc_predict(model, x, self.samples)
            means.append(mean)
            variances.append(var)
        return torch.cat(means), torch.cat(variances)

    def __call__(self, model: nn.Module, images: Tensor) -> Tensor:
        return self.stats(model, images)[0].clamp_min_(1e-12).log_()


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def mc_predict_fn(samples: Any, seed: Any = 0) -> MCDropout:
    """:class:`MCDropout` for ``mc_samples`` / ``mc_seed`` (ConfigError naming the key if invalid)."""
    if not _is_int(samples, 1):
        raise ConfigError(f"mc_samples={samples!r} must be an integer >= 1 (Monte-Carlo dropout passes per image; "
                          f"Bayesian SegNet used 10-50), or null for one deterministic pass")
    if not _is_int(seed, 0):
        raise ConfigError(f"mc_seed={seed!r} must be an integer >= 0 (e.g. mc_seed=0)")
    return MCDropout(samples, seed)


def require_dropout(model: nn.Module, where: str) -> None:
    """ConfigError unless ``model`` has dropout layers (Monte-Carlo samples would all be equal)."""
    if not dropout_layers(model):
        raise ConfigError(
            f"mc_samples needs a model with dropout, but {where} is a {type(model).__name__} without dropout "
            f"layers; use a Bayesian SegNet checkpoint (trained with model=bayesian_segnet or "
            f"bayesian_segnet_basic) or drop mc_samples")


def check_measure(measure: str, key: str = "uncertainty_map") -> str:
    """``measure`` if it is one of :data:`UNCERTAINTY_MEASURES`, else a UserError naming ``key``."""
    if measure not in UNCERTAINTY_MEASURES:
        raise UserError(f"{key}={measure!r} is unknown; use one of {list(UNCERTAINTY_MEASURES)}")
    return measure


def uncertainty_image(result: dict[str, np.ndarray], measure: str = "entropy") -> np.ndarray:
    """(H, W) uint8 map of ``result[measure]`` (a :meth:`Predictor.predict_uncertainty` dict) on a fixed,
    image-independent scale, 0 = certain, 255 = the measure's maximum: entropy / log C (a uniform mean),
    or variance / ((C - 1) / C²) (every sample one-hot, the mean uniform); rounded."""
    c = result["mean"].shape[0]
    top = {"entropy": np.log(c), "variance": (c - 1) / c ** 2}[check_measure(measure)]
    scaled = result[measure] / top if c > 1 else np.zeros_like(result[measure])
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)

