"""Feature evolution during training (Zeiler & Fergus 2014, §4.1, Fig. 4).

Z&F show, for a few units of each layer, the strongest activation over the training set projected
to pixel space at several epochs: lower layers converge within a few epochs, upper ones only after
many. Here the same units of one encoder layer are searched and projected
(:func:`~segdeconv.visualize.topk.search_topk`, :func:`~segdeconv.visualize.topk.collect_tiles`)
in each of a run's step checkpoints (``<run dir>/checkpoints/step_XXXXXXX.pt``); the figure has
one row per unit and one column per checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from matplotlib.figure import Figure
from torch import Tensor

from segdeconv.engine.checkpoint import step_files
from segdeconv.errors import ConfigError
from segdeconv.trained import load_trained
from segdeconv.visualize.grid import tile_grid
from segdeconv.visualize.projection import Projector
from segdeconv.visualize.render import to_display
from segdeconv.visualize.topk import collect_tiles, search_topk

PathLike = Union[str, Path]


@dataclass
class Evolution:
    """Top-``k`` projections of ``units`` of ``layer`` in each checkpoint, oldest first.

    ``projections`` and ``patches`` are ``(U, N, k, 3, h, w)`` receptive-field tiles (U units,
    N checkpoints); ``values`` ``(U, N, k)`` the activations (``-inf``: fewer than k images).
    """

    layer: str
    units: list[int]
    steps: list[int]
    paths: list[Path]
    projections: Tensor
    patches: Tensor
    values: Tensor


def checkpoint_paths(source: Union[PathLike, Sequence[PathLike]]) -> list[Path]:
    """Checkpoints to compare: a list of files as given, or a run dir (or its ``checkpoints/``)'s
    step checkpoints, oldest first."""
    if isinstance(source, (str, Path)):
        folder = Path(source).expanduser()
        folder = folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder
        if not folder.is_dir():
            raise ConfigError(f"{source} is not a run dir or a checkpoints folder; pass <run dir> or a list of .pt files")
        paths = [p for _, p in step_files(folder)]
        if not paths:
            raise ConfigError(f"{folder} holds no step checkpoints (step_XXXXXXX.pt); train with "
                              f"trainer.keep_last>=2 or pass a list of checkpoint files")
        return paths
    paths = [Path(p).expanduser() for p in source]
    if not paths:
        raise ConfigError("no checkpoints given; pass a run dir or a list of .pt files")
    return paths


def feature_evolution(checkpoints: Union[PathLike, Sequence[PathLike]], layer: str, units: Sequence[int],
                      images: Any, k: int = 1, method: str = "deconvnet", device: str = "cpu") -> Evolution:
    """Z&F Fig. 4: the top-``k`` activations of ``units`` of ``layer`` over ``images`` (a dataset
    or a list of normalized ``(3, H, W)`` tensors), projected with ``method``, in every checkpoint."""
    paths = checkpoint_paths(checkpoints)
    steps, projections, patches, values = [], [], [], []
    for path in paths:
        trained = load_trained(path, device)
        proj = Projector.from_model(trained.model)
        tables = search_topk(proj, images, [layer], list(units), k, show_progress=False)
        tiles = collect_tiles(proj, images, tables, method, show_progress=False)[layer]
        steps.append(trained.step)
        projections.append(tiles.projections[method])  # (U, k, 3, h, w)
        patches.append(tiles.patches)
        values.append(tiles.table.values)  # (U, k)
    return Evolution(layer, list(units), steps, paths, torch.stack(projections, 1),
                     torch.stack(patches, 1), torch.stack(values, 1))


def evolution_figure(evo: Evolution, with_patches: bool = True) -> Figure:
    """Rows = units, columns = checkpoints: each unit's strongest projection (grey = 0), and the
    image patch of the last checkpoint's winner at the end of the row (``with_patches``)."""
    shown = to_display(evo.projections[:, :, 0])  # (U, N, 3, h, w)
    tiles = [[shown[u, n] if torch.isfinite(evo.values[u, n, 0]) else None for n in range(len(evo.steps))]
             + ([evo.patches[u, -1, 0]] if with_patches else []) for u in range(len(evo.units))]
    cols = [f"step {s}" for s in evo.steps] + (["image patch\n(last)"] if with_patches else [])
    return tile_grid(tiles, [f"{evo.layer}\nunit {u}" for u in evo.units], cols,
                     f"Feature evolution of {evo.layer} (Zeiler & Fergus 2014, Fig. 4): top-1 projection per checkpoint")


__all__ = ["Evolution", "checkpoint_paths", "feature_evolution", "evolution_figure"]
