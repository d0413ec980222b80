"""Median-frequency class weights (Eigen & Fergus 2015, as used by SegNet).

``freq(c) = pixels of class c / total pixels of the images in which c is present`` (the total
counts every pixel of those images, void included), ``weight(c) = median(freq) / freq(c)``;
void/ignore pixels are never counted as a class. Classes absent from every mask get weight 0
(they cannot be learned from this set) and a warning. On the 367 CamVid train masks at full
resolution this gives 0.2793, 0.2017, 4.7865, 0.1490, 1.0000, 0.4217, 3.8467, 1.9736, 0.7889,
6.3747, 8.8587 (Sky ... Bicyclist); see data/README.md for why SegNet's published numbers differ.

Masks are read directly (no image decoding, no augmentation).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from segdeconv.data.base import IGNORE_INDEX, PathLike, read_index_mask
from segdeconv.errors import ConfigError

CACHE_NAME = "class_weights_median_freq.json"
MaskSource = Union[Sequence[PathLike], Any]  # a list of mask files, or a dataset with load_mask


def _masks(source: MaskSource) -> Iterable[np.ndarray]:
    if hasattr(source, "load_mask"):  # a segdeconv dataset: training ids, void already -> 255
        return (source.load_mask(i) for i in range(len(source)))
    return (read_index_mask(p) for p in source)


def class_pixel_stats(source: MaskSource, num_classes: int, ignore_index: int = IGNORE_INDEX
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per class: (pixels of c, total pixels of the images containing c), int64 arrays.

    Values >= ``num_classes`` (e.g. CamVid's raw void 11, or ``ignore_index``) are not classes.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    totals = np.zeros(num_classes, dtype=np.int64)
    for mask in _masks(source):
        hist = np.bincount(mask.ravel(), minlength=256)[:num_classes]
        counts += hist
        totals += (hist > 0) * mask.size
    return counts, totals


def median_frequency(counts: np.ndarray, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(freq, weights) from :func:`class_pixel_stats`; absent classes get freq 0, weight 0."""
    freq = np.divide(counts, totals, out=np.zeros(len(counts)), where=totals > 0)
    present = freq > 0
    if not present.any():
        raise ConfigError("median-frequency weights: no mask contains any class pixel")
    weights = np.divide(np.median(freq[present]), freq, out=np.zeros(len(freq)), where=present)
    return freq, weights


def compute_median_frequency(source: MaskSource, num_classes: int,
                             ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Median-frequency weights (float64, length ``num_classes``) from a dataset or mask paths."""
    return median_frequency(*class_pixel_stats(source, num_classes, ignore_index))[1]


def format_weights_table(class_names: Sequence[str], freq: np.ndarray, weights: np.ndarray) -> str:
    """Markdown table: class, frequency, weight."""
    rows = ["| class | freq | weight |", "|---|---:|---:|"]
    rows += [f"| {n} | {f:.4f} | {w:.4f} |" for n, f, w in zip(class_names, freq, weights)]
    return "\n".join(rows)


def _fingerprint(dataset: Any) -> str:
    """Identifies the mask set: paths, sizes, mtimes and the class set."""
    h = hashlib.sha1(f"{type(dataset).__name__}|{dataset.num_classes}|{dataset.ignore_index}|"
                     f"{getattr(dataset, 'lut', np.zeros(0)).tobytes().hex()}".encode())
    for p in dataset.mask_paths:
        st = Path(p).stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _load_cache(cache: Optional[Path], key: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(freq, weights) from a cache file whose fingerprint is ``key``, else None."""
    if cache is None or not cache.is_file():
        return None
    try:
        data = json.loads(cache.read_text())
        if data.get("fingerprint") == key:
            return np.array(data["frequency"]), np.array(data["weights"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # unreadable or foreign file: recompute and overwrite
    return None


def median_frequency_weights(dataset: Any, cache_path: Optional[PathLike] = None,
                             verbose: bool = True) -> torch.Tensor:
    """Weights for ``dataset`` (float32 tensor), cached as JSON at ``cache_path`` when given.

    The cache is reused only if the dataset's mask files (paths, sizes, mtimes) are unchanged.
    """
    key = _fingerprint(dataset)
    cache = Path(cache_path) if cache_path is not None else None
    cached = _load_cache(cache, key)
    if cached is not None:
        freq, weights = cached
    else:
        freq, weights = median_frequency(*class_pixel_stats(dataset, dataset.num_classes,
                                                            dataset.ignore_index))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"fingerprint": key,
                                         "class_names": list(dataset.class_names),
                                         "frequency": freq.tolist(),
                                         "weights": weights.tolist()}, indent=1))
    absent = [n for n, f in zip(dataset.class_names, freq) if f == 0]
    if absent:
        warnings.warn(f"classes {absent} never occur in {dataset!r}; their weight is 0",
                      stacklevel=2)
    if verbose:
        print(f"median-frequency class weights ({len(dataset)} masks of {dataset!r}):\n"
              + format_weights_table(dataset.class_names, freq, weights))
    return torch.tensor(weights, dtype=torch.float32)


def resolve_class_weights(spec: Union[None, str, Sequence[float]], dataset: Any,
                          cache_dir: Optional[PathLike] = None, key: str = "loss.class_weights",
                          verbose: bool = True) -> Optional[torch.Tensor]:
    """Config value -> loss weights: ``None`` -> None, ``"median_freq"`` -> computed from
    ``dataset``'s masks (cached in ``cache_dir``), a list -> that list (one per class)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "median_freq":
            raise ConfigError(f"{key}={spec!r} is unknown; use null, median_freq or a list of "
                              f"{dataset.num_classes} floats")
        cache = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
        return median_frequency_weights(dataset, cache, verbose)
    if not isinstance(spec, SequenceABC) or len(spec) != dataset.num_classes:
        raise ConfigError(f"{key} must be null, median_freq or a list of {dataset.num_classes} "
                          f"floats (one per class: {', '.join(dataset.class_names)}); got {spec!r}")
    try:
        return torch.tensor([float(w) for w in spec], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {spec!r} is not a list of numbers") from None
