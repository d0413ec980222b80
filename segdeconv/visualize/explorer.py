"""The explorer: one self-contained folder (``index.html`` + ``img/`` + ``units/``) to click through what a
segmentation network recognised and where (Zeiler & Fergus 2014, §2.1 projections, §4.2 occlusion, Fig. 2
top-k units).

Per image: the image, the prediction overlay, per-class pixel share and confidence (and, for a model
with dropout, the Monte-Carlo uncertainty, Kendall et al. 2015); per class, its evidence map and occlusion
map; per pixel, the evidence of the nearest precomputed cell centre. Per searched layer and unit, its
top-k projections and image patches. Everything is precomputed (:mod:`segdeconv.visualize.classmaps`)
and written by the one writer; photographs and maps are JPEG, label maps PNG, so ten 180×240 CamVid
images stay a few MB. The page opens from ``file://``: no server, no internet, no external JS/CSS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from segdeconv.engine.writer import write_image, write_text
from segdeconv.visualize.classmaps import ImageMaps, MapSettings
from segdeconv.visualize.explorer_page import page
from segdeconv.visualize.render import heatmap, to_display
from segdeconv.visualize.topk import LayerTiles

JPEG = {"quality": 85, "optimize": True}
UNIT_PX = 96  # px of one top-k tile in the unit browser
GAP = 3
CLASS_NOTE = {"guided_backprop": "; guided-backprop maps change little from class to class (Nie et al. 2018): "
                                  "compare the occlusion map, or run evidence.method=gradient"}
HEAT_ALPHA = 0.65  # maps over a faded copy of the image, so they can be placed


def _save(folder: Path, rel: str, picture: np.ndarray, what: str) -> str:
    """Write ``picture`` (H, W[, 3|4]) uint8 as ``folder/rel``; returns ``rel`` (the page's src)."""
    options = JPEG if rel.endswith(".jpg") else {"optimize": True}
    write_image(folder / rel, Image.fromarray(picture), what, **options)
    return rel


def evidence_picture(evidence: Tensor, shown: Tensor) -> np.ndarray:
    """A class or pixel evidence ``(3, H, W)`` as its magnitude ``Σ_channels |e|`` in red over the faded
    image: where the evidence lies reads at a glance (the signed Z&F colours of
    :func:`~segdeconv.visualize.render.heatmap` show what it looks like, in ``evidence/*.png``)."""
    return heatmap(evidence.abs().sum(0), shown, HEAT_ALPHA)


def _grey(m: Tensor) -> np.ndarray:
    return (m.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def _class_rows(m: ImageMaps, saved: dict[tuple[str, int], str]) -> list[dict[str, Any]]:
    """Per class predicted or mapped: pixel share, mean confidence (and uncertainty) over its pixels, maps."""
    label, conf = m.label, m.probs.max(0).values
    rows = []
    for c in range(int(m.probs.shape[0])):
        mask = label == c
        share = float(mask.float().mean())
        if share == 0 and c not in m.evidence and c not in m.occlusion:
            continue
        unc = float(m.uncertainty[mask].mean()) if m.uncertainty is not None and share > 0 else 0.0
        rows.append({"c": c, "share": share, "conf": float(conf[mask].mean()) if share > 0 else 0.0, "unc": unc,
                     "evidence": saved.get(("ev", c)), "occlusion": saved.get(("occ", c))})
    return rows


def image_entry(folder: Path, m: ImageMaps, palette: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Write one image's pictures into ``folder/img`` and return its entry of the page's data."""
    n, (h, w) = m.name, m.shown.shape[-2:]
    shown = m.shown.clamp(0, 1)
    colours = np.array([[*map(int, p), 255] for p in palette], dtype=np.uint8)  # RGBA per class
    entry: dict[str, Any] = {
        "name": n, "h": int(h), "w": int(w), "mc": m.mc_samples, "grid": m.grid,
        "image": _save(folder, f"img/{n}.jpg", _grey(shown.permute(1, 2, 0)), "explorer image"),
        "pred": _save(folder, f"img/{n}_pred.png", colours[m.label.numpy()], "explorer prediction"),
        "conf": _save(folder, f"img/{n}_conf.png", _grey(m.probs.max(0).values), "explorer confidence"),
        "unc": None if m.uncertainty is None else _save(folder, f"img/{n}_unc.png", _grey(m.uncertainty),
                                                        "explorer uncertainty"),
    }
    saved: dict[tuple[str, int], str] = {}
    for c, ev in m.evidence.items():
        saved["ev", c] = _save(folder, f"img/{n}_ev{c}.jpg", evidence_picture(ev, shown), "explorer evidence map")
    for c, occ in m.occlusion.items():
        saved["occ", c] = _save(folder, f"img/{n}_occ{c}.jpg", heatmap(occ, shown, HEAT_ALPHA), "explorer occlusion map")
    entry["classes"] = _class_rows(m, saved)
    entry["cells"] = [{"y": k.y, "x": k.x, "label": k.label, "p": float(m.probs[k.label, k.y, k.x]),
                       "src": _save(folder, f"img/{n}_cell{i}.jpg", evidence_picture(k.evidence, shown),
                                   "explorer pixel evidence")}
                      for i, k in enumerate(m.cells)]
    return entry


def _tile(t: Tensor) -> np.ndarray:
    """``(3, h, w)`` in [0, 1] → ``UNIT_PX`` square uint8 (antialiased)."""
    t = F.interpolate(t[None].float(), size=(UNIT_PX, UNIT_PX), mode="bilinear", antialias=True, align_corners=False)[0]
    return _grey(t.permute(1, 2, 0))


def unit_strip(tiles: LayerTiles, slot: int) -> np.ndarray:
    """One unit's picture: a row of top-k projections per method, then a row of its image patches."""
    rows = [to_display(p[slot]) for p in tiles.projections.values()] + [tiles.patches[slot]]  # each (k, 3, h, w)
    k = int(tiles.table.k)
    out = np.full((len(rows) * (UNIT_PX + GAP) - GAP, k * (UNIT_PX + GAP) - GAP, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for i in range(k):
            if int(tiles.table.image[slot, i]) >= 0:
                y, x = r * (UNIT_PX + GAP), i * (UNIT_PX + GAP)
                out[y:y + UNIT_PX, x:x + UNIT_PX] = _tile(row[i])
    return out


def unit_entries(folder: Path, units: dict[str, LayerTiles]) -> list[dict[str, Any]]:
    """Write every searched unit's strip into ``folder/units`` and return the layer browser's data."""
    out = []
    for layer, tiles in units.items():
        t = tiles.table
        channels = [{"channel": c, "values": [float(v) for v in t.values[s] if torch.isfinite(v)],
                     "src": _save(folder, f"units/{layer}_{c}.png", unit_strip(tiles, s), "explorer unit")}
                    for s, c in enumerate(t.channels)]
        out.append({"layer": layer, "rf": "x".join(map(str, tiles.rf)), "methods": tiles.methods, "channels": channels})
    return out


def region_text(s: MapSettings) -> str:
    r = s.region
    if r is None:
        return "its predicted mask"
    return f"pixel (y {r[0]}, x {r[1]})" if len(r) == 2 else f"the box y {r[0]}:{r[2]}, x {r[1]}:{r[3]}"


def write_explorer(folder: Path, images: Sequence[ImageMaps], units: dict[str, LayerTiles],
                   class_names: Sequence[str], palette: Sequence[Sequence[int]], facts: dict[str, str],
                   settings: Optional[MapSettings] = None, title: str = "segdeconv explorer") -> Path:
    """Write the explorer of ``images`` (and the unit browser of ``units``) into ``folder``; returns
    ``folder/index.html``."""
    s = settings or MapSettings()
    grid = images[0].grid if images else 0
    data = {
        "facts": facts, "method": s.method, "region": region_text(s), "patch": s.patch,
        "note": (f"Evidence: the class's logits projected through decoder and encoder with the {s.method} rule "
                 f"(Zeiler & Fergus 2014 §2.1){CLASS_NOTE.get(s.method, '')}. Occlusion: {s.patch} px patch, stride {s.stride} (§4.2). "
                 f"Pixel evidence: precomputed at the centres of a {grid} × {grid} grid of cells; a click shows "
                 f"the nearest cell's map."),
        "classes": [{"name": n, "color": "#%02x%02x%02x" % tuple(int(v) for v in palette[i][:3])}
                    for i, n in enumerate(class_names)],
        "images": [image_entry(folder, m, palette) for m in images],
        "units": unit_entries(folder, units),
    }
    return write_text(folder / "index.html", page(title, data), "explorer page")


__all__ = ["write_explorer", "image_entry", "unit_entries", "unit_strip"]
