"""Figures in the style of Zeiler & Fergus 2014, Fig. 2, an HTML index, and TensorBoard images.

Per layer, one block per channel: its top-k projections (grey = 0, each tile scaled to its own
contrast), one grid per method, beside the matching image patches (receptive-field crops),
strongest first.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from segdeconv.engine.writer import write_image, write_text
from segdeconv.visualize.topk import LayerTiles

HEADER = 16  # px of text above a channel block
TITLE = 22  # px of text above a layer figure
GAP = 2  # px between tiles
BLOCK_GAP = 12  # px between channel blocks


def to_display(p: Tensor, q: float = 0.995) -> Tensor:
    """A signed projection ``(…, 3, h, w)`` → [0, 1]: ``0.5 + 0.5 · p / s`` per tile, zero is grey.

    ``s`` is the ``q``-quantile of ``|p|`` over the tile's non-zero values (a few extreme pixels
    would otherwise leave everything else grey); larger values saturate.
    """
    flat = p.abs().flatten(-3).float()
    scale = torch.stack([_quantile_nonzero(row, q) for row in flat.reshape(-1, flat.shape[-1])])
    return (0.5 + 0.5 * p / scale.view(*p.shape[:-3], 1, 1, 1)).clamp(0, 1)


def heatmap(m: Tensor, image: Optional[Tensor] = None, alpha: float = 0.6, q: float = 0.995) -> np.ndarray:
    """A signed map as an RGB ``uint8`` picture ``(H, W, 3)``; zero is grey (3-channel) or white.

    ``(3, H, W)`` (a class-evidence projection) is shown as Z&F show projections (:func:`to_display`);
    ``(H, W)`` (an occlusion map) on a blue–white–red scale, red = positive, saturating at the
    ``q``-quantile of ``|m|``. ``image`` ``(3, H, W)`` in [0, 1] is blended under it (weight ``1 − alpha``).
    """
    m = m.detach().float().cpu()
    if m.dim() == 2:
        v = to_display(m.expand(3, *m.shape), q)[0]  # (H, W) in [0, 1], 0.5 = zero
        pos, neg = (2 * v - 1).clamp_min(0), (1 - 2 * v).clamp_min(0)
        rgb = torch.stack([1 - neg, 1 - pos - neg, 1 - pos])  # (3, H, W): white at 0
    elif m.dim() == 3 and m.shape[0] == 3:
        rgb = to_display(m, q)
    else:
        raise ValueError(f"heatmap expects a (H, W) or (3, H, W) map, got {tuple(m.shape)}")
    if image is not None:
        rgb = alpha * rgb + (1 - alpha) * image.detach().float().cpu().clamp(0, 1)
    return (rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _quantile_nonzero(values: Tensor, q: float) -> Tensor:
    nz = values[values > 0]
    if nz.numel() == 0:
        return values.new_tensor(1.0)
    k = max(1, min(nz.numel(), int(round(q * nz.numel()))))
    return nz.kthvalue(k).values


def _to_pil(t: Tensor, px: int) -> Image.Image:
    """(3, h, w) in [0, 1] → a ``px`` × ``px`` RGB image (antialiased resize)."""
    t = F.interpolate(t[None].float(), size=(px, px), mode="bilinear", antialias=True, align_corners=False)[0]
    return Image.fromarray((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _grid_size(k: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def _paste_grid(canvas: Image.Image, tiles: Tensor, px: int, left: int, top: int) -> None:
    """Paste ``(k, 3, h, w)`` tiles row-major in a near-square grid at ``(left, top)``."""
    _, cols = _grid_size(len(tiles))
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas.paste(_to_pil(t, px), (left + c * (px + GAP), top + r * (px + GAP)))


def layer_figure(tiles: LayerTiles, px: int = 64, blocks_per_row: int = 4) -> Image.Image:
    """One layer's figure: per channel, the projections of each method, then the image patches."""
    table = tiles.table
    rows, cols = _grid_size(table.k)
    grid_w, grid_h = cols * px + (cols - 1) * GAP, rows * px + (rows - 1) * GAP
    grids = [to_display(p) for p in tiles.projections.values()] + [tiles.patches]
    block_w, block_h = len(grids) * (grid_w + 3 * GAP) - 3 * GAP, HEADER + grid_h
    n = len(table.channels)
    per_row = max(1, min(blocks_per_row, n))
    n_rows = math.ceil(n / per_row)
    width = per_row * block_w + (per_row - 1) * BLOCK_GAP
    canvas = Image.new("RGB", (width, TITLE + n_rows * (block_h + BLOCK_GAP) - BLOCK_GAP), "white")
    draw = ImageDraw.Draw(canvas)
    rf = "x".join(map(str, tiles.rf))
    draw.text((2, 4), f"{table.layer}: top {table.k} per channel  [{' | '.join(tiles.methods)} | "
                      f"image patches]  receptive field {rf} px", fill="black")
    for s, channel in enumerate(table.channels):
        r, c = divmod(s, per_row)
        left, top = c * (block_w + BLOCK_GAP), TITLE + r * (block_h + BLOCK_GAP)
        draw.text((left, top + 2), f"channel {channel}  max {float(table.values[s, 0]):.3g}", fill="black")
        for g, tiles_g in enumerate(grids):
            _paste_grid(canvas, tiles_g[s], px, left + g * (grid_w + 3 * GAP), top + HEADER)
    return canvas


def stack(figures: Sequence[Image.Image], gap: int = 16) -> Image.Image:
    """Figures one above the other (the paper's one-row-per-layer figure)."""
    width = max(f.width for f in figures)
    canvas = Image.new("RGB", (width, sum(f.height for f in figures) + gap * (len(figures) - 1)), "white")
    top = 0
    for f in figures:
        canvas.paste(f, (0, top))
        top += f.height + gap
    return canvas


def write_index(path: Path, title: str, facts: dict[str, str], figures: dict[str, str],
                tiles: dict[str, LayerTiles]) -> None:
    """A self-contained ``index.html``: run facts, each layer's PNG, a table of the top values."""
    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1em}td,th{padding:2px 8px;text-align:right}"
             "img{max-width:100%}</style>", f"<h1>{esc(title)}</h1><ul>"]
    parts += [f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in facts.items()]
    parts.append("</ul>")
    for layer, png in figures.items():
        table = tiles[layer].table
        parts.append(f"<h2>{esc(layer)}</h2><img src='{esc(png)}' alt='{esc(layer)}'>")
        parts.append("<table><tr><th>channel</th><th>top activations (image index)</th></tr>")
        for s, c in enumerate(table.channels):
            cells = ", ".join(f"{float(v):.3g} (#{int(i)})" for v, i in zip(table.values[s], table.image[s]) if i >= 0)
            parts.append(f"<tr><td>{c}</td><td style='text-align:left'>{esc(cells)}</td></tr>")
        parts.append("</table>")
    write_text(path, "\n".join(parts) + "\n", "index page")


def log_tensorboard(log_dir: Path, figures: dict[str, Image.Image], step: int = 0) -> None:
    """Each figure as a TensorBoard image ``zf/<name>``."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    try:
        for name, fig in figures.items():
            writer.add_image(f"zf/{name}", np.asarray(fig), step, dataformats="HWC")
    finally:
        writer.close()


def save_png(fig: Image.Image, path: Path, copy_to: Optional[Path] = None) -> Path:
    """Write ``fig`` as PNG (and a copy, e.g. for docs/); returns ``path``."""
    write_image(path, fig, "figure", optimize=True)
    if copy_to is not None:
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        write_image(copy_to, fig, "figure", key="figure_out", optimize=True)
    return path


__all__ = ["to_display", "heatmap", "layer_figure", "stack", "write_index", "log_tensorboard", "save_png"]
