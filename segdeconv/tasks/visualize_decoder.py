"""``visualize``'s decoder switch maps and feature evolution (issue #33 item 3) from the config.

``decoder=true``: ``decoder_switch_maps.png`` (SegNet §3: per decoder stage, where unpooling puts its
values) for the ``images`` chosen for the class maps. ``evolution.checkpoints=<run dir>`` (or a list of
``.pt`` files): ``evolution.png`` (Zeiler & Fergus 2014 Fig. 4): the top-1 projection of ``channels``
of ``evolution.layer`` (null: the first of ``layers``) in every step checkpoint, over the split's first
``limit`` images (null: 50).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig
from torch.utils.data import Dataset, Subset

from segdeconv.data.image import IMAGENET_MEAN, IMAGENET_STD, denormalize
from segdeconv.data.sampler import dataset_len
from segdeconv.engine.writer import write_figure
from segdeconv.trained import Trained
from segdeconv.visualize.evolution import evolution_figure, feature_evolution
from segdeconv.visualize.figures import switch_figure


def _indices(cfg: DictConfig, n: int) -> list[int]:
    images = cfg.get("images", 4)
    return [int(i) for i in images] if isinstance(images, (list, ListConfig)) else list(range(min(int(images), n)))


def decoder_and_evolution(cfg: DictConfig, trained: Trained, dataset: Dataset, out: Path, layers: list[str]) -> list[str]:
    """Write what ``decoder`` and ``evolution.checkpoints`` ask for into ``out``; returns the file names."""
    files: list[str] = []
    if cfg.get("decoder"):
        data: Any = dataset
        xs = [data[i][0] for i in _indices(cfg, dataset_len(dataset))]
        if trained.image_size:
            xs = [F.interpolate(x[None], size=trained.image_size, mode="bilinear", align_corners=False)[0] for x in xs]
        mean, std = getattr(dataset, "mean", IMAGENET_MEAN), getattr(dataset, "std", IMAGENET_STD)
        shown = [denormalize(x, mean, std).clamp(0, 1) for x in xs]
        write_figure(out / "decoder_switch_maps.png", switch_figure(trained, xs, shown), "figure", dpi=80)
        files.append("decoder_switch_maps.png")
    evo: Any = cfg.get("evolution") or {}
    if evo.get("checkpoints"):
        source = evo["checkpoints"] if isinstance(evo["checkpoints"], str) else list(evo["checkpoints"])
        layer = evo.get("layer") or (layers[0] if layers else "conv5_3")
        n = min(int(cfg.get("limit") or 50), dataset_len(dataset))
        result = feature_evolution(source, layer, list(cfg.channels), Subset(dataset, range(n)), 1,
                                   str(cfg.method if isinstance(cfg.method, str) else cfg.method[0]), "cpu")
        write_figure(out / "evolution.png", evolution_figure(result), "figure", dpi=80)
        files.append("evolution.png")
    return files
