"""``visualize(cfg)``: the task behind ``python visualize.py`` (config: ``conf/visualize.yaml``).

Checkpoint → model → :class:`~segdeconv.visualize.deconvnet.Projector`; dataset split → top-k
search → projections → per-layer PNGs, ``figure.png`` (all layers), ``index.html``,
``topk.json`` and TensorBoard images (``tb/``), all in ``cfg.output_dir``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from segdeconv.checkpoint import load_checkpoint
from segdeconv.errors import CheckpointError, ConfigError
from segdeconv.runtime import resolve_device
from segdeconv.visualize.deconvnet import Projector, check_method
from segdeconv.visualize.render import layer_figure, log_tensorboard, save_png, stack, write_index
from segdeconv.visualize.topk import LayerTiles, TopK, collect_tiles, search_topk
from segdeconv.wiring import instantiate_node, model_from_checkpoint

log = logging.getLogger("segdeconv")


def dataset_node(cfg: DictConfig, ckpt: Mapping[str, Any]) -> DictConfig:
    """The instantiable node of ``cfg.split``.

    ``dataset=<name>`` composes a dataset config as in training; otherwise the checkpoint's own
    dataset is used, with any ``+dataset.<key>=…`` overlaid. The (augmentation-free) ``val`` node
    is taken with its ``split`` replaced, so ``split=test`` works for any adapter with a ``split``
    argument; ``data_root`` (or ``+dataset.root``) replaces the root.
    """
    given, root = cfg.get("dataset"), cfg.get("data_root")
    if given is not None and "_target_" in (given.get("val") or {}):  # a composed dataset group
        if root:
            given.root = str(root)
        if "root" in given.keys() and OmegaConf.is_missing(given, "root"):
            raise ConfigError(f"dataset={given.get('name', '')} needs dataset.root=/path/to/the/dataset")
        node = OmegaConf.create(OmegaConf.to_container(given.val, resolve=True))
    else:
        saved = (ckpt.get("config") or {}).get("dataset")
        if not saved:
            raise CheckpointError(f"{cfg.ckpt_path} records no dataset; pass dataset=<name> (e.g. dataset=camvid dataset.root=…)")
        ds = OmegaConf.merge(OmegaConf.create(dict(saved)), given or {})
        if not isinstance(ds.get("val"), DictConfig):
            raise ConfigError(f"dataset {ds.get('name', '')} has no dataset.val node to build the split from")
        node, root = ds.val, root or (given or {}).get("root")
        if root:
            node.root = str(root)  # the saved config is resolved: val.root is a copy, not ${dataset.root}
    if cfg.split != node.get("split"):
        if "split" not in node:
            raise ConfigError(f"split={cfg.split}: this dataset has no split argument; use split=val")
        node.split = cfg.split
    return node


def methods_of(cfg: DictConfig) -> list[str]:
    """``method=deconvnet`` or ``method=[deconvnet,guided_backprop]`` → a checked list."""
    methods = [cfg.method] if isinstance(cfg.method, str) else list(cfg.method or [])
    if not methods:
        raise ConfigError("method must name at least one of deconvnet, guided_backprop, gradient")
    return [check_method(m) for m in methods]


def _prepare(cfg: DictConfig) -> tuple[Projector, Dataset]:
    methods_of(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    ckpt = load_checkpoint(cfg.ckpt_path)
    model = model_from_checkpoint(ckpt, resolve_device(cfg.device), cfg.ckpt_path)
    projector = Projector.from_model(model)
    dataset = instantiate_node(dataset_node(cfg, ckpt), "dataset.val")
    return projector, dataset


def _write(out: Path, cfg: DictConfig, tiles: dict[str, LayerTiles], facts: dict[str, str]) -> dict[str, str]:
    figures = {layer: layer_figure(t, int(cfg.tile_px), int(cfg.blocks_per_row)) for layer, t in tiles.items()}
    pngs = {layer: save_png(fig, out / f"{layer}.png").name for layer, fig in figures.items()}
    combined = stack(list(figures.values()))
    copy_to = Path(cfg.figure_out) if cfg.get("figure_out") else None
    save_png(combined, out / "figure.png", copy_to)
    write_index(out / "index.html", "Zeiler & Fergus projections", facts, pngs, tiles)
    (out / "topk.json").write_text(json.dumps({layer: _table_json(t.table) for layer, t in tiles.items()}, indent=1))
    log_tensorboard(out / "tb", {**figures, "all_layers": combined})
    return pngs


def _table_json(t: TopK) -> dict[str, Any]:
    return {"channels": t.channels, "values": t.values.tolist(), "image": t.image.tolist(),
            "y": t.y.tolist(), "x": t.x.tolist()}


def visualize(cfg: DictConfig) -> dict[str, Any]:
    """Run the tool as ``cfg`` describes; returns the run's facts (timings, counts, files)."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    projector, dataset = _prepare(cfg)
    layers, channels = list(cfg.layers), list(cfg.channels)
    t0 = time.perf_counter()
    tables = search_topk(projector, dataset, layers, channels, cfg.topk, cfg.get("limit"),
                         int(cfg.num_workers), bool(cfg.progress))
    t1 = time.perf_counter()
    tiles = collect_tiles(projector, dataset, tables, methods_of(cfg), bool(cfg.progress))
    t2 = time.perf_counter()
    n = len(dataset) if cfg.get("limit") is None else min(int(cfg.limit), len(dataset))
    facts = {"checkpoint": str(cfg.ckpt_path), "dataset": f"{type(dataset).__name__} split={cfg.split} ({n} images)",
             "method": ", ".join(methods_of(cfg)), "layers": ", ".join(layers), "channels": ", ".join(map(str, channels)),
             "search": f"{t1 - t0:.1f} s", "projections": f"{t2 - t1:.1f} s"}
    pngs = _write(out, cfg, tiles, facts)
    log.info("top-%d over %d images: search %.1f s, projections %.1f s; wrote %s, figure.png, index.html in %s",
             cfg.topk, n, t1 - t0, t2 - t1, ", ".join(pngs.values()), out)
    return {**facts, "files": list(pngs.values()) + ["figure.png", "index.html", "topk.json"],
            "search_s": t1 - t0, "projection_s": t2 - t1}
