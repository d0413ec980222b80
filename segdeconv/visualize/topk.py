"""Top-k activations over a dataset split and their receptive-field tiles (Zeiler & Fergus 2014, Fig. 2).

:func:`search_topk` streams the split once and keeps, for every chosen (layer, channel), only the
``k`` strongest activations — one per image, at the image's arg-max position — so memory is
``O(layers × channels × k)`` whatever the split's size. :func:`collect_tiles` then revisits only
the winning images: for each winner it projects the activation to pixel space
(:class:`~segdeconv.visualize.projection.Projector`) and cuts the unit's receptive field out of the
projection and out of the image, giving the paper's pairs of projection / image patch.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from segdeconv.data.image import IMAGENET_MEAN, IMAGENET_STD, denormalize
from segdeconv.data.sampler import dataset_len
from segdeconv.engine.logger import progress
from segdeconv.errors import ConfigError
from segdeconv.visualize.geometry import crop, full_box
from segdeconv.visualize.projection import Projector, check_method


@dataclass
class Hit:
    """One winner: slot ``(channel index, rank)`` of a layer's table and where it fired."""

    layer: str
    slot: int  # index into TopK.channels
    rank: int  # 0 = strongest
    channel: int
    image: int  # dataset index
    y: int
    x: int
    value: float


@dataclass
class TopK:
    """The ``k`` strongest activations of some channels of one layer, one per image, best first.

    ``values`` is ``(C, k)`` (``-inf`` marks an empty slot when the split has fewer than ``k``
    images); ``image``, ``y``, ``x`` give the dataset index and map position of each.
    """

    layer: str
    channels: list[int]
    values: Tensor
    image: Tensor
    y: Tensor
    x: Tensor

    @classmethod
    def empty(cls, layer: str, channels: Sequence[int], k: int) -> "TopK":
        c = len(channels)
        idx = torch.full((c, k), -1, dtype=torch.long)
        return cls(layer, list(channels), torch.full((c, k), float("-inf")), idx, idx.clone(), idx.clone())

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    def update(self, fmap: Tensor, first_index: int) -> None:
        """Merge maps ``(B, C_all, h, w)`` of dataset items ``first_index …`` into the table."""
        b, w = fmap.shape[0], fmap.shape[-1]
        v, pos = fmap[:, self.channels].flatten(2).float().max(-1)  # (B, C): each image's best
        img = torch.arange(first_index, first_index + b).view(b, 1).expand_as(v)
        cand = [torch.cat([old, new.t().cpu()], 1) for old, new in
                ((self.values, v), (self.image, img), (self.y, pos // w), (self.x, pos % w))]
        best = cand[0].topk(self.k, dim=1).indices
        self.values, self.image, self.y, self.x = (t.gather(1, best) for t in cand)

    def hits(self) -> Iterator[Hit]:
        """Every filled slot as a :class:`Hit`."""
        for s, c in enumerate(self.channels):
            for r in range(self.k):
                if int(self.image[s, r]) >= 0:
                    yield Hit(self.layer, s, r, c, int(self.image[s, r]), int(self.y[s, r]),
                              int(self.x[s, r]), float(self.values[s, r]))


def first_tensor(item: Any) -> Tensor:
    """The image of a dataset item (``(image, mask)`` pairs or a bare image)."""
    return item[0] if isinstance(item, (tuple, list)) else item


def _collate_one(items: list) -> Tensor:
    return first_tensor(items[0]).unsqueeze(0)


def check_selection(projector: Projector, layers: Sequence[str], channels: Sequence[int], k: int) -> None:
    """Every layer known, every channel in range for every layer, ``k ≥ 1``: else ConfigError."""
    if not layers or not channels:
        raise ConfigError("layers and channels must be non-empty lists, e.g. layers=[conv3_3,conv5_3] channels=[0,1,2]")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"topk={k!r} must be an integer ≥ 1")
    for layer in layers:
        projector.layer_index(layer)
        for c in channels:
            projector.check_channel(layer, c)


def search_topk(projector: Projector, dataset: Dataset, layers: Sequence[str], channels: Sequence[int],
                k: int = 9, limit: Optional[int] = None, num_workers: int = 0,
                show_progress: bool = True) -> dict[str, TopK]:
    """Stream ``dataset`` (its first ``limit`` items) and keep the top ``k`` per (layer, channel).

    One forward pass per image, up to the deepest chosen layer; only the ``(C, k)`` tables stay
    in memory.
    """
    check_selection(projector, layers, channels, k)
    n = dataset_len(dataset) if limit is None else min(int(limit), dataset_len(dataset))
    if n < 1:
        raise ConfigError("the dataset split is empty (or limit=0); nothing to search")
    tables = {layer: TopK.empty(layer, channels, k) for layer in layers}
    loader = DataLoader(Subset(dataset, range(n)), batch_size=1, num_workers=num_workers,
                        collate_fn=_collate_one)
    for i, image in enumerate(progress(loader, show_progress, f"top-{k} search")):
        acts = projector.activations(image, layers)
        for layer, table in tables.items():
            table.update(acts[layer], i)
    return tables


@dataclass
class LayerTiles:
    """Z&F Fig. 2 material for one layer: ``(C, k, 3, h, w)`` projections and image patches.

    Tiles are receptive-field crops (``rf`` = (h, w) px); ``patches`` are in [0, 1], parts off the
    image black; ``projections[method]`` are raw signals in normalized-input space (zero off the
    image), one tensor per method.
    """

    table: TopK
    projections: dict[str, Tensor]
    patches: Tensor

    @property
    def rf(self) -> tuple[int, int]:
        return int(self.patches.shape[-2]), int(self.patches.shape[-1])

    @property
    def methods(self) -> list[str]:
        return list(self.projections)


def collect_tiles(projector: Projector, dataset: Dataset, tables: dict[str, TopK],
                  methods: Union[str, Sequence[str]] = "deconvnet", show_progress: bool = True) -> dict[str, LayerTiles]:
    """Project every winner of ``tables`` and cut its receptive field from projection and image.

    Each winning image is loaded once; every activation is recorded once (on its receptive-field
    crop) and projected with each of ``methods``.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    for method in methods:
        check_method(method)
    by_image: dict[int, list[Hit]] = defaultdict(list)
    out: dict[str, LayerTiles] = {}
    for layer, table in tables.items():
        y0, y1, x0, x1 = projector.receptive_box(layer, 0, 0)
        shape = (len(table.channels), table.k, 3, y1 - y0, x1 - x0)
        out[layer] = LayerTiles(table, {m: torch.zeros(shape) for m in methods}, torch.zeros(shape))
        for hit in table.hits():
            by_image[hit.image].append(hit)
    mean = getattr(dataset, "mean", IMAGENET_MEAN)
    std = getattr(dataset, "std", IMAGENET_STD)
    for index in progress(sorted(by_image), show_progress, "projections"):
        image = first_tensor(dataset[index])
        shown = denormalize(image.float(), mean, std)
        for hit in by_image[index]:
            rf = projector.receptive_box(hit.layer, hit.y, hit.x)
            tiles = out[hit.layer]
            for m, pr in projector.project_methods(image, hit.layer, hit.channel, (hit.y, hit.x), methods).items():
                tiles.projections[m][hit.slot, hit.rank] = crop(pr.crop.cpu(), pr.box, rf)
            tiles.patches[hit.slot, hit.rank] = crop(shown, full_box(shown), rf)
    return out
