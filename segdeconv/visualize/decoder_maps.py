"""The decoder side of an encoder–decoder: switch maps and what decoder units respond to.

* **Switch maps** (SegNet §3; Zeiler & Fergus 2014 §2.1): each decoder stage unpools with the
  switches of its mirrored encoder pool, putting every value at the position of its 2×2 window's
  max. :func:`switch_maps` gives, per decoder stage, that position as a code ``dy·2 + dx`` ∈
  {0, 1, 2, 3} for every channel and pooled unit.
* **Decoder units** (Z&F §2.1 carried through the decoder): the output of a decoder stage is
  projected back to the pixels through the decoder's own unpooling and transposed filters, then the
  encoder's, by :func:`~segdeconv.visualize.evidence.input_gradient` (the rule of
  :func:`~segdeconv.visualize.evidence.backward_rule`: deconvnet, guided backprop or gradient);
  the top-``k`` units over a set of images are kept in a :class:`~segdeconv.visualize.topk.TopK`.

Decoder stages are named ``decoder5`` … ``decoder1`` for VGG16 (``decoderN`` unpools with
``poolN``'s switches, deepest first, as the decoder runs).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, cast

import torch
from torch import Tensor, nn

from segdeconv.engine.checkpoint import unwrap
from segdeconv.errors import ConfigError
from segdeconv.models.layers import Pool, Switches
from segdeconv.visualize.evidence import as_batch, backward_rule, input_gradient
from segdeconv.visualize.topk import TopK, first_tensor


@dataclass
class SwitchMap:
    """Where decoder stage ``stage`` puts each value: ``codes`` ``(C, h, w)`` uint8 ``dy·2 + dx``
    at the pooled resolution, unpooled to ``size`` ``(H, W)``."""

    stage: str
    codes: Tensor
    size: tuple[int, int]
    active: Optional[Tensor] = None  # (C, h, w) bool: the pooled max is > 0 (an all-zero window ties: code 0)

    def mode(self) -> Tensor:
        """``(h, w)``: the position most active channels chose (ties: the lower code)."""
        return self.counts().argmax(0).to(torch.uint8)

    def agreement(self) -> Tensor:
        """``(h, w)`` in [0, 1]: the fraction of active channels that chose :meth:`mode` (0: none active)."""
        c = self.counts()
        return c.max(0).values / c.sum(0).clamp_min(1)

    def counts(self) -> Tensor:
        """``(4, h, w)``: how many active channels chose each position."""
        live = self.active if self.active is not None else torch.ones_like(self.codes, dtype=torch.bool)
        return torch.stack([((self.codes == k) & live).sum(0) for k in range(4)]).float()


def _decoder(model: nn.Module) -> Any:
    net = unwrap(model)
    dec, enc = getattr(net, "decoder", None), getattr(net, "encoder", None)
    if dec is None or enc is None or not isinstance(getattr(dec, "stages", None), nn.ModuleList):
        raise ConfigError(f"{type(net).__name__} has no encoder and mirrored decoder (.decoder.stages); "
                          f"use SegNet, SegNet-Basic or DeconvNet")
    return net


def stage_names(model: nn.Module) -> list[str]:
    """``["decoder5", …, "decoder1"]``: the decoder's stages in the order they run."""
    n = len(_decoder(model).decoder.stages)
    return [f"decoder{n - i}" for i in range(n)]


def window_codes(indices: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 ``dy·2 + dx`` of flat max-pool indices into a map of ``size`` (windows start at even rows/cols)."""
    if indices.dtype == torch.uint8:
        return indices  # compact switches are these codes already
    y, x = indices // size[1], indices % size[1]
    return ((y % 2) * 2 + x % 2).to(torch.uint8)


def switch_maps(model: nn.Module, image: Tensor) -> list[SwitchMap]:
    """The switch map of every decoder stage for ``image`` ``(3, H, W)`` (normalized), deepest first."""
    net = _decoder(model)
    pools: list[tuple[Tensor, Switches]] = []
    with backward_rule(net, "gradient"), torch.no_grad():  # eval mode, lean off; restored after
        x = as_batch(image).to(next(net.parameters()).device, torch.float32)
        adapter = getattr(net, "input_adapter", None)
        x = adapter(x) if adapter is not None else x
        for m in net.encoder.features:  # the encoder's forward, keeping each pool's values and switches
            x = m(x)
            if isinstance(m, Pool):
                x, sw = x
                pools.append((x[0], sw))
    return [SwitchMap(name, window_codes(sw.indices[0], sw.size), sw.size, y > 0)
            for name, (y, sw) in zip(stage_names(net), reversed(pools))]


@contextmanager
def recorded(net: nn.Module, out: dict[str, Tensor]) -> Iterator[None]:
    """Within: every decoder stage's output lands in ``out[name]`` on each forward.

    The hook sits on each stage's last module, which runs whether the stage runs as one
    ``nn.Sequential`` or module by module (a memory policy, :mod:`segdeconv.models.memory`)."""
    handles = [stage[-1].register_forward_hook(lambda _m, _i, o, _n=name: out.__setitem__(_n, o))
               for name, stage in zip(stage_names(net), _decoder(net).decoder.stages)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def decoder_activations(model: nn.Module, image: Tensor) -> dict[str, Tensor]:
    """Every decoder stage's output ``(1, C, h, w)`` for ``image`` (eval mode, no autograd)."""
    net, out = _decoder(model), cast(dict[str, Tensor], {})
    with backward_rule(net, "gradient"), torch.no_grad(), recorded(net, out):
        net(as_batch(image).to(next(net.parameters()).device, torch.float32))
    return out


def _check_stage(net: nn.Module, stage: str, channels: Sequence[int]) -> None:
    names = stage_names(net)
    if stage not in names:
        raise ConfigError(f"unknown decoder stage {stage!r}; valid: {', '.join(names)}")
    convs = [m for m in _decoder(net).decoder.stages[names.index(stage)] if isinstance(m, nn.Conv2d)]
    width = int(convs[-1].out_channels) if convs else 0
    bad = [c for c in channels if convs and not 0 <= int(c) < width]
    if bad:
        raise ConfigError(f"channel {bad[0]} is out of range for {stage} ({width} channels: 0..{width - 1})")


def search_decoder_topk(model: nn.Module, images: Any, stages: Sequence[str], channels: Sequence[int],
                        k: int = 4) -> dict[str, TopK]:
    """The top-``k`` activations (one per image, at its arg-max) of ``channels`` of each decoder stage."""
    net = _decoder(model)
    for stage in stages:
        _check_stage(net, stage, channels)
    tables = {s: TopK.empty(s, channels, k) for s in stages}
    for i in range(len(images)):
        acts = decoder_activations(net, first_tensor(images[i]))
        for s, table in tables.items():
            table.update(acts[s], i)
    return tables


def project_decoder_unit(model: nn.Module, image: Tensor, stage: str, channel: int,
                         position: tuple[int, int], method: str = "deconvnet") -> Tensor:
    """Project unit ``(stage, channel, position)`` to the pixels: ``(3, H, W)``, seeded with its value (Z&F)."""
    net = _decoder(model)
    _check_stage(net, stage, [channel])

    def target(n: nn.Module, x: Tensor) -> Tensor:
        out: dict[str, Tensor] = {}
        with recorded(n, out):
            n(x)
        a = out[stage][0, channel, position[0], position[1]]
        return a * a.detach()  # gradient = value · ∂a/∂x: the activation keeps its value, as in Z&F

    return input_gradient(net, image, method, target)


def decoder_tiles(model: nn.Module, images: Any, table: TopK, method: str = "deconvnet") -> Tensor:
    """Whole-image projections ``(C, k, 3, H, W)`` of a decoder table's winners (zero: empty slot).

    A decoder unit of SegNet sees (nearly) the whole image, so the tiles are not cropped.
    """
    shape = first_tensor(images[0]).shape
    out = torch.zeros(len(table.channels), table.k, *shape)
    for hit in table.hits():
        out[hit.slot, hit.rank] = project_decoder_unit(model, first_tensor(images[hit.image]), hit.layer,
                                                       hit.channel, (hit.y, hit.x), method).cpu()
    return out


__all__ = ["SwitchMap", "stage_names", "window_codes", "switch_maps", "decoder_activations",
           "search_decoder_topk", "project_decoder_unit", "decoder_tiles"]
