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

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["max_pool2x2", "max_unpool2x2", "code_from_indices", "indices_from_code"]

# Pooled outputs per CPU block. Smaller blocks stay in cache (2**18 saves 2-8 % CPU time) but
# cost more op launches, each an OpenMP barrier that stalls for ms when cores are oversubscribed.
_CHUNK = 1 << 19
_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # same-size int views
_Blocks = Iterator[tuple[tuple[slice, ...], tuple[slice, ...]]]
SizeLike = Union[Sequence[int], torch.Size]
_Fmt = torch.memory_format


# ----------------------------------------------------------------------------- index arithmetic
def _base(h: Any, w: Any, W: Any, device: torch.device) -> Tensor:
    """(h, w) int64 flat index ``row*W + col`` of every window's top-left cell."""
    return (torch.arange(h, device=device) * (2 * W))[:, None] + torch.arange(w, device=device) * 2


def _indices(code: Tensor, base: Tensor, W: int) -> Tensor:
    """Flat int64 indices ``base + dy*W + dx`` of the codes (offsets in a narrow int: faster)."""
    narrow = torch.int16 if W < 2**15 - 1 else torch.int32
    return torch.add(base, (code >> 1).to(narrow).mul_(W - 2).add_(code))  # dy*(W-2) + code


def _codes(offset: Tensor, W: Any) -> Tensor:
    """Window codes from in-window offsets ``dy*W + dx`` ∈ {0, 1, W, W+1} (any integer dtype)."""
    return torch.where(offset >= W, offset - (W - 2), offset).to(torch.uint8)


def code_from_indices(indices: Tensor, input_size: SizeLike) -> Tensor:
    """uint8 window codes of int64 ``MaxPool2d`` indices (flat ``row*W + col`` per plane)."""
    W = input_size[-1]
    return _codes(indices - _base(*indices.shape[-2:], W, indices.device), W)


def indices_from_code(code: Tensor, input_size: SizeLike) -> Tensor:
    """int64 flat indices, as ``MaxPool2d(return_indices=True)`` gives, of uint8 window codes."""
    W = input_size[-1]
    return _indices(code, _base(*code.shape[-2:], W, code.device), W)


# ----------------------------------------------------------------------------- CPU block kernels
def _layout(t: Tensor) -> _Fmt:
    """channels_last if ``t`` is laid out so (also when H = W = 1), else contiguous NCHW."""
    cl = t.is_contiguous(memory_format=torch.channels_last) and (
        not t.is_contiguous() or t.stride(-1) != 1)
    return torch.channels_last if cl else torch.contiguous_format


def _planes(t: Tensor, fmt: _Fmt) -> Tensor:
    """NCHW as (B*C, 1, H, W) single-channel images; channels_last as is (rows are C-contiguous)."""
    return t if fmt == torch.channels_last else t.view(-1, 1, *t.shape[-2:])


def _blocks(n: int, c: int, h: int, w: int, H: int) -> _Blocks:
    """(pooled, full-size) index tuples tiling ``n`` images of ``c`` channels into ~_CHUNK outputs.

    Small images go by runs of whole images; big ones by bands of pooled rows (a band of one
    image is itself a contiguous image, and codes are band-local; the last band keeps the rows of
    a partial or dropped last window).
    """
    rows = max(1, _CHUNK // max(1, c * w))
    if rows >= h:
        step = max(1, rows // max(1, h))
        for i in range(0, n, step):
            yield (slice(i, i + step),), (slice(i, i + step),)
        return
    for i in range(n):
        for r in range(0, h, rows):
            end = 2 * (r + rows) if r + rows < h else H
            yield (slice(i, i + 1), slice(None), slice(r, r + rows)), (
                slice(i, i + 1), slice(None), slice(2 * r, end))


def _code_into(idx: Tensor, base: Tensor, W: int, out: Tensor) -> None:
    """Write the codes of block-local indices into ``out`` (uint8 arithmetic when W allows)."""
    if 2 <= W % 256 <= 254:  # {0, 1, W, W+1} stay distinct modulo 256: d - (W-2)·[d > 1]
        d = idx.to(torch.uint8).sub_(base.to(torch.uint8))
        torch.sub(d, (d >> 1).clamp_(max=1), alpha=(W - 2) % 256, out=out)
    else:
        out.copy_(_codes(idx - base, W))


def _empty(
    shape: Sequence[int], like: Tensor, fmt: _Fmt, dtype: Optional[torch.dtype] = None
) -> Tensor:
    return torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device,
                       memory_format=fmt)


def _over_blocks(
    kernel: Callable[..., None], small: Tensor, code: Tensor, full: Tensor, fmt: _Fmt
) -> None:
    """``kernel(small, code, full, fmt, base)`` on each block (pooled-size, full-size views)."""
    (h, w), W = small.shape[-2:], full.shape[-1]
    sv, cv, fv = (_planes(t, fmt) for t in (small, code, full))
    base = _base(h, w, W, small.device)
    for ps, fs in _blocks(sv.shape[0], sv.shape[1], h, w, full.shape[-2]):
        kernel(sv[ps], cv[ps], fv[fs], fmt, base[: sv[ps].shape[2]])


def _pool_block(
    yb: Tensor, cb: Tensor, xb: Tensor, fmt: _Fmt, base: Tensor, ceil_mode: bool
) -> None:
    scratch = torch.empty(0, dtype=torch.int64)  # block-sized: reused from the heap, in cache
    torch.ops.aten.max_pool2d_with_indices.out(
        xb, [2, 2], [2, 2], [0, 0], [1, 1], ceil_mode, out=yb, indices=scratch)
    _code_into(scratch, base, xb.shape[-1], cb)


def _masks(code: Tensor, bits: torch.dtype) -> list[Tensor]:
    """Integer masks of dtype ``bits``, all bits set where ``code == k``, else 0 (k = 0..3)."""
    k = torch.arange(4, dtype=torch.int8).view(4, *[1] * code.dim())  # one op for the four
    c = code.view(torch.int8)  # (c ^ k) - 1 is -1 iff c == k, else 0..2; >> 2 keeps -1 or gives 0
    return list(torch.bitwise_xor(c, k).sub_(1).bitwise_right_shift_(2).to(bits).unbind(0))


def _cells(t: Tensor, h: Any, w: Any) -> list[Tensor]:
    """Strided views of the four window cells (dy, dx) of ``t``'s h×w windows, row-major; cells
    a partial (ceil-mode) window lacks are missing from the views."""
    return [t[..., dy : 2 * h : 2, dx : 2 * w : 2] for dy in (0, 1) for dx in (0, 1)]


def _place_block(yb: Tensor, cb: Tensor, ob: Tensor, fmt: _Fmt, base: Tensor) -> None:
    h, w = yb.shape[-2:]
    if fmt == torch.channels_last:  # masked bit copies into the window cells
        bits = _BITS[yb.element_size()]
        for m, cell in zip(_masks(cb, bits), _cells(ob.view(bits), h, w)):
            rows, cols = cell.shape[-2:]
            torch.bitwise_and(yb.view(bits)[..., :rows, :cols], m[..., :rows, :cols], out=cell)
        ob[..., 2 * h :, :].zero_()  # floor mode, odd size: the row/column no window covers
        ob[..., 2 * w :].zero_()
    else:  # zero + scatter per plane: MaxUnpool2d's result, also allowed in deterministic mode
        idx = _indices(cb, base, ob.shape[-1])
        ob.zero_().flatten(2).scatter_(2, idx.flatten(2), yb.flatten(2))


def _gather_block(ob: Tensor, cb: Tensor, gb: Tensor, fmt: _Fmt, base: Tensor) -> None:
    h, w = ob.shape[-2:]
    if fmt == torch.channels_last:  # OR of the masked cells
        bits = _BITS[ob.element_size()]
        out, masks, cells = ob.view(bits), _masks(cb, bits), _cells(gb.view(bits), h, w)
        torch.bitwise_and(cells[0], masks[0], out=out)  # cell (0, 0) exists in every window
        for m, cell in zip(masks[1:], cells[1:]):
            rows, cols = cell.shape[-2:]
            out[..., :rows, :cols].bitwise_or_(cell & m[..., :rows, :cols])
    else:
        idx = _indices(cb, base, gb.shape[-1])
        torch.gather(gb.flatten(2), 2, idx.flatten(2), out=ob.flatten(2))


def _pool_cpu(x: Tensor, ceil_mode: bool) -> tuple[Tensor, Tensor]:
    B, C, H, W = x.shape
    fmt = _layout(x)
    x = x.contiguous(memory_format=fmt)
    shape = (B, C, _pooled(H, ceil_mode), _pooled(W, ceil_mode))
    y, code = _empty(shape, x, fmt), _empty(shape, x, fmt, torch.uint8)
    _over_blocks(partial(_pool_block, ceil_mode=ceil_mode), y, code, x, fmt)
    return y, code


def _place_cpu(y: Tensor, code: Tensor, size: tuple[int, int]) -> Tensor:
    fmt = _layout(y)
    y, code = y.contiguous(memory_format=fmt), code.contiguous(memory_format=fmt)
    out = _empty((*y.shape[:2], *size), y, fmt)
    _over_blocks(_place_block, y, code, out, fmt)
    return out


def _gather_cpu(g: Tensor, code: Tensor) -> Tensor:
    fmt = _layout(g)
    g, code = g.contiguous(memory_format=fmt), code.contiguous(memory_format=fmt)
    out = _empty(code.shape, g, fmt)
    _over_blocks(_gather_block, out, code, g, fmt)
    return out


# ----------------------------------------------------------------------------- plain formulation
def _pool_plain(x: Tensor, ceil_mode: bool) -> tuple[Tensor, Tensor]:
    y, idx = F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode, return_indices=True)
    return y, code_from_indices(idx, x.shape[-2:])


def _window_masks(code: Tensor) -> Tensor:
    """(B, C, h, 2, w, 2) bool: True at the switch of each window."""
    k = torch.arange(4, dtype=torch.int32, device=code.device).view(2, 1, 2)  # k[dy, 0, dx]
    return code.to(torch.int32)[:, :, :, None, :, None] == k  # int32: onnxruntime's Equal has it


def _place_plain(y: Tensor, code: Tensor, size: tuple[Any, Any]) -> Tensor:
    H, W = size
    out = torch.where(_window_masks(code), y[:, :, :, None, :, None], y.new_zeros(()))
    out = out.flatten(4, 5).flatten(2, 3)  # (B, C, 2h, 2w)
    if torch.jit.is_tracing() or H > out.shape[-2] or W > out.shape[-1]:
        out = F.pad(out, (0, 1, 0, 1))  # floor mode, odd size: the dropped row/column is zero
    return out[..., :H, :W].contiguous(memory_format=_layout(y))


def _gather_plain(g: Tensor, code: Tensor) -> Tensor:
    h, w = code.shape[-2:]
    if g.shape[-2] < 2 * h or g.shape[-1] < 2 * w:
        g = F.pad(g, (0, 1, 0, 1))  # ceil mode: complete the partial windows (never selected)
    g00, g01, g10, g11 = _cells(g, h, w)
    out = torch.where(code == 0, g00, torch.where(code == 1, g01, torch.where(code == 2, g10, g11)))
    return out.contiguous(memory_format=_layout(g))


# ----------------------------------------------------------------------------- dispatch + autograd
def _pooled(n: int, ceil_mode: bool) -> int:
    return (n + 1) // 2 if ceil_mode else n // 2


def _fast(t: Tensor) -> bool:
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _pool(x: Tensor, ceil_mode: bool) -> tuple[Tensor, Tensor]:
    return (_pool_cpu if _fast(x) else _pool_plain)(x, ceil_mode)


def _place(y: Tensor, code: Tensor, size: tuple[int, int]) -> Tensor:
    return (_place_cpu if _fast(y) else _place_plain)(y, code, size)


def _gather(g: Tensor, code: Tensor) -> Tensor:
    return (_gather_cpu if _fast(g) else _gather_plain)(g, code)


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
        return _pool_plain(x, ceil_mode)
    return _Pool.apply(x, ceil_mode) if _wants_grad(x) else _pool(x, ceil_mode)


def max_unpool2x2(y: Tensor, code: Tensor, output_size: SizeLike) -> Tensor:
    """Max-unpooling: (B, C, H, W) zeros except ``y`` at the switch of each window.

    ``output_size``: the pre-pool (H, W) (a longer size's last two entries are used); it tells
    floor from ceil mode for odd sizes.
    """
    size = tuple(output_size[-2:])
    if _exporting():
        return _place_plain(y, code, size)
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
