"""Compact max-pool switches: the argmax position of each 2×2 window in one byte.

SegNet (Badrinarayanan et al. 2017, §3) decodes by "storing only the max-pooling indices, i.e. the
locations of the maximum feature value in each pooling window … using 2 bits for each 2×2 pooling
window". We store that *code* ``k = dy*2 + dx`` ∈ {0,1,2,3} (row-major position inside the window)
as one uint8 per pooled output: 8× less than the int64 indices of ``F.max_pool2d(return_indices=
True)``. Packing four codes per byte (32×) is a possible future step, not taken: unpacking would
cost an extra pass in every op.

Semantics are PyTorch's on CPU, bit for bit: values and codes equal ``F.max_pool2d(x, 2, 2,
ceil_mode=…, return_indices=True)`` (ties → the first max in row-major window order; a window
holding NaN pools to NaN at the position PyTorch's kernel picks, its *last* NaN, because every
path runs that kernel), and unpooling equals ``F.max_unpool2d``. Floor mode drops an odd last
row/column (zero after unpooling); ceil mode pools a partial last window over its valid cells.

Both ops are differentiable through ``autograd.Function``s that save only the uint8 code and
sizes (never the input nor int64 indices). Pool backward = unpool of the gradient; unpool backward
= gather of the gradient at the codes; each is the other's adjoint, so double backward works too.
One difference with ``MaxPool2d``'s backward, which accumulates into zeros: a ``-0.0`` gradient
stays ``-0.0`` here (PyTorch gives ``+0.0``); every other bit is identical. Nothing is scattered
twice, so results are deterministic (and allowed under ``torch.use_deterministic_algorithms``,
which rejects ``F.max_unpool2d`` even on CPU).

CPU kernels (eager) work block by block, ~``_CHUNK`` pooled outputs at a time, so intermediates
stay in cache and no full-size int64 tensor is ever allocated (a fresh 88 MB tensor costs more in
page faults here than the pooling itself). Pooling runs PyTorch's kernel per block with a small
int64 scratch turned into codes. NCHW unpool/gather: per-plane int64 indices from the codes +
``scatter_``/``gather``. channels_last unpool/gather: the four window cells are strided views
with runs of C contiguous values, filled/read with bitwise AND against all-ones/zero masks of the
codes (exact for every bit pattern, NaN and ±0 included). Other devices, ``torch.compile``,
TorchScript tracing and ONNX export use a plain formulation in standard ops (max_pool2d, eq,
where, pad, slice; no custom Function when tracing/exporting), which exports to ONNX (opset 17+)
with dynamic H/W. Outputs keep the input's memory format (channels_last stays channels_last).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from segdeconv.models.memory.switch_kernels import (
    SizeLike,
    code_from_indices,
    gather_cpu,
    gather_plain,
    indices_from_code,
    place_cpu,
    place_plain,
    pool_cpu,
    pool_plain,
)

__all__ = ["max_pool2x2", "max_unpool2x2", "code_from_indices", "indices_from_code"]

# ----------------------------------------------------------------------------- dispatch + autograd
def _fast(t: Tensor) -> bool:
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _pool(x: Tensor, ceil_mode: bool) -> tuple[Tensor, Tensor]:
    return (pool_cpu if _fast(x) else pool_plain)(x, ceil_mode)


def _place(y: Tensor, code: Tensor, size: tuple[int, int]) -> Tensor:
    return (place_cpu if _fast(y) else place_plain)(y, code, size)


def _gather(g: Tensor, code: Tensor) -> Tensor:
    return (gather_cpu if _fast(g) else gather_plain)(g, code)


class _Pool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, ceil_mode: bool) -> tuple[Tensor, Tensor]:
        y, code = _pool(x, ceil_mode)
        ctx.mark_non_differentiable(code)
        ctx.save_for_backward(code)
        ctx.size = (int(x.shape[-2]), int(x.shape[-1]))
        return y, code

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor, _grad_code: Any) -> tuple[Tensor, None]:
        (code,) = ctx.saved_tensors
        return _Place.apply(grad_y, code, ctx.size), None


class _Place(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y: Tensor, code: Tensor, size: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(code)
        return _place(y, code, size)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (code,) = ctx.saved_tensors
        return _Gather.apply(grad_out, code), None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, g: Tensor, code: Tensor) -> Tensor:
        ctx.save_for_backward(code)
        ctx.size = (int(g.shape[-2]), int(g.shape[-1]))
        return _gather(g, code)

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor, None]:
        (code,) = ctx.saved_tensors
        return _Place.apply(grad_y, code, ctx.size), None


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _wants_grad(t: Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


def max_pool2x2(x: Tensor, ceil_mode: bool = False) -> tuple[Tensor, Tensor]:
    """2×2 stride-2 max-pool of ``x`` (B, C, H, W) → ``(y, code)``, both (B, C, h, w).

    ``code`` (uint8 ∈ {0,1,2,3}) is each window's argmax position ``dy*2 + dx``; ``h = H//2``, or
    ``ceil(H/2)`` with ``ceil_mode`` (a partial last window pools over its valid cells).
    """
    if x.dim() != 4:
        raise ValueError(f"max_pool2x2 expects (B, C, H, W), got shape {tuple(x.shape)}")
    if _exporting():
        return pool_plain(x, ceil_mode)
    return _Pool.apply(x, ceil_mode) if _wants_grad(x) else _pool(x, ceil_mode)


def max_unpool2x2(y: Tensor, code: Tensor, output_size: SizeLike) -> Tensor:
    """Max-unpooling: (B, C, H, W) zeros except ``y`` at the switch of each window.

    ``output_size``: the pre-pool (H, W) (a longer size's last two entries are used); it tells
    floor from ceil mode for odd sizes.
    """
    size = tuple(output_size[-2:])
    if _exporting():
        return place_plain(y, code, size)
    size = _check_unpool(y, code, size)
    return _Place.apply(y, code, size) if _wants_grad(y) else _place(y, code, size)


def _check_unpool(y: Tensor, code: Tensor, size: tuple[Any, ...]) -> tuple[int, int]:
    H, W = (int(s) for s in size)
    if y.dim() != 4 or code.shape != y.shape or code.dtype != torch.uint8:
        raise ValueError(f"max_unpool2x2 expects y (B, C, h, w) and a uint8 code of its shape, got "
                         f"{tuple(y.shape)} and {code.dtype} {tuple(code.shape)}")
    h, w = y.shape[-2:]
    if not (2 * h - 1 <= H <= 2 * h + 1 and 2 * w - 1 <= W <= 2 * w + 1):
        raise ValueError(f"output_size {(H, W)} cannot have been pooled 2×2/2 to {(h, w)}")
    return H, W
