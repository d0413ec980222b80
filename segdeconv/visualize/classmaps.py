"""Everything the class maps and the explorer show for one image (Zeiler & Fergus 2014, §2.1 and §4.2).

:func:`image_maps` runs, for one image: the prediction (mean softmax; for a model with dropout, the
Monte-Carlo mean and its entropy as the uncertainty, Kendall et al. 2015 §3.1), then for each chosen
class its evidence through the whole network (:func:`~segdeconv.visualize.evidence.class_evidence`,
Z&F §2.1) and its occlusion map (:func:`~segdeconv.visualize.occlusion.occlusion_map`, Z&F §4.2), and
the per-pixel evidence at the centres of a coarse ``grid × grid`` layout of cells (:func:`grid_cells`):
a pixel's evidence is one backward pass, so the explorer precomputes it there and shows the nearest.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from segdeconv.engine.checkpoint import unwrap
from segdeconv.errors import ConfigError
from segdeconv.inference.montecarlo import MCDropout
from segdeconv.models.bayesian import dropout_layers
from segdeconv.visualize.evidence import Region, as_batch, class_evidence
from segdeconv.visualize.occlusion import occlusion_maps

log = logging.getLogger("segdeconv")
DEFAULT_MC_SAMPLES = 8


@dataclass(frozen=True)
class MapSettings:
    """What :func:`image_maps` computes. ``region=None``: each class's predicted mask; ``grid=0``: no
    per-pixel cells; ``mc_samples``: Monte-Carlo passes (None: :data:`DEFAULT_MC_SAMPLES` for a model
    with dropout, one deterministic pass otherwise)."""

    method: str = "deconvnet"
    region: Region = None
    evidence: bool = True
    occlusion: bool = True
    patch: int = 32
    stride: int = 16
    batch_size: int = 16
    input_size: Optional[tuple[int, int]] = None  # occlusion at the model's training size (None: the image's)
    grid: int = 0
    mc_samples: Optional[int] = None


@dataclass
class Cell:
    """The evidence of one output pixel ``(y, x)`` for its predicted class ``label``."""

    y: int
    x: int
    label: int
    evidence: Tensor  # (3, H, W)


@dataclass
class ImageMaps:
    """One image's prediction, class maps and per-pixel cells (maps are CPU float tensors)."""

    name: str
    shown: Tensor  # (3, H, W) in [0, 1]
    probs: Tensor  # (C, H, W) mean softmax
    uncertainty: Optional[Tensor]  # (H, W) entropy of the MC mean / log C in [0, 1]; None: deterministic
    mc_samples: int
    evidence: dict[int, Tensor] = field(default_factory=dict)  # class → (3, H, W)
    occlusion: dict[int, Tensor] = field(default_factory=dict)  # class → (H, W)
    cells: list[Cell] = field(default_factory=list)
    grid: int = 0

    @property
    def label(self) -> Tensor:
        return self.probs.argmax(0)  # (H, W)


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode within; every module's mode restored after."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        yield net
    finally:
        for m, mode in modes:
            m.training = mode


def mc_passes(model: nn.Module, mc_samples: Optional[int]) -> int:
    """Monte-Carlo passes for ``model``: ``mc_samples``, or the default for a model with dropout, else 1."""
    has_dropout = bool(dropout_layers(unwrap(model)))
    if mc_samples is not None and mc_samples > 1 and not has_dropout:
        raise ConfigError(f"mc_samples={mc_samples} needs a model with dropout (Bayesian SegNet), but "
                          f"{type(unwrap(model)).__name__} has none; drop mc_samples")
    return mc_samples if mc_samples is not None else (DEFAULT_MC_SAMPLES if has_dropout else 1)


def predict(model: nn.Module, image: Tensor, samples: int, seed: int = 0) -> tuple[Tensor, Optional[Tensor]]:
    """``(probs (C, H, W), uncertainty (H, W) or None)``: one eval pass, or ``samples`` MC dropout passes
    whose mean's entropy (over log C, so 0 = certain and 1 = uniform) is the uncertainty."""
    net = unwrap(model)
    p = next(net.parameters(), None)
    x = as_batch(image).to(p.device if p is not None else image.device, torch.float32)
    with torch.inference_mode():
        if samples <= 1:
            with eval_mode(net):
                return net(x)[0].float().softmax(0).cpu(), None
        mean = MCDropout(samples, seed).stats(net, x)[0][0].cpu()  # (C, H, W)
    entropy = -(mean * mean.clamp_min(1e-12).log()).sum(0)
    return mean, (entropy / math.log(max(2, mean.shape[0]))).clamp(0, 1)


def cell_centres(size: tuple[int, int], grid: int) -> list[tuple[int, int]]:
    """The centre pixel ``(y, x)`` of each of ``grid × grid`` cells, row-major (the explorer's lookup)."""
    h, w = size
    return [(min(h - 1, int((r + 0.5) * h / grid)), min(w - 1, int((c + 0.5) * w / grid)))
            for r in range(grid) for c in range(grid)]


def grid_cells(model: nn.Module, image: Tensor, label: Tensor, grid: int, method: str) -> list[Cell]:
    """Per-pixel evidence (Z&F §2.1, region = one pixel, its predicted class) at every cell centre."""
    cells = []
    for y, x in cell_centres((int(label.shape[0]), int(label.shape[1])), grid):
        c = int(label[y, x])
        cells.append(Cell(y, x, c, class_evidence(model, image, c, (y, x), method).cpu()))
    return cells


def chosen_classes(classes: Optional[Sequence[int]], label: Tensor, region: Region) -> list[int]:
    """``classes``, or (None) every predicted class, largest area first; with ``region=None`` (the class's
    mask) only the classes predicted somewhere are kept."""
    counts = torch.bincount(label.flatten(), minlength=1)
    present = [int(c) for c in counts.argsort(descending=True) if counts[c] > 0]
    if classes is None:
        return present
    return [int(c) for c in classes if region is not None or int(c) in present]


def image_maps(model: nn.Module, image: Tensor, shown: Tensor, name: str, classes: Optional[Sequence[int]],
               s: MapSettings) -> ImageMaps:
    """Prediction, uncertainty, evidence and occlusion of ``classes`` and the per-pixel cells of ``image``
    ``(3, H, W)`` (normalized as the model sees it; ``shown``: the same image in [0, 1])."""
    samples = mc_passes(model, s.mc_samples)
    probs, uncertainty = predict(model, image, samples)
    maps = ImageMaps(name, shown.cpu(), probs, uncertainty, samples, grid=s.grid)
    chosen = chosen_classes(classes, maps.label, s.region)
    if s.evidence:
        maps.evidence = {c: class_evidence(model, image, c, s.region, s.method).cpu() for c in chosen}
    if s.occlusion and chosen:
        occ = occlusion_maps(model, image, chosen, s.region, s.patch, s.stride, s.batch_size, input_size=s.input_size)
        maps.occlusion = dict(zip(chosen, occ))
    if classes is not None and len(maps.evidence or maps.occlusion) < len(classes):
        log.info("%s: classes not predicted in the image have no maps (evidence.region=mask)", name)
    if s.grid:
        maps.cells = grid_cells(model, image, maps.label, s.grid, s.method)
    return maps


__all__ = ["MapSettings", "Cell", "ImageMaps", "image_maps", "grid_cells", "cell_centres",
           "predict", "mc_passes"]
