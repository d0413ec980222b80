"""A labelled grid of image tiles as a matplotlib figure (Zeiler & Fergus 2014 Figs. 2 and 4 layout).

Rows and columns carry text labels (units, checkpoints, ranks); each tile is an RGB image in
[0, 1]. Figures are rendered off-screen (``matplotlib.figure.Figure``, no pyplot state) and written
with :func:`segdeconv.engine.writer.write_figure`.
"""
from __future__ import annotations

from typing import Optional, Sequence

from matplotlib.figure import Figure
from torch import Tensor


def tile_grid(tiles: Sequence[Sequence[Optional[Tensor]]], row_labels: Sequence[str],
              col_labels: Sequence[str], title: str = "", tile_in: float = 1.1, aspect: float = 1.0) -> Figure:
    """``tiles[r][c]`` ``(3, h, w)`` in [0, 1] (``None``: an empty cell) in a labelled grid.

    ``row_labels`` go left of each row, ``col_labels`` above each column; ``tile_in`` is the tile
    width in inches (100 dpi when written), ``aspect`` its height / width.
    """
    rows, cols = len(tiles), max(len(r) for r in tiles)
    fig = Figure(figsize=(cols * tile_in + 1.0, rows * (tile_in * aspect + 0.3) + (0.4 if title else 0.0)),
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            t = tiles[r][c] if c < len(tiles[r]) else None
            if t is not None:
                ax.imshow(t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="antialiased")
            else:
                ax.set_axis_off()
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


__all__ = ["tile_grid"]
