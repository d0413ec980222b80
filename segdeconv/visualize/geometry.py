"""Sliding-window geometry of a conv/pool stack: map sizes, receptive fields, exact crop plans.

A unit's value depends only on the input inside its receptive field, and the Zeiler & Fergus
projection of a unit is zero outside it. :func:`plan_crop` turns that into an exact plan: for
every layer, the box of its output that a chosen unit reads (clipped to the map) and the zero
padding the clipped sides stand for, so the forward record and the projection can run on crops
of the size of the receptive field instead of on the whole image, with identical results.

Boxes are ``(y0, y1, x0, x1)`` half-open ranges in a layer's map coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from torch import Tensor, nn

from segdeconv.errors import ConfigError
from segdeconv.models.layers import Pool

Box = tuple[int, int, int, int]
Modules = Union[Sequence[nn.Module], nn.Sequential]  # a layer stack: a list of modules or a Sequential (slice)
# Modules that act on every position separately: they keep the box and the size unchanged.
ELEMENTWISE = (nn.ReLU, nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity)


@dataclass(frozen=True)
class Window:
    """The window (kernel, stride, padding, dilation, ceil mode) of a conv or pool, per axis."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def out_len(self, n: int, axis: int) -> int:
        """Output length along ``axis`` for input length ``n`` (PyTorch's conv/pool rule)."""
        k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
        span = n + 2 * p - d * (k - 1) - 1
        out = (-(-span // s) if self.ceil_mode else span // s) + 1
        if self.ceil_mode and (out - 1) * s >= n + p:  # the last window must start inside
            out -= 1
        return out

    def span(self, a: int, b: int, axis: int) -> tuple[int, int]:
        """Input range ``[lo, hi)`` read by outputs ``[a, b)`` (may reach into the padding)."""
        k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
        return a * s - p, (b - 1) * s - p + (k - 1) * d + 1


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def window(m: nn.Module) -> Optional[Window]:
    """The :class:`Window` of a conv or :class:`Pool`; ``None`` for an elementwise module."""
    if isinstance(m, nn.Conv2d) and not isinstance(m.padding, str) and m.padding_mode == "zeros":
        return Window(_pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation))
    if isinstance(m, Pool):
        return Window((2, 2), (2, 2), (0, 0), ceil_mode=m.ceil_mode)
    if isinstance(m, ELEMENTWISE):
        return None
    raise ConfigError(
        f"the projection does not support {type(m).__name__} layers ({m}); supported: Conv2d with "
        f"numeric zero padding, Pool, BatchNorm2d, ReLU, Dropout, Identity"
    )


def map_sizes(modules: Modules, size: tuple[int, int]) -> list[tuple[int, int]]:
    """``sizes[i]``: the (H, W) entering ``modules[i]``; ``sizes[-1]``: leaving the last one."""
    sizes = [size]
    for m in modules:
        w, (h, wd) = window(m), sizes[-1]
        sizes.append((h, wd) if w is None else (w.out_len(h, 0), w.out_len(wd, 1)))
    return sizes


@dataclass(frozen=True)
class CropStep:
    """One module of a crop plan: the box it reads, the box it writes, the implicit padding.

    ``pad`` is ``(left, right, top, bottom)`` (``F.pad`` order): how far the unclipped input
    span reaches past the map border, i.e. the zero padding the full-map module would add there.
    """

    module: nn.Module
    in_box: Box
    out_box: Box
    pad: tuple[int, int, int, int]


def _clip(lo: int, hi: int, n: int) -> tuple[int, int]:
    return max(lo, 0), min(hi, n)


def plan_crop(modules: Modules, size: tuple[int, int], top: Box) -> list[CropStep]:
    """Boxes of every layer needed to compute (and project) the outputs ``top`` of the last module.

    Walks down from ``top``: each conv/pool box becomes its input span clipped to the map; the
    clipped amount is recorded as padding. Running the stack on these crops (conv: zero-pad by
    ``pad``, no own padding; pool: as is, ceil mode handles a partial last window) gives exactly
    the full-map values inside every box.
    """
    sizes = map_sizes(modules, size)
    steps: list[CropStep] = []
    out = top
    for i in reversed(range(len(modules))):
        w = window(modules[i])
        if w is None:
            steps.append(CropStep(modules[i], out, out, (0, 0, 0, 0)))
            continue
        (h, wd), (y0, y1, x0, x1) = sizes[i], out
        uy, ux = w.span(y0, y1, 0), w.span(x0, x1, 1)
        cy, cx = _clip(*uy, h), _clip(*ux, wd)
        pad = (cx[0] - ux[0], ux[1] - cx[1], cy[0] - uy[0], uy[1] - cy[1])
        steps.append(CropStep(modules[i], (*cy, *cx), out, pad))
        out = (*cy, *cx)
    return steps[::-1]


def receptive_box(modules: Modules, y: int, x: int) -> Box:
    """The receptive field of unit ``(y, x)`` after ``modules``, in input pixels, *unclipped*.

    Its size is the layer's receptive-field size everywhere (e.g. 40 px for VGG16 conv3_3, 196 for
    conv5_3), so image patches cropped with it line up in a grid; parts off the image are padding.
    """
    box = (y, y + 1, x, x + 1)
    for m in reversed(list(modules)):
        w = window(m)
        if w is not None:
            box = (*w.span(box[0], box[1], 0), *w.span(box[2], box[3], 1))
    return box


def crop(t: Tensor, t_box: Box, want: Box, fill: float = 0.0) -> Tensor:
    """The part of ``t`` (…, h, w) (which covers ``t_box``) inside ``want``; ``fill`` elsewhere."""
    out = t.new_full((*t.shape[:-2], want[1] - want[0], want[3] - want[2]), fill)
    y0, y1 = max(want[0], t_box[0]), min(want[1], t_box[1])
    x0, x1 = max(want[2], t_box[2]), min(want[3], t_box[3])
    if y0 < y1 and x0 < x1:
        out[..., y0 - want[0]:y1 - want[0], x0 - want[2]:x1 - want[2]] = \
            t[..., y0 - t_box[0]:y1 - t_box[0], x0 - t_box[2]:x1 - t_box[2]]
    return out


def full_box(t: Tensor) -> Box:
    """The box of a whole map ``(…, H, W)``."""
    return (0, int(t.shape[-2]), 0, int(t.shape[-1]))


__all__ = ["Box", "Window", "CropStep", "window", "map_sizes", "plan_crop", "receptive_box",
           "crop", "full_box", "ELEMENTWISE"]
