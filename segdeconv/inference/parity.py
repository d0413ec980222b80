"""Parity of an exported model with PyTorch, and why real images can differ at a few pixels.

Max-unpooling is discontinuous: where the two largest inputs of a 2×2 pooling window are equal up
to float rounding (flat image regions give many), an implementation whose convolutions round
differently in the last bit picks the other position, and the decoder places the value one pixel
away. :func:`switch_flips` finds those windows by comparing the switches of PyTorch and
onnxruntime level by level (the encoder never sees the switches, so a flip cannot cause another:
every flip must be such a tie), then runs PyTorch with onnxruntime's switches forced in: that must
match within the tolerance everywhere, which shows the graph itself is exact.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdeconv.data.image import read_image, to_tensors
from segdeconv.models.layers import Pool, Switches

TIE_GAP = 1e-5  # gap (relative to the level's largest activation) below which two inputs are tied


@dataclass
class SwitchFlips:
    """How many switches of one pooling level differ, and the largest relative gap among them."""

    level: int
    differ: int
    total: int
    max_gap: float

    def text(self) -> str:
        return f"pool{self.level}: {self.differ}/{self.total} switches differ (max relative gap {self.max_gap:.1e})"


@dataclass
class Parity:
    """One comparison of exported vs PyTorch logits (B, C, H, W)."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    scale: float  # max(1, max |PyTorch logit|): the tolerance is relative beyond logits of 1
    within_tol: float  # fraction of logits with |Δ| ≤ tolerance · scale
    argmax_equal: int  # pixels whose class is identical
    pixels: int
    logit_ties: int  # other pixels: their two best PyTorch logits are within 2·max|Δlogit| (a tie)
    flips: list[SwitchFlips] = field(default_factory=list)
    forced: Optional["Parity"] = None  # the comparison with onnxruntime's switches forced into PyTorch

    def figures(self) -> str:
        return (f"max|Δlogit| {self.max_abs:.2e} ({self.max_abs / self.scale:.1e} of max|logit| {self.scale:.3g})  "
                f"argmax identical {self.argmax_equal}/{self.pixels}"
                + (f" ({self.logit_ties} of the others: logit ties)" if self.logit_ties else ""))

    def line(self) -> str:
        return f"{self.name:<28} {'×'.join(map(str, self.shape)):<16} {self.figures()}"

    def within(self, tolerance: float) -> bool:
        """max |Δlogit| ≤ tolerance · max(1, max |logit|) and every pixel's class identical
        (except where its two best logits tie within that difference)."""
        return self.max_abs <= tolerance * self.scale and self.argmax_equal + self.logit_ties == self.pixels

    def as_dict(self) -> dict:
        return asdict(self)


def compare(name: str, reference: Tensor, exported: np.ndarray, tolerance: float) -> Parity:
    """max |Δlogit| and argmax agreement of ``exported`` vs ``reference``.

    fp32 carries ~7 significant digits, so two correct implementations of a deep network agree
    to ~1e-6 *relative* to the logits' size (PyTorch fp32 itself is that far from fp64): the
    tolerance is absolute for logits up to 1 and relative beyond.
    """
    ref = reference.detach().numpy()
    delta = np.abs(exported - ref)
    scale = max(1.0, float(np.abs(ref).max()))
    same = ref.argmax(1) == exported.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:]
    ties = ~same & (top2[:, 1] - top2[:, 0] <= 2 * min(float(delta.max()), tolerance * scale))
    return Parity(name, tuple(ref.shape), float(delta.max()), scale, float((delta <= tolerance * scale).mean()),
                  int(same.sum()), int(same.size), int(ties.sum()))


def parity_inputs(image_size: Sequence[int], image: Optional[str] = None) -> list[tuple[str, Tensor]]:
    """Random input at the training size, batch 2 at another odd size (dynamic axes), a real image."""
    g = torch.Generator().manual_seed(0)
    h, w = int(image_size[0]), int(image_size[1])
    cases = [(f"random {h}×{w}", torch.randn(1, 3, h, w, generator=g)),
             (f"random batch 2, {h + 7}×{max(w - 5, 9)}", torch.randn(2, 3, h + 7, max(w - 5, 9), generator=g))]
    if image:
        x, _ = to_tensors(read_image(image), np.zeros(1, np.uint8))
        cases.append((Path(image).name, x[None]))
    return cases


# ----------------------------------------------------------------------------- switches
def _pools(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, Pool)]


def torch_switches(model: nn.Module, x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(pool input, uint8 code) of every :class:`Pool` of ``model`` on ``x``, in forward order."""
    seen: list[tuple[Tensor, Tensor]] = []
    hooks = [m.register_forward_hook(lambda _m, inp, out: seen.append((inp[0], out[1].indices)))
             for m in _pools(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def forced_switches(model: nn.Module, x: Tensor, codes: Sequence[np.ndarray]) -> Tensor:
    """PyTorch's logits with the pools' switches replaced by ``codes`` (e.g. onnxruntime's)."""
    it = iter(codes)

    def force(_m: nn.Module, _inp: Any, out: tuple[Tensor, Switches]) -> tuple[Tensor, Switches]:
        return out[0], Switches(torch.from_numpy(np.asarray(next(it))).to(out[1].indices.dtype), out[1].size)

    hooks = [m.register_forward_hook(force) for m in _pools(model)]
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


def onnx_codes(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """The uint8 switch codes inside an exported graph (every Cast-to-uint8 output, in order)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    names = [n.output[0] for n in proto.graph.node
             if n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.UINT8 for a in n.attribute)]
    for n in names:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UINT8, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(names, {"image": x})


def _window_values(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, C, h, w, 4) values of each 2×2 window (ceil mode: -inf padding)."""
    x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), value=float("-inf"))
    b, c, hh, ww = x.shape
    return x.view(b, c, hh // 2, 2, ww // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hh // 2, ww // 2, 4)


def switch_flips(ours: Sequence[tuple[Tensor, Tensor]], theirs: Sequence[np.ndarray]) -> list[SwitchFlips]:
    """Per pooling level: switches that differ, with the gap between the two chosen inputs
    (PyTorch's values, relative to the level's largest |input|)."""
    out = []
    for level, ((inp, code), other) in enumerate(zip(ours, theirs), 1):
        other_t = torch.from_numpy(np.asarray(other)).to(code.dtype)
        diff = code != other_t
        gap = 0.0
        if diff.any():
            vals = _window_values(inp)
            a = vals.gather(-1, code.long()[..., None])[..., 0][diff]
            b = vals.gather(-1, other_t.long().clamp(0, 3)[..., None])[..., 0][diff]
            gap = float((a - b).abs().max() / inp.abs().max().clamp_min(1e-12))
        out.append(SwitchFlips(level, int(diff.sum()), diff.numel(), gap))
    return out


def _diagnose(model: nn.Module, path: Path, x: Tensor, got: np.ndarray, r: Parity, tolerance: float) -> None:
    """Fill ``r.flips`` and ``r.forced`` (the parity with onnxruntime's switches forced into PyTorch)."""
    ours, theirs = torch_switches(model, x), onnx_codes(path, x.numpy())
    if len(theirs) != len(ours):
        return  # not the expected graph layout: no diagnosis
    r.flips = switch_flips(ours, theirs)
    if any(f.differ for f in r.flips):
        r.forced = compare(r.name, forced_switches(model, x, theirs), got, tolerance)


def verify(model: nn.Module, run: Callable[[np.ndarray], np.ndarray], cases: list[tuple[str, Tensor]],
           tolerance: float, onnx_path: Optional[Path] = None) -> list[Parity]:
    """Compare PyTorch and the exported model on every case; diagnose switch ties when needed."""
    results = []
    for name, x in cases:
        with torch.no_grad():
            ref = model(x)
        got = run(x.numpy())
        if got.shape != tuple(ref.shape):
            raise ValueError(f"exported model returned shape {got.shape} for {name}, PyTorch {tuple(ref.shape)}")
        r = compare(name, ref, got, tolerance)
        if onnx_path is not None and not r.within(tolerance):
            _diagnose(model, onnx_path, x, got, r, tolerance)
        results.append(r)
    return results


def explained_by_ties(r: Parity, tolerance: float) -> bool:
    """Every differing switch is a tie, and with onnxruntime's switches PyTorch matches."""
    flips = [f for f in r.flips if f.differ]
    return bool(flips) and all(f.max_gap <= TIE_GAP for f in flips) and r.forced is not None \
        and r.forced.within(tolerance)


def problems(results: Sequence[Parity], tolerance: float) -> list[str]:
    """Why the parity is not acceptable ([] if it is): a case must be within ``tolerance`` with
    identical argmax, or differ only through max-pool ties (:func:`explained_by_ties`)."""
    bad = []
    for r in results:
        if not (r.within(tolerance) or explained_by_ties(r, tolerance)):
            flips = "; ".join(f.text() for f in r.flips if f.differ) or "no switch differs"
            bad.append(f"{r.name}: max|Δlogit| {r.max_abs:.2e} > {tolerance} × {r.scale:.3g} or argmax "
                       f"differs, not explained by max-pool ties ({flips})")
    return bad


def report_lines(results: Sequence[Parity], tolerance: float) -> list[str]:
    """Human-readable parity figures, with the tie diagnosis where switches differ."""
    lines = []
    for r in results:
        lines.append(r.line())
        flips = [f for f in r.flips if f.differ]
        if flips:
            lines.append("    max-pool ties flipped: " + "; ".join(f.text() for f in flips))
        if r.forced is not None:
            lines.append(f"    with onnxruntime's switches forced into PyTorch: {r.forced.figures()}")
    return lines
