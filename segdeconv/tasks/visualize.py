"""``visualize(cfg)``: the task behind ``python visualize.py`` (config: ``conf/visualize.yaml``).

Checkpoint → model → :class:`~segdeconv.visualize.projection.Projector`; dataset split → top-k
search → projections → per-layer PNGs, ``figure.png`` (all layers), ``index.html``,
``topk.json`` and TensorBoard images (``tb/``), all in ``cfg.output_dir`` (``layers=[]``: none of these).
Then the class maps (:mod:`segdeconv.tasks.visualize_maps`): ``evidence/``, ``occlusion/``, ``explorer/``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from segdeconv.config import split_dataset
from segdeconv.data.sampler import dataset_inputs, dataset_len
from segdeconv.engine.outputs import check_output_file
from segdeconv.engine.runtime import resolve_device
from segdeconv.engine.writer import image_format, write_json
from segdeconv.errors import ConfigError
from segdeconv.tasks.visualize_decoder import decoder_and_evolution
from segdeconv.tasks.visualize_maps import class_maps, plan_maps
from segdeconv.trained import Trained, load_trained
from segdeconv.visualize.projection import Projector, check_method
from segdeconv.visualize.render import layer_figure, log_tensorboard, save_png, stack, write_index
from segdeconv.visualize.topk import LayerTiles, TopK, collect_tiles, search_topk

log = logging.getLogger("segdeconv")


def methods_of(cfg: DictConfig) -> list[str]:
    """``method=deconvnet`` or ``method=[deconvnet,guided_backprop]`` → a checked list."""
    methods = [cfg.method] if isinstance(cfg.method, str) else list(cfg.method or [])
    if not methods:
        raise ConfigError("method must name at least one of deconvnet, guided_backprop, gradient")
    return [check_method(m) for m in methods]


def _prepare(cfg: DictConfig) -> tuple[Trained, Projector, Dataset]:
    methods_of(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    trained = load_trained(cfg.ckpt_path, resolve_device(cfg.device, key="device"))
    projector = Projector.from_model(trained.model)
    dataset = split_dataset(trained.dataset_cfg, cfg.get("dataset"), cfg.split, cfg.get("data_root"), cfg.ckpt_path)
    return trained, projector, dataset


def _write(out: Path, cfg: DictConfig, tiles: dict[str, LayerTiles], facts: dict[str, str]) -> dict[str, str]:
    figures = {layer: layer_figure(t, int(cfg.tile_px), int(cfg.blocks_per_row)) for layer, t in tiles.items()}
    pngs = {layer: save_png(fig, out / f"{layer}.png").name for layer, fig in figures.items()}
    combined = stack(list(figures.values()))
    copy_to = Path(cfg.figure_out) if cfg.get("figure_out") else None
    save_png(combined, out / "figure.png", copy_to)
    write_index(out / "index.html", "Zeiler & Fergus projections", facts, pngs, tiles)
    write_json(out / "topk.json", {layer: _table_json(t.table) for layer, t in tiles.items()}, "top-k table")
    log_tensorboard(out / "tb", {**figures, "all_layers": combined})
    return pngs


def _table_json(t: TopK) -> dict[str, Any]:
    return {"channels": t.channels, "values": t.values.tolist(), "image": t.image.tolist(),
            "y": t.y.tolist(), "x": t.x.tolist()}


def default_layers(names: list[str]) -> list[str]:
    """``layers: null``: the last conv of the two deepest stages (``conv4_3, conv5_3`` for VGG16; ``conv2_1,
    conv3_2`` for the quick start's 3-stage VGG11), so the default fits every encoder."""
    last: dict[str, str] = {}
    for name in names:  # convI_J in forward order
        if name.startswith("conv"):
            last[name.split("_")[0]] = name
    return list(last.values())[-2:]


def layers_of(cfg: DictConfig, projector: Projector) -> list[str]:
    """``layers``: null → :func:`default_layers`; a bare name → one layer; ``[]`` → no top-k search."""
    if cfg.layers is None:
        return default_layers(list(projector.layers))
    return [cfg.layers] if isinstance(cfg.layers, str) else list(cfg.layers)


def visualize(cfg: DictConfig) -> dict[str, Any]:
    """Run the tool as ``cfg`` describes; returns the run's facts (timings, counts, files)."""
    out = Path(cfg.output_dir)
    if cfg.get("figure_out"):  # refused before the search, never after it: a checkpoint is never overwritten
        image_format(cfg.figure_out, "figure_out")  # a name PIL can write (a suffix), before any work
        check_output_file(cfg.figure_out, [cfg.ckpt_path], "figure_out")
    out.mkdir(parents=True, exist_ok=True)
    trained, projector, dataset = _prepare(cfg)
    if cfg.get("figure_out"):  # nor an image of the dataset it searches
        check_output_file(cfg.figure_out, [cfg.ckpt_path, *dataset_inputs(dataset)], "figure_out")
    layers, plan = layers_of(cfg, projector), plan_maps(cfg, trained, dataset, out)  # every key checked first
    if not layers and plan is None and not cfg.get("decoder") and not (cfg.get("evolution") or {}).get("checkpoints"):
        raise ConfigError("layers=[] leaves nothing to do; name layers (e.g. layers=[conv5_3]) or turn on "
                          "evidence.enabled, occlusion.enabled or explorer")
    facts, tiles = _topk(cfg, out, projector, dataset, layers) if layers else ({}, {})
    if plan is not None:
        t0 = time.perf_counter()
        shown = {"checkpoint": str(cfg.ckpt_path), **{k: v for k, v in facts.items() if isinstance(v, str)}}
        files = class_maps(plan, trained, dataset, out, tiles, shown)
        facts = {**facts, "files": [*facts.get("files", []), *files], "class_maps_s": time.perf_counter() - t0}
        log.info("class maps: %d files in %.1f s in %s", len(files), facts["class_maps_s"], out)
    extra = decoder_and_evolution(cfg, trained, dataset, out, layers)
    return {**facts, "files": [*facts.get("files", []), *extra]} if extra else facts


def _topk(cfg: DictConfig, out: Path, projector: Projector, dataset: Dataset,
          layers: list[str]) -> tuple[dict[str, Any], dict[str, LayerTiles]]:
    """The Z&F Fig. 2 top-k search and projections of ``layers`` and their files: ``(facts, tiles)``."""
    channels = list(cfg.channels)
    t0 = time.perf_counter()
    tables = search_topk(projector, dataset, layers, channels, cfg.topk, cfg.get("limit"),
                         int(cfg.num_workers), bool(cfg.progress))
    t1 = time.perf_counter()
    tiles = collect_tiles(projector, dataset, tables, methods_of(cfg), bool(cfg.progress))
    t2 = time.perf_counter()
    n = dataset_len(dataset) if cfg.get("limit") is None else min(int(cfg.limit), dataset_len(dataset))
    facts = {"checkpoint": str(cfg.ckpt_path), "dataset": f"{type(dataset).__name__} split={cfg.split} ({n} images)",
             "method": ", ".join(methods_of(cfg)), "layers": ", ".join(layers), "channels": ", ".join(map(str, channels)),
             "search": f"{t1 - t0:.1f} s", "projections": f"{t2 - t1:.1f} s"}
    pngs = _write(out, cfg, tiles, facts)
    log.info("top-%d over %d images: search %.1f s, projections %.1f s; wrote %s, figure.png, index.html in %s",
             cfg.topk, n, t1 - t0, t2 - t1, ", ".join(pngs.values()), out)
    return {**facts, "files": list(pngs.values()) + ["figure.png", "index.html", "topk.json"],
            "search_s": t1 - t0, "projection_s": t2 - t1}, tiles
