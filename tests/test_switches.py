"""Compact (uint8) max-pool switches against PyTorch's int64 MaxPool2d / MaxUnpool2d.

Exactness (values, tie-breaking, NaN, odd sizes, ceil/floor, dtypes, layouts), gradients (bit for
bit, gradcheck), what autograd saves, determinism, and ONNX / TorchScript export.
"""
from __future__ import annotations

import io
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdeconv.models.memory import switch_kernels as K
from segdeconv.models.memory import switches as S
from segdeconv.models.memory.switches import (
    code_from_indices,
    indices_from_code,
    max_pool2x2,
    max_unpool2x2,
)

CL = torch.channels_last
BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16}


def bits(t: Tensor) -> Tensor:
    """Raw bit pattern, so NaN == NaN and -0.0 != +0.0 in comparisons."""
    return t.contiguous().view(BITS[t.dtype])


def is_cl(t: Tensor) -> bool:
    return t.is_contiguous(memory_format=CL)


def random_case(seed: int) -> dict:
    """A random configuration: shape (odd/even/tiny/W near 256), dtype, layout, ties, NaN, block
    size."""
    rng = random.Random(seed)
    ceil = rng.random() < 0.5
    lo = 1 if ceil else 2
    H, W = rng.randint(lo, 13), rng.choice([rng.randint(lo, 13), 255, 256, 257])
    dtype = rng.choice(list(BITS))
    g = torch.Generator().manual_seed(seed)
    shape = (rng.randint(1, 3), rng.randint(1, 4), H, W)
    if rng.random() < 0.5:  # a small integer set: many ties inside the windows
        x = torch.randint(0, 3, shape, generator=g).to(dtype)
    else:
        x = torch.randn(shape, generator=g).to(dtype)
    if rng.random() < 0.25:  # NaN windows: PyTorch's choice of position must be reproduced
        x[x > 1] = float("nan")
    if rng.random() < 0.4:
        x = x.contiguous(memory_format=CL)
    return dict(x=x, ceil=ceil, chunk=rng.choice([K._CHUNK, 1, 3, 40]))


@pytest.fixture
def chunk(monkeypatch):
    """Set the CPU block size (small values exercise row bands and runs of images)."""
    return lambda n: monkeypatch.setattr(K, "_CHUNK", n)


def reference(x: Tensor, ceil: bool):
    return F.max_pool2d(x, 2, 2, ceil_mode=ceil, return_indices=True)


@pytest.mark.parametrize("seed", range(24))
def test_forward_matches_reference_ops(seed, chunk):
    case = random_case(seed)
    x, ceil = case["x"], case["ceil"]
    chunk(case["chunk"])
    H, W = x.shape[-2:]
    y_ref, idx = reference(x, ceil)
    up_ref = F.max_unpool2d(y_ref, idx, 2, 2, output_size=(H, W))
    for pool, unpool in [(max_pool2x2, max_unpool2x2), (K.pool_plain, K.place_plain)]:
        y, code = pool(x, ceil)
        assert code.dtype == torch.uint8 and int(code.max()) <= 3
        assert torch.equal(bits(y), bits(y_ref))
        assert torch.equal(code, code_from_indices(idx, (H, W)))
        assert torch.equal(indices_from_code(code, (H, W)), idx)
        up = unpool(y, code, (H, W))
        assert torch.equal(bits(up), bits(up_ref))
        if is_cl(x) and x.shape[1] > 1:
            assert is_cl(y) and is_cl(code) and is_cl(up)


@pytest.mark.parametrize("plain", [False, True], ids=["cpu-kernels", "plain-ops"])
@pytest.mark.parametrize("seed", range(24))
def test_gradients_match_reference_bit_for_bit(seed, plain, chunk, monkeypatch):
    """Pool and unpool gradients through the autograd Functions equal MaxPool2d/MaxUnpool2d's
    (``plain``: with the standard-op kernels used on GPU and under torch.compile)."""
    case = random_case(100 + seed)
    chunk(case["chunk"])
    if plain:
        monkeypatch.setattr(S, "_fast", lambda t: False)
    x, ceil = case["x"], case["ceil"]
    H, W = x.shape[-2:]
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.dtype)
    grad = grad.contiguous(memory_format=CL) if is_cl(x) else grad

    def run(pool, unpool):
        xr = x.detach().requires_grad_()
        y, sw = pool(xr)
        yr = y.detach().requires_grad_()  # unpool's own gradient
        out = unpool(yr, sw)
        out.backward(grad)
        y.backward(yr.grad)  # pool's gradient = unpool(grad_y)
        return out, yr.grad, xr.grad

    def ref_unpool(t, idx):
        return F.max_unpool2d(t, idx, 2, 2, output_size=(H, W))

    ref = run(lambda t: reference(t, ceil), ref_unpool)
    ours = run(lambda t: max_pool2x2(t, ceil), lambda t, c: max_unpool2x2(t, c, (H, W)))
    for a, b in zip(ours, ref):
        assert torch.equal(bits(a), bits(b))
    if is_cl(x) and x.shape[1] > 1:
        assert all(is_cl(t) for t in ours)


def test_every_output_element_is_written(chunk, monkeypatch):
    """Outputs start as NaN/255 garbage: no element may be left unwritten (odd sizes, bands)."""
    real = K._empty

    def garbage(*args, **kwargs):
        t = real(*args, **kwargs)
        return t.fill_(255 if t.dtype == torch.uint8 else float("nan"))

    monkeypatch.setattr(K, "_empty", garbage)
    chunk(7)
    for ceil, cl in [(False, False), (False, True), (True, False), (True, True)]:
        x = torch.randn(2, 3, 9, 11)
        x = x.contiguous(memory_format=CL) if cl else x
        xr = x.clone().requires_grad_()
        y_ref, idx = reference(xr, ceil)
        out_ref = F.max_unpool2d(y_ref, idx, 2, 2, output_size=(9, 11))
        xo = x.clone().requires_grad_()
        y, code = max_pool2x2(xo, ceil)
        out = max_unpool2x2(y, code, (9, 11))
        assert torch.equal(code, code_from_indices(idx, (9, 11))) and torch.equal(out, out_ref)
        g = torch.randn_like(x)
        (out_ref * g).sum().backward()
        (out * g).sum().backward()
        assert torch.equal(xo.grad, xr.grad)


def test_ties_pick_first_max_in_row_major_order():
    x = torch.tensor([[1.0, 1, 0, 2, 5, 1], [1, 1, 2, 2, 5, 5]]).view(1, 1, 2, 6)
    y, code = max_pool2x2(x)
    assert y.flatten().tolist() == [1.0, 2.0, 5.0]
    assert code.flatten().tolist() == [0, 1, 0]
    x = torch.zeros(2, 3, 8, 8).contiguous(memory_format=CL)  # all equal: always the top-left
    assert int(max_pool2x2(x)[1].max()) == 0


def test_nan_follows_pytorch_kernel():
    """A window with NaN pools to NaN at the position PyTorch's CPU kernel picks (its last NaN)."""
    nan = float("nan")
    x = torch.tensor([[nan, 1.0, 3.0, nan], [nan, 2.0, nan, 0.0]]).view(1, 1, 2, 4)
    for t in (x, x.expand(1, 3, 2, 4).contiguous(memory_format=CL)):
        y, code = max_pool2x2(t)
        y_ref, idx = reference(t, False)
        assert torch.isnan(y).all() and torch.equal(code, code_from_indices(idx, (2, 4)))
        assert code[0, 0].flatten().tolist() == [2, 2]


@pytest.mark.parametrize("ceil", [False, True])
def test_odd_sizes(ceil):
    x = torch.randn(2, 3, 7, 9)
    y, code = max_pool2x2(x, ceil)
    assert y.shape[-2:] == ((4, 5) if ceil else (3, 4))
    up = max_unpool2x2(y, code, (7, 9))
    assert up.shape == x.shape
    if ceil:  # the partial last windows pool their valid cells only
        assert torch.equal(y[..., -1, :-1], x[..., -1, :-1].unflatten(-1, (4, 2)).amax(-1))
        assert torch.equal(y[..., -1, -1], x[..., -1, -1])
    else:  # the dropped last row/column unpools to zeros
        assert not up[..., -1, :].any() and not up[..., :, -1].any()
    nz = up != 0
    assert torch.equal(up[nz], x[nz]) and int(nz.sum()) == y.numel()


@pytest.mark.slow
def test_gradcheck_fp64():
    torch.manual_seed(0)
    for ceil, size in [(False, (6, 8)), (True, (5, 7)), (False, (5, 7))]:
        x = torch.randperm(2 * 3 * size[0] * size[1]).double().view(2, 3, *size)  # unique: no ties
        x.requires_grad_()
        assert torch.autograd.gradcheck(lambda t: max_pool2x2(t, ceil)[0], (x,))
        assert torch.autograd.gradgradcheck(lambda t: max_pool2x2(t, ceil)[0], (x,))
        y, code = max_pool2x2(x.detach(), ceil)
        yy = torch.randn(y.shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: max_unpool2x2(t, code, size), (yy,))
        assert torch.autograd.gradgradcheck(lambda t: max_unpool2x2(t, code, size), (yy,))


def saved_bytes(fn) -> tuple[int, set]:
    """Bytes of the distinct storages autograd saves while running fn(), and their dtypes."""
    storages: dict[int, int] = {}
    dtypes = set()

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        dtypes.add(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()), dtypes


def test_autograd_saves_only_the_uint8_code():
    x = torch.randn(2, 8, 30, 40, requires_grad=True)
    size = (30, 40)

    def ours():
        y, code = max_pool2x2(x)
        max_unpool2x2(y * 2, code, size)

    def ref():
        y, idx = reference(x, False)
        F.max_unpool2d(y * 2, idx, 2, 2, output_size=size)

    n = 2 * 8 * 15 * 20  # pooled outputs
    nbytes, dtypes = saved_bytes(ours)
    assert dtypes == {torch.uint8} and nbytes == n  # 1 byte per pooled output, shared by both ops
    ref_bytes, _ = saved_bytes(ref)
    assert ref_bytes == 8 * n + 4 * x.numel()  # int64 indices + the pool input


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["NCHW", "NHWC"])
def test_deterministic_and_allowed_in_deterministic_mode(layout):
    """F.max_unpool2d raises under torch.use_deterministic_algorithms (even on CPU); ours runs."""
    x = torch.randint(0, 2, (2, 16, 20, 22)).float().contiguous(memory_format=layout)
    x.requires_grad_()
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            y, code = max_pool2x2(x)
            out = max_unpool2x2(y, code, x.shape[-2:])
            (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
            runs.append((y, code, out, grad))
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_no_grad_path_equals_autograd_path():
    x = torch.randn(2, 4, 11, 12)
    with torch.no_grad():
        y0, c0 = max_pool2x2(x, True)
        u0 = max_unpool2x2(y0, c0, (11, 12))
    y1, c1 = max_pool2x2(x.requires_grad_(), True)
    u1 = max_unpool2x2(y1, c1, (11, 12))
    assert y1.requires_grad and u1.requires_grad and not c1.requires_grad
    assert torch.equal(y0, y1) and torch.equal(c0, c1) and torch.equal(u0, u1)


def test_invalid_arguments():
    y, code = max_pool2x2(torch.randn(1, 2, 6, 6))
    with pytest.raises(ValueError, match="output_size"):
        max_unpool2x2(y, code, (9, 6))
    with pytest.raises(ValueError, match="uint8"):
        max_unpool2x2(y, code.long(), (6, 6))
    with pytest.raises(ValueError, match="B, C, H, W"):
        max_pool2x2(torch.randn(6, 6))


def test_with_layers_pool_and_unpool():
    """The lead's Pool/Unpool modules with compact=True give MaxPool2d/MaxUnpool2d results."""
    from segdeconv.models.layers import Pool, Unpool

    x = torch.randn(2, 3, 9, 13)
    for ceil in (True, False):
        y, sw = Pool(ceil_mode=ceil, compact=True)(x)
        y_ref, sw_ref = Pool(ceil_mode=ceil, compact=False)(x)
        assert sw.indices.dtype == torch.uint8 and torch.equal(y, y_ref)
        assert torch.equal(Unpool()(y, sw), Unpool()(y_ref, sw_ref))


class PoolConvUnpool(nn.Module):
    def __init__(self, ceil: bool) -> None:
        super().__init__()
        self.conv, self.ceil = nn.Conv2d(3, 3, 3, padding=1), ceil

    def forward(self, x: Tensor) -> Tensor:
        y, code = max_pool2x2(x, self.ceil)
        return max_unpool2x2(self.conv(y), code, x.shape[-2:])


@pytest.mark.parametrize("ceil", [False, True])
def test_onnx_export_runs_in_onnxruntime_with_dynamic_size(ceil):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = PoolConvUnpool(ceil).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 8, 10),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 8, 10), (2, 3, 11, 7), (1, 3, 5, 13)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_torchscript_trace_generalises_to_other_sizes():
    model = PoolConvUnpool(True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.randn(1, 3, 8, 10))
    x = torch.randn(2, 3, 11, 7)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
