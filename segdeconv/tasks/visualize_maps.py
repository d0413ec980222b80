"""The class-map keys of ``segdeconv visualize`` (``conf/visualize.yaml``): ``images``, ``classes``,
``evidence.*``, ``occlusion.*``, ``explorer``, ``mc_samples``.

Each key is checked here, before any map is computed (one ``error:`` line naming the key and the fix);
then per image :func:`~segdeconv.visualize.classmaps.image_maps` and the files: ``evidence/`` and
``occlusion/`` PNGs (Z&F 2014 §2.1, §4.2) and the ``explorer/`` page.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, ListConfig
from PIL import Image
from torch.utils.data import Dataset

from segdeconv.data.image import IMAGENET_MEAN, IMAGENET_STD, denormalize
from segdeconv.data.sampler import dataset_len, unwrapped
from segdeconv.engine.writer import write_image
from segdeconv.errors import ConfigError, UserError
from segdeconv.trained import Trained
from segdeconv.visualize.classmaps import ImageMaps, MapSettings, image_maps, mc_passes
from segdeconv.visualize.evidence import Region, check_class
from segdeconv.visualize.explorer import write_explorer
from segdeconv.visualize.render import heatmap
from segdeconv.visualize.topk import LayerTiles, first_tensor

log = logging.getLogger("segdeconv")


def wanted(cfg: DictConfig) -> bool:
    """True when the run makes class maps (evidence, occlusion or the explorer)."""
    return bool(cfg.evidence.enabled or cfg.occlusion.enabled or cfg.explorer)


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple, ListConfig)) else v


def image_indices(value: Any, n: int) -> list[int]:
    """``images``: a count N (the first N of the split) or a list of indices, each in ``0..n-1``."""
    value = _plain(value)
    ints = value if isinstance(value, list) else [value]
    if not ints or not all(isinstance(i, int) and not isinstance(i, bool) for i in ints):
        raise ConfigError(f"images={value!r} must be a count N ≥ 1 or a list of image indices, e.g. images=4 "
                          f"or images=[0,5,9]")
    if not isinstance(value, list):
        if value < 1:
            raise ConfigError(f"images={value} must be ≥ 1 (the first N images of the split), e.g. images=4")
        return list(range(min(value, n)))
    bad = [i for i in value if not 0 <= i < n]
    if bad:
        raise ConfigError(f"images={value}: {bad} not in the split's {n} images; use indices 0..{n - 1}")
    return list(dict.fromkeys(value))


def class_indices(value: Any, names: Sequence[str]) -> Optional[list[int]]:
    """``classes``: null or a list of names (case-insensitive) or indices of the checkpoint's classes."""
    value = _plain(value)
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    try:
        return list(dict.fromkeys(check_class(c, len(names), names) for c in items))
    except ConfigError as e:
        raise ConfigError(f"classes=[{','.join(map(str, items))}]: {e}") from None


def region_of(value: Any) -> Region:
    """``evidence.region``: ``mask`` → None; ``[y, x]`` or ``[y0, x0, y1, x1]`` → a tuple."""
    value = _plain(value)
    if value == "mask":
        return None
    if isinstance(value, list) and len(value) in (2, 4) and all(isinstance(v, int) and v >= 0 for v in value):
        return tuple(value)
    raise ConfigError(f"evidence.region={value!r} must be mask, a pixel [y, x] or a box [y0, x0, y1, x1] "
                      f"(ends exclusive), e.g. evidence.region=[40,60,80,120]")


def settings(cfg: DictConfig) -> MapSettings:
    """The checked :class:`MapSettings` of ``cfg`` (``occlusion.stride ≤ occlusion.patch``)."""
    occ = cfg.occlusion
    if int(occ.stride) > int(occ.patch):
        raise ConfigError(f"occlusion.stride={occ.stride} is larger than occlusion.patch={occ.patch}: pixels "
                          f"between patches would never be occluded; set occlusion.stride ≤ {occ.patch}")
    explorer = bool(cfg.explorer)
    return MapSettings(method=str(cfg.evidence.method), region=region_of(cfg.evidence.region),
                       evidence=bool(cfg.evidence.enabled) or explorer, occlusion=bool(occ.enabled) or explorer,
                       patch=int(occ.patch), stride=int(occ.stride), batch_size=int(occ.batch_size),
                       grid=int(cfg.evidence.grid) if explorer else 0,
                       mc_samples=int(cfg.mc_samples) if cfg.get("mc_samples") is not None else None)


def check_size(s: MapSettings, size: tuple[int, int]) -> None:
    """The occlusion patch and the evidence region fit a ``size`` (H, W) image, else a ConfigError."""
    h, w = size
    if s.occlusion and s.patch > min(h, w):
        raise ConfigError(f"occlusion.patch={s.patch} px is larger than the {h}x{w} image; set occlusion.patch ≤ "
                          f"{min(h, w)}")
    r = s.region
    if isinstance(r, tuple):
        y0, x0, y1, x1 = r if len(r) == 4 else (r[0], r[1], r[0] + 1, r[1] + 1)
        if not (y0 < y1 <= h and x0 < x1 <= w):
            raise ConfigError(f"evidence.region={list(r)} is empty or outside the {h}x{w} image; use "
                              f"0 ≤ y0 < y1 ≤ {h} and 0 ≤ x0 < x1 ≤ {w}")


def image_name(dataset: Dataset, index: int) -> str:
    """The image's file stem (``0016E5_07959``), else ``image<index>``."""
    paths = getattr(unwrapped(dataset), "image_paths", None)
    return Path(paths[index]).stem if paths and index < len(paths) else f"image{index}"


def explorer_dir(out: Path) -> Path:
    """``<run dir>/explorer``: refused when it already holds files (never mixed with another run's)."""
    folder = out / "explorer"
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{folder} already exists and holds files; write the explorer into a new run dir "
                        f"(hydra.run.dir=…) or remove that folder")
    return folder


def _write_pngs(out: Path, m: ImageMaps, names: Sequence[str]) -> list[str]:
    files = []
    for kind, maps in (("evidence", m.evidence), ("occlusion", m.occlusion)):
        for c, v in maps.items():
            rgb = heatmap(v) if kind == "evidence" else heatmap(v, m.shown)
            path = out / kind / f"{m.name}_{names[c]}.png"
            write_image(path, Image.fromarray(rgb), f"{kind} map", optimize=True)
            files.append(str(path.relative_to(out)))
    return files


@dataclass(frozen=True)
class MapsPlan:
    """The checked class-map keys: what to compute, for which images and classes, and where."""

    settings: MapSettings
    images: list[int]
    classes: Optional[list[int]]
    pngs: bool  # evidence/ and occlusion/ PNGs
    explorer: Optional[Path]


def plan_maps(cfg: DictConfig, trained: Trained, dataset: Dataset, out: Path) -> Optional[MapsPlan]:
    """Check every class-map key (before any heavy work); None when the run makes no class maps."""
    if not wanted(cfg):
        return None
    s = settings(cfg)
    indices = image_indices(cfg.images, dataset_len(dataset))
    classes = class_indices(cfg.get("classes"), trained.class_names)
    folder = explorer_dir(out) if cfg.explorer else None
    s = replace(s, mc_samples=mc_passes(trained.model, s.mc_samples) if folder else 1,
                input_size=trained.image_size)  # occlusion at the training size, as predict's input_size=auto
    first = first_tensor(dataset[indices[0]])
    check_size(s, (int(first.shape[-2]), int(first.shape[-1])))
    return MapsPlan(s, indices, classes, bool(cfg.evidence.enabled or cfg.occlusion.enabled), folder)


def class_maps(plan: MapsPlan, trained: Trained, dataset: Dataset, out: Path,
               tiles: dict[str, LayerTiles], facts: dict[str, str]) -> list[str]:
    """Compute and write the class maps of ``plan``; returns the files written (relative to ``out``)."""
    mean, std = getattr(dataset, "mean", IMAGENET_MEAN), getattr(dataset, "std", IMAGENET_STD)
    done: list[ImageMaps] = []
    files: list[str] = []
    for i in plan.images:
        image = first_tensor(dataset[i]).float()
        check_size(plan.settings, (int(image.shape[-2]), int(image.shape[-1])))
        m = image_maps(trained.model, image, denormalize(image, mean, std), image_name(dataset, i), plan.classes,
                       plan.settings)
        files += _write_pngs(out, m, trained.class_names) if plan.pngs else []
        done.append(m)
        log.info("class maps %d/%d: %s (%d classes)", len(done), len(plan.images), m.name,
                 len(m.evidence or m.occlusion))
    if plan.explorer is not None:
        write_explorer(plan.explorer, done, tiles, trained.class_names, trained.palette, facts, plan.settings)
        files.append("explorer/index.html")
    return files
