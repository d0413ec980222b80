"""CPU block kernels and the plain (exportable) formulation behind :mod:`segdeconv.models.memory.switches`.

Index arithmetic between 1-byte window codes and PyTorch's flat int64 indices; ``pool_cpu`` /
``place_cpu`` / ``gather_cpu`` work block by block (~``_CHUNK`` pooled outputs at a time, so no
full-size int64 tensor is allocated); ``pool_plain`` / ``place_plain`` / ``gather_plain`` use only
standard ops (other devices, ``torch.compile``, tracing, ONNX). Semantics: see switches.py.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

# Pooled outputs per CPU block. Smaller blocks stay in cache (2**18 saves 2-8 % CPU time) but
# cost more op launches, each an OpenMP barrier that stalls for ms when cores are oversubscribed.
_CHUNK = 1 << 19
_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # same-size int views
_Blocks = Iterator[tuple[tuple[slice, ...], tuple[slice, ...]]]
SizeLike = Union[Sequence[int], torch.Size]
_Fmt = torch.memory_format


# ----------------------------------------------------------------------------- index arithmetic
def _pooled(n: int, ceil_mode: bool) -> int:
    return (n + 1) // 2 if ceil_mode else n // 2


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
    h, w = indices.shape[-2:]
    return _codes(indices - _base(h, w, W, indices.device), W)


def indices_from_code(code: Tensor, input_size: SizeLike) -> Tensor:
    """int64 flat indices, as ``MaxPool2d(return_indices=True)`` gives, of uint8 window codes."""
    W = input_size[-1]
    h, w = code.shape[-2:]
    return _indices(code, _base(h, w, W, code.device), W)


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


def pool_cpu(x: Tensor, ceil_mode: bool, empty: Optional[Callable[..., Tensor]] = None) -> tuple[Tensor, Tensor]:
    """``empty(shape, like, fmt, dtype=None)`` allocates the outputs (default: fresh tensors)."""
    B, C, H, W = x.shape
    fmt = _layout(x)
    x = x.contiguous(memory_format=fmt)
    shape = (B, C, _pooled(H, ceil_mode), _pooled(W, ceil_mode))
    empty = empty or _empty
    y, code = empty(shape, x, fmt), empty(shape, x, fmt, torch.uint8)
    _over_blocks(partial(_pool_block, ceil_mode=ceil_mode), y, code, x, fmt)
    return y, code


def place_cpu(y: Tensor, code: Tensor, size: tuple[int, int], empty: Optional[Callable[..., Tensor]] = None) -> Tensor:
    """``empty`` as in :func:`pool_cpu`; every element of the output is written."""
    fmt = _layout(y)
    y, code = y.contiguous(memory_format=fmt), code.contiguous(memory_format=fmt)
    out = (empty or _empty)((*y.shape[:2], *size), y, fmt)
    _over_blocks(_place_block, y, code, out, fmt)
    return out


def gather_cpu(g: Tensor, code: Tensor, empty: Optional[Callable[..., Tensor]] = None) -> Tensor:
    """``empty`` as in :func:`pool_cpu`."""
    fmt = _layout(g)
    g, code = g.contiguous(memory_format=fmt), code.contiguous(memory_format=fmt)
    out = (empty or _empty)(code.shape, g, fmt)
    _over_blocks(_gather_block, out, code, g, fmt)
    return out


# ----------------------------------------------------------------------------- plain formulation
def pool_plain(x: Tensor, ceil_mode: bool) -> tuple[Tensor, Tensor]:
    y, idx = F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode, return_indices=True)
    return y, code_from_indices(idx, x.shape[-2:])


def _window_masks(code: Tensor) -> Tensor:
    """(B, C, h, 2, w, 2) bool: True at the switch of each window."""
    k = torch.arange(4, dtype=torch.int32, device=code.device).view(2, 1, 2)  # k[dy, 0, dx]
    return code.to(torch.int32)[:, :, :, None, :, None] == k  # int32: onnxruntime's Equal has it


def place_plain(y: Tensor, code: Tensor, size: tuple[Any, ...]) -> Tensor:
    H, W = size
    out = torch.where(_window_masks(code), y[:, :, :, None, :, None], y.new_zeros(()))
    out = out.flatten(4, 5).flatten(2, 3)  # (B, C, 2h, 2w)
    if torch.jit.is_tracing() or H > out.shape[-2] or W > out.shape[-1]:
        out = F.pad(out, (0, 1, 0, 1))  # floor mode, odd size: the dropped row/column is zero
    return out[..., :H, :W].contiguous(memory_format=_layout(y))


def gather_plain(g: Tensor, code: Tensor) -> Tensor:
    h, w = code.shape[-2:]
    if g.shape[-2] < 2 * h or g.shape[-1] < 2 * w:
        g = F.pad(g, (0, 1, 0, 1))  # ceil mode: complete the partial windows (never selected)
    g00, g01, g10, g11 = _cells(g, h, w)
    out = torch.where(code == 0, g00, torch.where(code == 1, g01, torch.where(code == 2, g10, g11)))
    return out.contiguous(memory_format=_layout(g))
