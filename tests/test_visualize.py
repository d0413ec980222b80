"""Zeiler & Fergus projection: parity with captum / autograd, hand-computed cases, top-k search."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from infer_helpers import not_inplace
from torch import nn

from segdeconv.errors import ConfigError
from segdeconv.models import SegNet, VGGEncoder
from segdeconv.models.layers import Pool
from segdeconv.visualize import Projector, collect_tiles, search_topk
from segdeconv.visualize.geometry import crop, full_box, map_sizes
from segdeconv.visualize.render import layer_figure, to_display, write_index

TOL = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")  # captum


def tiny_vgg(arch: str = "vgg16", seed: int = 0) -> VGGEncoder:
    """A narrow VGG16-BN (4..32 channels) with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    enc = VGGEncoder(arch, width=1 / 16, compact_switches=False)
    for m in enc.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return enc.eval()


class Unit(nn.Module):
    """Output = one activation (layer, channel, y, x): captum's scalar target."""

    def __init__(self, features: nn.Sequential, end: int, channel: int, y: int, x: int) -> None:
        super().__init__()
        self.features, self.at = features[:end + 1], (channel, y, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.features:
            x = m(x)[0] if isinstance(m, Pool) else m(x)
        c, y, xx = self.at
        return x[:, c, y, xx]


def reference(method: str, enc: VGGEncoder, proj: Projector, x: torch.Tensor, layer: str,
              channel: int, pos: tuple[int, int]) -> torch.Tensor:
    """captum Deconvolution / GuidedBackprop, or plain autograd, of the chosen activation."""
    end = proj.layer_index(layer)
    inp = x[None].clone().requires_grad_()
    if method == "gradient":
        out = Unit(enc.features, end, channel, *pos)(inp)  # the real in-place model
        return torch.autograd.grad(out.sum(), inp)[0][0]
    captum = pytest.importorskip("captum.attr")
    cls = {"deconvnet": captum.Deconvolution, "guided_backprop": captum.GuidedBackprop}[method]
    return cls(Unit(not_inplace(enc.features), end, channel, *pos).eval()).attribute(inp)[0]


@pytest.fixture(scope="module")
def vgg() -> tuple[VGGEncoder, Projector, torch.Tensor]:
    enc = tiny_vgg()
    torch.manual_seed(1)
    return enc, Projector.from_model(enc), torch.randn(3, 45, 61)  # odd sizes: ceil pools


@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop", "gradient"])
@pytest.mark.parametrize("layer", ["conv1_2", "pool2", "conv3_3", "conv4_3"])
def test_parity_with_captum_and_autograd(vgg, method, layer):
    enc, proj, x = vgg
    for channel in (0, 3):
        top = proj.top_position(x, layer, channel)
        for pos in (top, (0, 0)):  # an interior maximum and the corner (clipped crops)
            got = proj.project(x, layer, channel, pos, method, seed=1.0).image()
            want = reference(method, enc, proj, x, layer, channel, pos)
            assert got.shape == want.shape == x.shape
            assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize("method", ["deconvnet", "gradient"])
def test_parity_odd_size_deepest_layer(method):
    enc, x = tiny_vgg(seed=2), torch.randn(3, 225, 301)
    proj = Projector.from_model(SegNet(3, encoder=enc))  # through a model's .encoder
    assert proj.map_size("conv5_3", (225, 301)) == (15, 19)
    pos = proj.top_position(x, "conv5_3", 5)
    pr = proj.project(x, "conv5_3", 5, pos, method, seed=1.0)
    assert pr.image().shape == (3, 225, 301)
    assert (pr.image() - reference(method, enc, proj, x, "conv5_3", 5, pos)).abs().max() <= TOL


def test_seed_defaults_to_the_activation_and_position_to_the_max(vgg):
    enc, proj, x = vgg
    fmap = proj.activations(x[None], ["conv3_3"])["conv3_3"][0, 2]
    pr = proj.project(x, "conv3_3", 2)
    assert pr.position == divmod(int(fmap.argmax()), fmap.shape[-1])
    assert pr.value == pytest.approx(float(fmap.max()), rel=1e-5)
    unit = proj.project(x, "conv3_3", 2, seed=1.0)
    assert torch.allclose(pr.crop, unit.crop * pr.value, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_one_layer_projection_is_the_transposed_conv(stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=1)
    proj = Projector(nn.Sequential(conv), {"conv": 0})
    x = torch.randn(3, 9, 11)
    for y, xx in [(2, 3), (0, 0), (4, 5)]:
        pr = proj.project(x, "conv", 1, (y, xx))
        fmap = conv(x[None]).detach()
        onehot = torch.zeros_like(fmap)
        onehot[0, 1, y, xx] = fmap[0, 1, y, xx]  # Z&F: keep the activation, zero the rest
        full = F.conv_transpose2d(onehot, conv.weight.detach(), None, stride, 1)  # no bias
        want = full[0, :, :9, :11] if stride == 2 else full[0]
        assert pr.value == pytest.approx(float(fmap[0, 1, y, xx]))
        assert torch.allclose(pr.image(), want, atol=1e-6)


def test_relu_rules_differ_only_at_the_relu():
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 1, 1)
    proj = Projector(nn.Sequential(conv1, nn.ReLU(), conv2), {"out": 2})
    x = torch.randn(1, 5, 5)
    a = conv1(x[None]).detach()
    w2 = conv2.weight.detach().view(1, 2, 1, 1)
    seed = torch.ones(1, 2, 1, 1) * w2  # the signal entering the ReLU from unit (0, 0, 2, 2)
    for method, rule in [("deconvnet", seed.clamp_min(0)), ("gradient", seed * (a[..., 2:3, 2:3] > 0)),
                         ("guided_backprop", seed.clamp_min(0) * (a[..., 2:3, 2:3] > 0))]:
        g = torch.zeros_like(a)
        g[..., 2:3, 2:3] = rule
        want = F.conv_transpose2d(g, conv1.weight.detach(), padding=1)[0]
        got = proj.project(x, "out", 0, (2, 2), method, seed=1.0).image()
        assert torch.allclose(got, want, atol=1e-6), method


def test_unpooling_puts_the_signal_at_the_forward_switch():
    proj = Projector(nn.Sequential(Pool(ceil_mode=True)), {"pool": 0})
    x = torch.randn(2, 5, 7)
    for y, xx in [(0, 0), (1, 2), (2, 3)]:  # (2, 3): the partial last window of a 5×7 map
        pr = proj.project(x, "pool", 1, (y, xx))
        window = x[1, 2 * y:2 * y + 2, 2 * xx:2 * xx + 2]
        assert pr.value == pytest.approx(float(window.max()))
        img = pr.image()
        assert img.count_nonzero() == 1
        assert img[1, 2 * y:2 * y + 2, 2 * xx:2 * xx + 2].max() == pytest.approx(pr.value)


def test_bn_equals_folding_it_into_the_conv():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4).eval()
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    folded = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    folded.weight.data = conv.weight.detach() * scale.view(4, 1, 1, 1)
    x = torch.randn(3, 7, 8)
    a = Projector(nn.Sequential(conv, bn), {"l": 1}).project(x, "l", 2, (3, 3), seed=1.0)
    b = Projector(nn.Sequential(folded), {"l": 0}).project(x, "l", 2, (3, 3), seed=1.0)
    assert torch.allclose(a.image(), b.image(), atol=1e-6)


def test_receptive_fields_of_vgg16():
    proj = Projector.from_model(VGGEncoder("vgg16", width=1 / 16))
    sizes = {name: proj.receptive_box(name, 0, 0) for name in ("conv1_1", "conv3_3", "conv5_3", "pool5")}
    assert {k: (b[1] - b[0], b[3] - b[2]) for k, b in sizes.items()} == {
        "conv1_1": (3, 3), "conv3_3": (40, 40), "conv5_3": (196, 196), "pool5": (212, 212)}
    y0, y1, x0, x1 = proj.receptive_box("conv3_3", 10, 20)
    assert (y0, x0) == (10 * 4 - 18, 20 * 4 - 18)  # jump 4, offset -18


def test_projection_stays_inside_the_receptive_field(vgg):
    enc, proj, x = vgg
    pr = proj.project(x, "conv3_3", 1, (5, 7), "deconvnet")
    rf = proj.receptive_box("conv3_3", 5, 7)
    inside = crop(crop(pr.image(), full_box(x), rf), rf, full_box(x))
    assert torch.equal(inside, pr.image())


def test_clear_errors(vgg):
    enc, proj, x = vgg
    with pytest.raises(ConfigError, match=r"unknown layer 'conv6_1'; valid layers: conv1_1, conv1_2, pool1"):
        proj.project(x, "conv6_1", 0)
    with pytest.raises(ConfigError, match=r"channel 99 is out of range for conv3_3 \(16 channels: 0..15\)"):
        proj.project(x, "conv3_3", 99)
    with pytest.raises(ConfigError, match="method='saliency' is unknown"):
        proj.project(x, "conv3_3", 0, method="saliency")
    with pytest.raises(ConfigError, match="outside the 12x16 conv3_3 map"):
        proj.project(x, "conv3_3", 0, (12, 0))
    with pytest.raises(ConfigError, match="does not support"):
        Projector(nn.Sequential(nn.Conv2d(3, 3, 3), nn.Sigmoid()), {"x": 1})


def test_compact_switches_project_like_int64():
    pytest.importorskip("segdeconv.models.memory.switches")
    enc = tiny_vgg()
    compact = VGGEncoder("vgg16", width=1 / 16, compact_switches=True).eval()
    compact.load_state_dict(enc.state_dict())
    x = torch.randn(3, 37, 53)
    a = Projector.from_model(enc).project(x, "conv4_2", 1, (2, 3))
    b = Projector.from_model(compact).project(x, "conv4_2", 1, (2, 3))
    assert torch.allclose(a.image(), b.image(), atol=1e-6)


class Images(torch.utils.data.Dataset):
    """Random images of varying sizes, as (image, mask) pairs."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(3)
        self.items = [torch.randn(3, 30 + 3 * i, 41 - 2 * i, generator=g) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i], torch.zeros(1)


def test_streaming_topk_equals_brute_force(vgg):
    enc, proj, _ = vgg
    data, k, channels = Images(7), 3, [0, 5, 1]  # channels active in every image (no ties)
    tables = search_topk(proj, data, ["conv2_2", "conv4_1"], channels, k=k, show_progress=False)
    for layer, table in tables.items():
        maps = [proj.activations(img[None], [layer])[layer][0] for img, _ in data]
        for s, c in enumerate(channels):
            best = sorted(((float(m[c].max()), i) for i, m in enumerate(maps)), reverse=True)[:k]
            assert table.image[s].tolist() == [i for _, i in best]
            assert table.values[s].tolist() == pytest.approx([v for v, _ in best])
            for r, (v, i) in enumerate(best):
                assert float(maps[i][c, table.y[s, r], table.x[s, r]]) == pytest.approx(v)
    short = search_topk(proj, data, ["conv1_1"], [1], k=9, limit=4, show_progress=False)["conv1_1"]
    assert short.image[0, 4:].tolist() == [-1] * 5 and len(list(short.hits())) == 4


def test_tiles_figure_and_index(vgg, tmp_path):
    enc, proj, _ = vgg
    data = Images(5)
    tables = search_topk(proj, data, ["conv2_1", "conv3_3"], [1, 2], k=4, show_progress=False)
    tiles = collect_tiles(proj, data, tables, ["guided_backprop", "deconvnet"], show_progress=False)
    t = tiles["conv3_3"]
    assert t.methods == ["guided_backprop", "deconvnet"] and t.rf == (40, 40)
    assert t.patches.shape == t.projections["deconvnet"].shape == (2, 4, 3, 40, 40)
    assert 0 <= t.patches.min() and t.patches.max() <= 1
    hit = next(h for h in tables["conv3_3"].hits() if (h.slot, h.rank) == (1, 0))
    rf = proj.receptive_box("conv3_3", hit.y, hit.x)
    for method, tile in t.projections.items():
        pr = proj.project(data[hit.image][0], "conv3_3", hit.channel, (hit.y, hit.x), method)
        assert tile[1, 0].abs().sum() > 0 and torch.allclose(tile[1, 0], crop(pr.crop, pr.box, rf))
    shown = to_display(t.projections["deconvnet"])
    assert shown.shape == t.patches.shape and 0 <= shown.min() and shown.max() <= 1
    fig = layer_figure(t, px=20, blocks_per_row=2)  # 2x2 tiles per grid, 3 grids per channel block
    assert fig.size == (2 * (3 * (2 * 20 + 2 + 6) - 6) + 12, 22 + 16 + 2 * 20 + 2)
    write_index(tmp_path / "index.html", "t", {"method": "guided"}, {"conv3_3": "conv3_3.png"}, tiles)
    assert "conv3_3.png" in (tmp_path / "index.html").read_text()


def test_map_sizes_follow_the_pools():
    enc = VGGEncoder("vgg16", width=1 / 16, ceil_mode=False)
    assert map_sizes(list(enc.features), (225, 301))[-1] == (7, 9)
    enc = VGGEncoder("vgg16", width=1 / 16, ceil_mode=True)
    assert map_sizes(list(enc.features), (225, 301))[-1] == (8, 10)
    assert tuple(enc(torch.zeros(1, 3, 225, 301))[0].shape[-2:]) == (8, 10)
