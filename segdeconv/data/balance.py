"""Median-frequency class weights (Eigen & Fergus 2015, §6.3.2; as used by SegNet).

Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels with a Common Multi-Scale
Convolutional Architecture", ICCV 2015 (arXiv:1411.4734): ``freq(c) = pixels of class c / total
pixels of the images in which c is present`` (the total counts every pixel of those images, void
included), ``weight(c) = median(freq) / freq(c)``. Classes absent from every mask get weight 0
(they cannot be learned from this set) and a warning. Config names (``loss.class_weights``):

* ``median_freq`` — the median is over the classes only (void is never a class). On the 367
  CamVid train masks: 0.2793 0.2017 4.7865 0.1490 1.0000 0.4217 3.8467 1.9736 0.7889 6.3747 8.8587.
* ``median_freq_void`` — void joins the median as one more "class" (its own freq computed the same
  way), as the community reproductions of SegNet's weights do (caffe-segnet#37, SegNet-Tutorial
  #101, chainercv ``examples/segnet/calc_weight.py``). Closest to the tutorial's constants:
  0.2565 0.1853 4.3963 0.1369 0.9185 0.3873 3.5331 1.8127 0.7246 5.8550 8.1365.
* ``segnet_tutorial`` — :data:`SEGNET_TUTORIAL_CAMVID_WEIGHTS`, the ``class_weighting`` list of
  alexgkendall/SegNet-Tutorial ``Models/segnet_train.prototxt`` (CamVid-11 datasets only).

No computation on these masks gives the tutorial's list (see data/README.md, "Median-frequency
class weights"): SignSymbol is 2.7x off and the other ten spread ±8.6% even with the best median.

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

from segdeconv.data.base import IGNORE_INDEX, PathLike
from segdeconv.data.masks import read_index_mask
from segdeconv.errors import ConfigError

CACHE_NAME = "class_weights_median_freq.json"
CACHE_NAME_VOID = "class_weights_median_freq_void.json"
# alexgkendall/SegNet-Tutorial Models/segnet_train.prototxt and segnet_basic_train.prototxt,
# loss_param.class_weighting (ignore_label: 11), in CamVid-11 order (camvid.CLASS_NAMES):
# Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist.
SEGNET_TUTORIAL_CAMVID_WEIGHTS: tuple[float, ...] = (
    0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823, 6.2478, 7.3614)
NAMED_SPECS = ("median_freq", "median_freq_void", "segnet_tutorial")
MaskSource = Union[Sequence[PathLike], Any]  # a list of mask files, or a dataset with load_mask


def _masks(source: MaskSource) -> Iterable[np.ndarray]:
    if hasattr(source, "load_mask"):  # a segdeconv dataset: training ids, void already -> 255
        return (source.load_mask(i) for i in range(len(source)))
    return (read_index_mask(p) for p in source)


def class_pixel_stats(source: MaskSource, num_classes: int, ignore_index: int = IGNORE_INDEX,
                      include_void: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per class: (pixels of c, total pixels of the images containing c), int64 arrays.

    Values >= ``num_classes`` (e.g. CamVid's raw void 11, or ``ignore_index``) are not classes.
    ``include_void`` appends one entry for them together (void pixels, total pixels of the images
    that have any), for :func:`median_frequency` ``(include_void=True)``.
    """
    counts = np.zeros(num_classes + include_void, dtype=np.int64)
    totals = np.zeros(num_classes + include_void, dtype=np.int64)
    for mask in _masks(source):
        hist = np.bincount(mask.ravel(), minlength=256)[:num_classes]
        if include_void:
            hist = np.append(hist, mask.size - hist.sum())
        counts += hist
        totals += (hist > 0) * mask.size
    return counts, totals


def median_frequency(counts: np.ndarray, totals: np.ndarray, include_void: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(freq, weights) from :func:`class_pixel_stats`; absent classes get freq 0, weight 0.

    Eigen & Fergus 2015 §6.3.2: ``weight(c) = median(freq) / freq(c)``. With ``include_void`` the
    last entry is void: it joins the median, and is dropped from the returned arrays.
    """
    freq = np.divide(counts, totals, out=np.zeros(len(counts)), where=totals > 0)
    present = freq > 0
    if not present[:len(freq) - include_void].any():
        raise ConfigError("median-frequency weights: no mask contains any class pixel")
    weights = np.divide(np.median(freq[present]), freq, out=np.zeros(len(freq)), where=present)
    n = len(freq) - include_void
    return freq[:n], weights[:n]


def compute_median_frequency(source: MaskSource, num_classes: int,
                             ignore_index: int = IGNORE_INDEX, include_void: bool = False
                             ) -> np.ndarray:
    """Median-frequency weights (float64, length ``num_classes``) from a dataset or mask paths."""
    stats = class_pixel_stats(source, num_classes, ignore_index, include_void)
    return median_frequency(*stats, include_void=include_void)[1]


def format_weights_table(class_names: Sequence[str], freq: np.ndarray, weights: np.ndarray) -> str:
    """Markdown table: class, frequency, weight."""
    rows = ["| class | freq | weight |", "|---|---:|---:|"]
    rows += [f"| {n} | {f:.4f} | {w:.4f} |" for n, f, w in zip(class_names, freq, weights)]
    return "\n".join(rows)


def _fingerprint(dataset: Any, include_void: bool = False) -> str:
    """Identifies the mask set (paths, sizes, mtimes, the class set) and the variant."""
    h = hashlib.sha1(f"{type(dataset).__name__}|{dataset.num_classes}|{dataset.ignore_index}|"
                     f"{getattr(dataset, 'lut', np.zeros(0)).tobytes().hex()}"
                     f"{'|void' if include_void else ''}".encode())
    if hasattr(dataset, "fingerprint"):  # generated data (SyntheticShapes): its parameters name it
        h.update(str(dataset.fingerprint()).encode())
        return h.hexdigest()
    if not hasattr(dataset, "mask_paths"):
        raise ConfigError(f"class weights from label statistics need a dataset with label files; "
                          f"{type(dataset).__name__} has none: give loss.class_weights=[w0, w1, …] or null")
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


def _save_cache(cache: Path, data: dict[str, Any]) -> None:
    """Write the cache atomically (a concurrent or killed run never leaves half a file); a cache that
    cannot be written (read-only data folder) is a warning: the weights are computed either way."""
    from segdeconv.engine.writer import write_json
    from segdeconv.errors import UserError

    try:
        write_json(cache, data, "class-weight cache")
    except (OSError, UserError) as e:
        warnings.warn(f"class weights not cached ({str(e).splitlines()[0]}); they are recomputed next time",
                      stacklevel=3)


def median_frequency_weights(dataset: Any, cache_path: Optional[PathLike] = None,
                             verbose: bool = True, include_void: bool = False) -> torch.Tensor:
    """Weights for ``dataset`` (float32 tensor), cached as JSON at ``cache_path`` when given.

    The cache is reused only if the dataset's mask files (paths, sizes, mtimes) are unchanged.
    ``include_void``: void joins the median (``median_freq_void``, see the module docstring).
    """
    key = _fingerprint(dataset, include_void)
    cache = Path(cache_path) if cache_path is not None else None
    cached = _load_cache(cache, key)
    if cached is not None:
        freq, weights = cached
    else:
        stats = class_pixel_stats(dataset, dataset.num_classes, dataset.ignore_index, include_void)
        freq, weights = median_frequency(*stats, include_void=include_void)
        if cache is not None:
            _save_cache(cache, {"fingerprint": key, "class_names": list(dataset.class_names),
                                "frequency": freq.tolist(), "weights": weights.tolist()})
    absent = [n for n, f in zip(dataset.class_names, freq) if f == 0]
    if absent:
        warnings.warn(f"classes {absent} never occur in {dataset!r}; their weight is 0",
                      stacklevel=2)
    if verbose:
        how = ", void in the median" if include_void else ""
        print(f"median-frequency class weights{how} ({len(dataset)} masks of {dataset!r}):\n"
              + format_weights_table(dataset.class_names, freq, weights))
    return torch.tensor(weights, dtype=torch.float32)


def segnet_tutorial_weights(dataset: Any, key: str = "loss.class_weights") -> torch.Tensor:
    """:data:`SEGNET_TUTORIAL_CAMVID_WEIGHTS` as a float32 tensor, if ``dataset`` has the CamVid-11
    classes in SegNet order (case-insensitive names); otherwise a :class:`ConfigError`."""
    from segdeconv.data.camvid import CLASS_NAMES

    names = [str(n).lower() for n in getattr(dataset, "class_names", [])]
    if dataset.num_classes != len(CLASS_NAMES) or names != [n.lower() for n in CLASS_NAMES]:
        raise ConfigError(f"{key}=segnet_tutorial holds the SegNet-Tutorial CamVid weights for "
                          f"{', '.join(CLASS_NAMES)}; the dataset has {dataset.num_classes} "
                          "classes "
                          f"({', '.join(map(str, getattr(dataset, 'class_names', [])))}); use "
                          "median_freq or a list")
    return torch.tensor(SEGNET_TUTORIAL_CAMVID_WEIGHTS, dtype=torch.float32)


def resolve_class_weights(spec: Union[None, str, Sequence[float]], dataset: Any,
                          cache_dir: Optional[PathLike] = None, key: str = "loss.class_weights",
                          verbose: bool = True) -> Optional[torch.Tensor]:
    """Config value -> loss weights: ``None`` -> None; ``"median_freq"`` / ``"median_freq_void"``
    -> computed from ``dataset``'s masks (cached in ``cache_dir``; ``_void``: void joins the
    median); ``"segnet_tutorial"`` -> :data:`SEGNET_TUTORIAL_CAMVID_WEIGHTS`; a list -> that list
    (one per class)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in NAMED_SPECS:
            raise ConfigError(f"{key}={spec!r} is unknown; use null, {', '.join(NAMED_SPECS)} or a "
                              f"list of {dataset.num_classes} floats")
        if spec == "segnet_tutorial":
            weights = segnet_tutorial_weights(dataset, key)
            if verbose:
                print("class weights: SegNet-Tutorial CamVid class_weighting "
                      f"({', '.join(f'{w:.4f}' for w in SEGNET_TUTORIAL_CAMVID_WEIGHTS)})")
            return weights
        void = spec == "median_freq_void"
        name = CACHE_NAME_VOID if void else CACHE_NAME
        cache = Path(cache_dir) / name if cache_dir is not None else None
        return median_frequency_weights(dataset, cache, verbose, include_void=void)
    if not isinstance(spec, SequenceABC) or len(spec) != dataset.num_classes:
        raise ConfigError(f"{key} must be null, {', '.join(NAMED_SPECS)} or a list of "
                          f"{dataset.num_classes} floats (one per class: "
                          f"{', '.join(dataset.class_names)}); got {spec!r}")
    try:
        return torch.tensor([float(w) for w in spec], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {spec!r} is not a list of numbers") from None
