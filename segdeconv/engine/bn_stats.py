"""BatchNorm population statistics recomputed after training, as the original Caffe releases do.

SegNet-Tutorial ``Scripts/compute_bn_statistics.py`` and DeconvNet
``training/003_make_bn_layer_testable/BN_make_INFERENCE_script.py`` run the trained net over the
training set with BN in its training mode (each layer normalizes with the batch's own statistics)
and every other layer as at test time (Caffe TEST phase: no dropout), then per layer

    mean = average over batches of the batch mean
    var  = average over batches of the biased batch variance (E[x²] − E[x]², caffe-segnet BNLayer)
           × m / (m − 1),   m = N·H·W values per channel in one batch

— an average of per-batch statistics, not pooled pixel moments (it omits the spread of the batch
means, so it depends on the batch size, and matches what the layers saw while training).
:func:`recompute_bn_statistics` does the same with PyTorch's cumulative average
(``momentum=None``): it averages each batch's mean and *unbiased* variance (biased × m/(m−1)) with
equal weight — the identical formula while every batch has the same ``m``. :func:`bn_loader` keeps
it so: like Caffe's data layer, which only yields full batches, it fills the last batch with the
first images again, so a DeconvNet 1×1 fc6/fc7 never meets a one-image batch either.

*Which* images, how many and in what batches is each original's own (:data:`PROTOCOLS`, issue #29):
both run the *training* data layer — SegNet's ``DenseImageData`` (whole frames, no transform, the training
batch, shuffled), DeconvNet's ``DeconvNet_make_bn_layer_testable.prototxt`` (training windows: resize 250,
random 224 crop, mirror; batch 28) for 501 iterations — so no padding pixel is counted as data (the val
transform pads VOC images to 512²: ~28 % of a 500×375 image). :class:`Windows` draws such training
windows reproducibly: pass k over the split visits its items in a seeded random order (Caffe's ``shuffle``)
and draws each item's random crop/mirror from (seed, k, item).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset

from segdeconv.data.sampler import SeededItems, loader_generator, quiet_worker
from segdeconv.engine.step import autocast, to_device
from segdeconv.errors import ConfigError, DataError, UserError

log = logging.getLogger("segdeconv")


@dataclass(frozen=True)
class BNProtocol:
    """How an original computed its test-time statistics: which windows, at what batch, how many batches."""

    windows: str  # "train": the training transform's windows | "eval": the deterministic val transform
    batch_size: Optional[int]  # None: the training's dataset.batch_size
    batches: Optional[int]  # None: one pass over the split (the last batch filled)
    source: str


_SEGNET = BNProtocol("train", None, None, "SegNet-Tutorial Scripts/compute_bn_statistics.py: the training "
                     "prototxt's DenseImageData (no transform, the training batch, shuffled) over the training list")
PROTOCOLS: dict[str, BNProtocol] = {
    "segnet": _SEGNET, "segnet_basic": _SEGNET,
    "deconvnet": BNProtocol("train", 28, 501, "DeconvNet training/003_make_bn_layer_testable: "
                            "DeconvNet_make_bn_layer_testable.prototxt (resize 250, random 224 crop, mirror; "
                            "batch 28), 501 iterations"),
}
DEFAULT_PROTOCOL = BNProtocol("train", None, None, "the model's training windows and batch, one pass")


def bn_protocol(family: str) -> BNProtocol:
    """The :data:`PROTOCOLS` entry of a registry model name (others: :data:`DEFAULT_PROTOCOL`)."""
    return PROTOCOLS.get(family, DEFAULT_PROTOCOL)


class Windows(Dataset):
    """``count`` items of ``dataset`` in passes: pass k visits every item once, in a seeded random order
    (``shuffle``; else in order), drawing its random augmentation from (seed, k, item) — the same windows on
    every run and in every worker. Pass k+1 starts where pass k ends, so ``count`` needs no multiple of n."""

    def __init__(self, dataset: Any, count: int, seed: int = 0, shuffle: bool = True) -> None:
        if len(dataset) == 0:
            raise DataError("the dataset is empty: there is nothing to compute BatchNorm statistics from")
        self.items, self.n, self.count = SeededItems(dataset, seed), len(dataset), int(count)
        self.seed, self.shuffle = int(seed), shuffle
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return self.count

    def order(self, k: int) -> list[int]:
        """The items of pass ``k``, in visiting order (the current pass is kept)."""
        if k not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
            self._orders = {k: torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))}
        return self._orders[k]

    def __getitem__(self, v: int) -> Any:
        if not 0 <= v < self.count:
            raise IndexError(f"window {v} of {self.count}")
        k, i = divmod(int(v), self.n)
        self.items.epoch = k
        return self.items[self.order(k)[i]]


def window_loader(dataset: Any, batch_size: int, batches: Optional[int], num_workers: int, device: torch.device,
                  seed: int = 0, shuffle: bool = True) -> DataLoader:
    """``batches`` full batches of :class:`Windows` (``None``: one pass, the last batch filled from the next)."""
    n_batches = batches if batches is not None else -(-len(dataset) // batch_size)
    windows = Windows(dataset, n_batches * batch_size, seed, shuffle)
    return DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda", collate_fn=stack_same_size,
                      worker_init_fn=quiet_worker if num_workers else None)


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def full_batch_order(n: int, batch_size: int) -> list[int]:
    """``0..n-1`` then the first images again until the last batch is full (Caffe's data layer)."""
    return [i % n for i in range(-(-n // batch_size) * batch_size)]


def stack_same_size(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Stack a batch; images of different sizes are an error (padding would enter the statistics)."""
    sizes = sorted({tuple(img.shape[-2:]) for img, _ in batch})
    if len(sizes) > 1:
        raise DataError(f"a batch holds images of sizes {sizes[:3]}: BatchNorm statistics need one size "
                        "per batch (padding would count as data); fix: use batch_size=1 or an eval "
                        "transform that resizes to dataset.image_size")
    return torch.stack([img for img, _ in batch]), torch.stack([m for _, m in batch])


def bn_loader(dataset: Any, batch_size: int, num_workers: int, device: torch.device) -> DataLoader:
    """Ordered loader of full batches (:func:`full_batch_order`) for :func:`recompute_bn_statistics`."""
    if len(dataset) == 0:
        raise DataError("the dataset is empty: there is nothing to compute BatchNorm statistics from")
    return DataLoader(dataset, batch_size=batch_size, sampler=full_batch_order(len(dataset), batch_size),
                      num_workers=num_workers, pin_memory=device.type == "cuda", collate_fn=stack_same_size,
                      generator=loader_generator(0), worker_init_fn=quiet_worker if num_workers else None)


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, loader: Iterable[Any], device: torch.device,
                            amp_dtype: Optional[torch.dtype] = None) -> None:
    """Replace every BatchNorm's running mean/var by its average over ``loader``'s batches
    (``(images, …)`` tuples or image tensors), the SegNet/DeconvNet recipe (module docstring).

    BN layers run in training mode with ``momentum=None``, everything else in eval mode, no
    gradients; modes and momenta are restored afterwards. A layer no batch reached keeps its old
    statistics (with a warning); on any error every layer keeps its old statistics."""
    bns = batch_norms(model)
    if not bns:
        raise UserError("the model has no BatchNorm layer with running statistics (e.g. "
                        "model.encoder.batch_norm=false): there is nothing to recompute")
    modes = [(m, m.training) for m in model.modules()]
    saved = [(m.momentum, [b.clone() for b in m.buffers()]) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        batches = _run(model, loader, device, amp_dtype)
    except BaseException:
        for m, (_, bufs) in zip(bns, saved):
            _restore(m, bufs)
        raise
    finally:
        for m, (momentum, _) in zip(bns, saved):
            m.momentum = momentum
        for module, mode in modes:
            module.training = mode
    # batch_norms keeps layers with track_running_stats, which always have num_batches_tracked
    unreached = [(m, bufs) for m, (_, bufs) in zip(bns, saved)
                 if m.num_batches_tracked is not None and int(m.num_batches_tracked) == 0]
    for m, bufs in unreached:
        _restore(m, bufs)
    if unreached:
        log.warning("%d of %d BatchNorm layers saw no batch and keep their old statistics", len(unreached), len(bns))
    log.info("recomputed the statistics of %d BatchNorm layers over %d batches", len(bns), batches)


def _run(model: nn.Module, loader: Iterable[Any], device: torch.device, amp_dtype: Optional[torch.dtype]) -> int:
    """Forward every batch of ``loader``; returns the number of batches."""
    batches = 0
    for batch in loader:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        try:
            with autocast(device, amp_dtype):
                model(to_device(images, device))
        except ValueError as e:
            if "more than 1 value per channel" not in str(e):
                raise
            raise ConfigError(f"a batch of {len(images)} gives a BatchNorm layer one value per channel "
                              "(DeconvNet's 1×1 fc6/fc7); use batch_size ≥ 2") from None
        batches += 1
    if not batches:
        raise DataError("the loader gave no batch: there is nothing to compute BatchNorm statistics from")
    return batches


def _restore(m: _BatchNorm, buffers: list[Tensor]) -> None:
    for b, old in zip(m.buffers(), buffers):
        b.copy_(old)
