"""Sampling and collation that make runs exactly resumable and shardable.

:class:`EpochSampler` draws epoch ``e``'s order from a generator seeded with ``(seed, e)`` and can
start part-way through it, so a run resumed at (epoch, batch k) sees exactly the batches the
uninterrupted run would have seen; with ``num_replicas > 1`` it shards the order like
``DistributedSampler`` (padded to equal length for training, unpadded for evaluation).
:class:`SeededItems` re-seeds every RNG an augmentation may use from ``(seed, epoch, index)`` so
an item's augmentation does not depend on which worker loads it or on what came before.
"""
from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence, Sized, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from segdeconv.data.image import IGNORE_INDEX
from segdeconv.errors import ConfigError


class EpochSampler(Sampler[int]):
    """Deterministic per-epoch order, rank sharding, and a start offset for mid-epoch resume."""

    def __init__(
        self,
        length: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
    ) -> None:
        self.length, self.shuffle, self.seed = int(length), shuffle, int(seed)
        self.num_replicas, self.rank, self.pad = num_replicas, rank, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select epoch ``epoch``'s order and skip its first ``start`` samples (of this rank)."""
        self.epoch, self.start = int(epoch), int(start)

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.pad and self.num_replicas > 1 and self.length % self.num_replicas:
            extra = self.num_replicas - self.length % self.num_replicas
            order += order[:extra]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self._order()) - self.start)


class SeededItems(Dataset):
    """Wraps a dataset so item ``i`` of epoch ``e`` is augmented with RNGs seeded by (seed, e, i)."""

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        s = ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index)) % 2**32
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG streams untouched
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)
            transform = getattr(self.dataset, "transform", None)
            if transform is not None and hasattr(transform, "set_random_seed"):  # albumentations ≥ 2 keeps its own generators
                transform.set_random_seed(s)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def quiet_worker(_worker_id: int) -> None:
    """``worker_init_fn``: stop signals sent to the whole process group (Ctrl-C; SIGTERM from a batch
    scheduler) are for the main process, which finishes its step, saves and shuts the workers down.
    A worker dying of one would make the main process fail at an arbitrary point instead.

    SIGINT is ignored. SIGTERM is ignored unless the parent sent it (DataLoader/multiprocessing
    shutdown), which ends the worker as torch's own handler does (Linux: needs ``sigwaitinfo``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo") and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=_exit_on_parent_sigterm, args=(os.getppid(),), daemon=True).start()


def _exit_on_parent_sigterm(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)


def loader_generator(seed: int, epoch: int = 0) -> torch.Generator:
    """The generator a DataLoader draws its worker base seed from: a function of (seed, epoch), so
    worker seeds are reproducible after a resume and the global torch RNG is never consumed."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) + 7) % 2**63)


class Head(Dataset):
    """The first ``n`` items of a dataset, forwarding its attributes (class names, paths…)."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, min(int(n), len(dataset))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name: str):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[index]


def pad_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (image, mask) pairs, padding smaller ones at the bottom/right (image 0, mask 255).

    Images and masks are padded each to their own largest size: a mask kept at its native size while its
    image was resized (``segnet_eval(labels="native")``) is larger than the image. Such masks must share one
    size within a batch (their logits are upsampled to it), which mixed-size datasets cannot promise."""
    imgs = _pad_to_max([img for img, _ in batch], 0)
    masks = _pad_to_max([mask for _, mask in batch], IGNORE_INDEX)
    native = any(tuple(i.shape[-2:]) != tuple(m.shape[-2:]) for i, m in batch)
    if native and len({tuple(m.shape[-2:]) for _, m in batch}) > 1:
        raise ConfigError("labels scored at their native size differ in size within one batch: pass "
                          "dataset.val.transform.labels=resized, or score with batch_size=1")
    return imgs, masks


def _pad_to_max(tensors: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    h = max(int(t.shape[-2]) for t in tensors)
    w = max(int(t.shape[-1]) for t in tensors)
    return torch.stack([F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=value)
                        if (h, w) != tuple(t.shape[-2:]) else t for t in tensors])


def dataset_len(dataset: Any) -> int:
    """``len(dataset)``, typed: torch's ``Dataset`` does not declare ``__len__`` (an ``IterableDataset`` has
    none), while every map-style dataset segdeconv reads (and each wrapper: Subset, Head, SeededItems) has one."""
    return len(cast(Sized, dataset))


def unwrapped(dataset: Any) -> Any:
    """The dataset inside wrappers (``Subset``, ``Head``, ``SeededItems``: each holds it as ``.dataset``)."""
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def dataset_inputs(dataset: Any) -> list[Path]:
    """The folders ``dataset`` reads (its root, and the folders of its images and masks; wrappers
    unwrapped): the writers' rule (:func:`segdeconv.engine.outputs.check_output_file`) puts no output file
    inside them."""
    dataset = unwrapped(dataset)
    found = {Path(str(dataset.root)).expanduser()} if getattr(dataset, "root", None) else set()
    for attr in ("image_paths", "mask_paths"):
        found.update(Path(p).parent for p in getattr(dataset, attr, None) or [])
    return sorted(found)
