"""The documentation's figures from a trained CamVid model (real street images, not a synthetic task).

    python -m segdeconv.visualize.figures --ckpt checkpoints/camvid_segnet_cpu.pt \\
        --camvid ../shared/data/camvid --out docs

Writes ``camvid_conv5_units.png`` (Zeiler & Fergus 2014 Fig. 2: conv5_3 units' top projections and
their image patches), ``camvid_evidence.png`` ("Car" and "Pedestrian" evidence through the whole
network, Z&F §2.1, and the "Car" occlusion map, §4.2) and ``camvid_switch_maps.png`` (where each
decoder stage's unpooling puts its values, SegNet §3). Images are taken at the model's training size.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from segdeconv.data.image import denormalize
from segdeconv.engine.writer import write_figure
from segdeconv.errors import ConfigError
from segdeconv.palette import colorize
from segdeconv.trained import Trained, load_trained
from segdeconv.visualize.decoder_maps import SwitchMap, switch_maps
from segdeconv.visualize.evidence import class_evidence
from segdeconv.visualize.grid import tile_grid
from segdeconv.visualize.occlusion import occlusion_map
from segdeconv.visualize.projection import Projector
from segdeconv.visualize.render import heatmap, to_display
from segdeconv.visualize.topk import collect_tiles, search_topk

IMAGES = ("0016E5_08053", "0016E5_07963", "0016E5_08101")  # CamVid val frames with cars and pedestrians
CODE_COLOURS = torch.tensor([[0.90, 0.25, 0.20], [0.20, 0.65, 0.25], [0.20, 0.40, 0.90], [0.95, 0.75, 0.10]])


def load_images(trained: Trained, root: str, names: Sequence[str]) -> tuple[list[Tensor], list[Tensor]]:
    """CamVid val images by file stem at the model's training size: normalized and shown ([0, 1])."""
    from segdeconv.data.camvid import CamVid

    data = CamVid(root, "val")
    stems = [Path(p).stem for p in data.image_paths]
    missing = [n for n in names if n not in stems]
    if missing:
        raise ConfigError(f"{missing[0]} is not a CamVid val image under {root}; pass --images with val file stems")
    size = trained.image_size or tuple(data[0][0].shape[-2:])
    xs = [F.interpolate(data[stems.index(n)][0][None], size=size, mode="bilinear", align_corners=False)[0] for n in names]
    return xs, [denormalize(x, data.mean, data.std).clamp(0, 1) for x in xs]


def _rgb(a) -> Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255


def units_figure(trained: Trained, images: Any, layer: str = "conv5_3", units: int = 5, k: int = 3) -> Figure:
    """Z&F Fig. 2: the ``units`` channels of ``layer`` with the strongest activations, top-``k`` each."""
    proj = Projector.from_model(trained.model)
    n = proj.num_channels(layer) or 1
    everything = search_topk(proj, images, [layer], list(range(n)), 1, show_progress=False)[layer]
    best = everything.values[:, 0].argsort(descending=True)[:units].tolist()
    tables = search_topk(proj, images, [layer], best, k, show_progress=False)
    tiles = collect_tiles(proj, images, tables, "deconvnet", show_progress=False)[layer]
    shown = to_display(tiles.projections["deconvnet"])
    rows = [[shown[s, r] for r in range(k)] + [tiles.patches[s, r] for r in range(k)] for s in range(len(best))]
    cols = [f"projection #{r + 1}" for r in range(k)] + [f"image patch #{r + 1}" for r in range(k)]
    rf = "x".join(map(str, tiles.rf))
    return tile_grid(rows, [f"{layer}\nunit {c}" for c in best], cols,
                     f"{layer} of the CamVid SegNet: top-{k} over {len(images)} val images\ndeconvnet projections "
                     f"(grey = 0) | {rf}-px receptive fields (black: off the image)", tile_in=1.2)


def evidence_figure(trained: Trained, images: list[Tensor], shown: list[Tensor],
                    classes: Sequence[str] = ("Car", "Pedestrian"), patch: int = 32, stride: int = 16) -> Figure:
    """Per image: the image, the prediction, each class's deconvnet evidence and the first class's occlusion map."""
    rows = []
    for x, rgb in zip(images, shown):
        with torch.no_grad():
            pred = trained.model(x[None])[0].argmax(0)
        row: list[Optional[Tensor]] = [rgb, _rgb(colorize(pred.numpy(), trained.palette)) * 0.6 + rgb * 0.4]
        for c in classes:
            idx = trained.class_names.index(c)
            ok = bool((pred == idx).any())
            row.append(_rgb(heatmap(class_evidence(trained.model, x, idx))) if ok else None)
        ok = bool((pred == trained.class_names.index(classes[0])).any())
        occ = occlusion_map(trained.model, x, classes[0], class_names=trained.class_names, patch=patch, stride=stride,
                            batch_size=32) if ok else None
        row.append(_rgb(heatmap(occ, rgb, alpha=0.65)) if occ is not None else None)
        rows.append(row)
    cols = ["image", "prediction"] + [f"'{c}' evidence\n(deconvnet, grey = 0)" for c in classes] + \
           [f"'{classes[0]}' occlusion, {patch}-px patch\nred: probability drops"]
    return tile_grid(rows, [f"val {i + 1}" for i in range(len(images))], cols,
                     "What made the CamVid SegNet say 'Car' and 'Pedestrian': evidence projected through decoder "
                     "and encoder (Z&F §2.1)\nand occlusion (Z&F §4.2)", tile_in=1.9, aspect=0.75)


def switch_tile(m: SwitchMap, size: tuple[int, int]) -> Tensor:
    """A switch map in colour (the position most channels chose), darker where channels disagree."""
    rgb = CODE_COLOURS[m.mode().long()].permute(2, 0, 1) * m.agreement()  # black: no channel active
    return F.interpolate(rgb[None], size=size, mode="nearest")[0]


def switch_figure(trained: Trained, images: list[Tensor], shown: list[Tensor]) -> Figure:
    """Per image: the image and each decoder stage's switch map (deepest first), with a key."""
    key = F.interpolate(CODE_COLOURS.view(2, 2, 3).permute(2, 0, 1)[None], size=(60, 80), mode="nearest")[0]
    rows, names = [], []
    for x, rgb in zip(images, shown):
        maps = switch_maps(trained.model, x)
        names = [f"{m.stage}\n{m.codes.shape[-2]}x{m.codes.shape[-1]} switches" for m in maps]
        rows.append([rgb] + [switch_tile(m, (int(rgb.shape[-2]), int(rgb.shape[-1]))) for m in maps] + [key])
    return tile_grid(rows, [f"val {i + 1}" for i in range(len(images))], ["image"] + names + ["key: position\nin the 2x2 window"],
                     "Where each decoder stage unpools (SegNet §3): the 2x2 position most active channels' max "
                     "came from;\ndarker = channels disagree, black = no channel active (all-zero windows)", tile_in=1.6, aspect=0.75)


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="checkpoints/camvid_segnet_cpu.pt")
    ap.add_argument("--camvid", required=True, help="CamVid root (SegNet layout: val/, valannot/)")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--images", nargs="+", default=list(IMAGES), help="val file stems")
    ap.add_argument("--search", type=int, default=20, help="val images searched for the conv5_3 units")
    a = ap.parse_args(argv)
    trained = load_trained(a.ckpt)
    out = Path(a.out)
    xs, shown = load_images(trained, a.camvid, a.images)
    write_figure(out / "camvid_switch_maps.png", switch_figure(trained, xs, shown), dpi=60)
    from segdeconv.data.camvid import CamVid

    data = CamVid(a.camvid, "val")
    pool = [F.interpolate(data[i][0][None], size=xs[0].shape[-2:], mode="bilinear", align_corners=False)[0]
            for i in range(0, len(data), max(1, -(-len(data) // a.search)))][:a.search]
    write_figure(out / "camvid_conv5_units.png", units_figure(trained, pool), dpi=60)
    write_figure(out / "camvid_evidence.png", evidence_figure(trained, xs, shown), dpi=60)


if __name__ == "__main__":
    main()
