"""Decoder switch maps and decoder-unit projections (SegNet §3, Z&F §2.1 through the decoder); feature evolution (Z&F Fig. 4)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from infer_helpers import not_inplace
from test_evidence import CAPTUM, build
from torch import nn

from segdeconv.engine.checkpoint import FORMAT, save_checkpoint, step_checkpoint_path
from segdeconv.errors import ConfigError
from segdeconv.models import Pool, registry
from segdeconv.models.layers import Switches, Unpool
from segdeconv.trained import load_trained
from segdeconv.visualize import Projector, collect_tiles, search_topk
from segdeconv.visualize.decoder_maps import decoder_activations, decoder_tiles, project_decoder_unit, recorded, search_decoder_topk, stage_names, switch_maps
from segdeconv.visualize.evolution import checkpoint_paths, evolution_figure, feature_evolution

captum = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
TINY = {"name": "segnet", "num_classes": 3, "classifier_kernel": 3,
        "encoder": {"name": "vgg", "arch": "vgg11", "width": 0.125, "num_stages": 2}}


def pool_indices(net: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """Each encoder pool's int64 indices and pre-pool size, from a plain forward through the features."""
    out, h = [], x[None]
    with torch.no_grad():
        for m in net.encoder.features:
            if isinstance(m, Pool):
                out.append((F.max_pool2d(h, 2, 2, ceil_mode=m.ceil_mode, return_indices=True)[1][0], tuple(h.shape[-2:])))
                h = m(h)[0]
            else:
                h = m(h)
    return out


@pytest.mark.parametrize("name", ["segnet", "segnet_compact"])
def test_switch_maps_are_the_pool_positions_per_stage(name):
    net, size = build(name)  # 3 pools, odd sizes (ceil mode: partial last windows)
    x = torch.randn(3, *size, generator=torch.Generator().manual_seed(4))
    maps = switch_maps(net, x)
    assert [m.stage for m in maps] == stage_names(net) == ["decoder3", "decoder2", "decoder1"]
    for m, (idx, pre) in zip(maps, reversed(pool_indices(net, x))):
        assert m.size == pre and m.codes.shape == idx.shape and m.codes.dtype == torch.uint8
        assert set(m.codes.unique().tolist()) <= {0, 1, 2, 3}
        y, xx = idx // pre[1], idx % pre[1]
        assert torch.equal(m.codes.long(), (y % 2) * 2 + xx % 2)
        # the code is where unpooling puts a value: dy = code // 2, dx = code % 2 in each 2×2 window
        placed = Unpool()(torch.ones(1, *idx.shape), Switches(idx[None], pre))[0]
        dy, dx = m.codes.long() // 2, m.codes.long() % 2
        rows, cols = 2 * torch.arange(idx.shape[1]).view(1, -1, 1) + dy, 2 * torch.arange(idx.shape[2]).view(1, 1, -1) + dx
        assert bool((placed[torch.arange(idx.shape[0]).view(-1, 1, 1), rows, cols] == 1).all())
        assert m.mode().shape == idx.shape[1:] and bool((m.agreement() >= 0).all() and (m.agreement() <= 1).all())
    assert not net.training


class Unit(nn.Module):
    """captum's target: one decoder unit's activation, per batch item."""

    def __init__(self, net: nn.Module, stage: str, c: int, y: int, x: int) -> None:
        super().__init__()
        self.net, self.stage, self.c, self.y, self.x = net, stage, c, y, x

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        out: dict[str, torch.Tensor] = {}
        with recorded(self.net, out):
            self.net(inp)
        return out[self.stage][:, self.c, self.y, self.x]


@pytest.mark.parametrize("stage, pos", [("decoder3", (5, 7)), ("decoder1", (20, 30))])
def test_decoder_unit_projection_matches_captum(stage, pos):
    net, size = build("segnet")
    x = torch.randn(3, *size, generator=torch.Generator().manual_seed(5))
    value = float(decoder_activations(net, x)[stage][0, 1, pos[0], pos[1]])
    assert value != 0
    for method, cls in CAPTUM.items():
        got = project_decoder_unit(net, x, stage, 1, pos, method)
        attr = getattr(captum, cls)(Unit(not_inplace(net), stage, 1, *pos).eval())
        want = attr.attribute(x[None].clone().requires_grad_(), **({"abs": False} if method == "gradient" else {}))[0] * value
        assert got.shape == x.shape and want.abs().max() > 0
        assert (got - want).abs().max() <= 1e-5 * want.abs().max(), method


def test_decoder_topk_and_tiles():
    net, size = build("segnet")
    images = [torch.randn(3, *size, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    tables = search_decoder_topk(net, images, ["decoder2", "decoder1"], [0, 2], k=2)
    acts = [decoder_activations(net, im)["decoder2"][0, 2].max() for im in images]
    assert float(tables["decoder2"].values[1, 0]) == pytest.approx(float(max(acts)))
    tiles = decoder_tiles(net, images, tables["decoder2"])
    assert tiles.shape == (2, 2, 3, *size) and tiles.abs().sum() > 0
    for kwargs, message in [(dict(stages=["decoder4"], channels=[0]), r"unknown decoder stage 'decoder4'; valid: decoder3"),
                            (dict(stages=["decoder1"], channels=[99]), r"channel 99 is out of range for decoder1")]:
        with pytest.raises(ConfigError, match=message):
            search_decoder_topk(net, images, **kwargs)
    with pytest.raises(ConfigError, match="has no encoder and mirrored decoder"):
        switch_maps(nn.Conv2d(3, 3, 1), images[0])


def write_run(tmp_path, steps) -> list:
    """A run dir whose checkpoints/ holds step checkpoints of the same tiny SegNet, trained apart (random weights)."""
    paths = []
    for s in steps:
        torch.manual_seed(s)
        model = registry.build(TINY)
        paths.append(save_checkpoint({"format": FORMAT, "arch": TINY, "model": model.state_dict(), "step": s,
                                      "config": {}}, step_checkpoint_path(tmp_path / "checkpoints", s)))
    return paths


def test_feature_evolution_projects_the_same_units_in_every_checkpoint(tmp_path):
    paths = write_run(tmp_path, [20, 5, 100])
    images = [torch.randn(3, 40, 52, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    evo = feature_evolution(tmp_path, "conv2_1", [0, 3], images, k=2)
    assert evo.steps == [5, 20, 100] and evo.paths == sorted(paths)
    assert evo.projections.shape[:3] == evo.patches.shape[:3] == (2, 3, 2) and evo.values.shape == (2, 3, 2)
    proj = Projector.from_model(load_trained(evo.paths[1]).model)  # the middle checkpoint, directly
    tiles = collect_tiles(proj, images, search_topk(proj, images, ["conv2_1"], [0, 3], 2, show_progress=False),
                          show_progress=False)["conv2_1"]
    assert torch.equal(evo.projections[:, 1], tiles.projections["deconvnet"])
    assert not torch.equal(evo.projections[:, 0], evo.projections[:, 1])
    fig = evolution_figure(evo)
    assert len(fig.axes) == 2 * 4 and fig.axes[0].get_title() == "step 5" and fig.axes[3].get_title().startswith("image patch")
    assert checkpoint_paths(paths[:2]) == paths[:2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no step checkpoints"):
        feature_evolution(tmp_path / "empty", "conv2_1", [0], images)
    with pytest.raises(ConfigError, match="is not a run dir or a checkpoints folder"):
        checkpoint_paths(tmp_path / "missing")


def test_visualize_cli_writes_switch_maps_and_evolution(tiny_ckpt, tmp_path):
    from conftest import compose_cfg

    from segdeconv.tasks.visualize import visualize

    cfg = compose_cfg([f"ckpt_path={tiny_ckpt}", f"output_dir={tmp_path}", "progress=false", "layers=[]", "images=2",
                       "decoder=true", f"evolution.checkpoints=[{tiny_ckpt},{tiny_ckpt}]", "evolution.layer=conv2_1",
                       "channels=[0,1]", "limit=3"], "visualize")
    facts = visualize(cfg)
    assert facts["files"] == ["decoder_switch_maps.png", "evolution.png"]
    assert all((tmp_path / f).stat().st_size > 1000 for f in facts["files"])
