"""Lean training graph (``model.lean``): autograd keeps one full map per conv–BN–ReLU block.

The plain graph keeps two maps per block — the conv output ``z`` (BatchNorm's backward needs it)
and the ReLU output ``y`` (the next convolution's weight gradient needs it) — and the decoder also
keeps every unpooled map (75 % zeros) for its first convolution. ``y``, the pooled values and the
unpooled maps are cheap element-wise functions of ``z`` and of the 1-byte switches, so they are
*rebuilt* in backward instead of stored: the shared-memory BN–ReLU recomputation of Pleiss et al.
2017 ("Memory-efficient implementation of DenseNets", §3). In-Place ABN (Rota Bulò et al. 2018)
instead *inverts* the activation, which needs an invertible one (leaky ReLU), not SegNet's ReLU.
The first convolution on the RGB image (``in_channels × k² ≤`` :data:`CHEAP_CONV_MACS`: conv1_1,
27 multiply-adds per output value) is rebuilt too, so its output is not kept either.

Mechanism: :func:`torch.autograd.graph.saved_tensors_hooks`. Autograd's own backward formulas run
unchanged; only what is *kept* changes. :func:`run` executes a stage's modules like
``nn.Sequential`` and tags each element-wise result with a :class:`_Recipe` (its source tensor and
the ops that made it). When autograd saves a tagged tensor, the pack hook stores the recipe
instead; the unpack hook re-runs the same ops on the same inputs (same kernels, the forward's
autocast state, BatchNorm with its batch statistics recomputed on a copy of the running
statistics, which stay untouched) under ``no_grad``. The rebuilt tensor is therefore the stored one
bit for bit, and so are every gradient and BatchNorm buffer (``tests/test_lean.py``). A rebuilt
tensor that a later backward node still needs (a ReLU output is saved by the ReLU and by the next
conv) is kept until that node has used it, as the plain graph would keep it.

Lean is off under ``no_grad``/inference, ``torch.compile``, tracing/ONNX export, inside
``model.recompute`` stages (recomputed whole anyway), when other saved-tensor hooks are active
(the caller's own checkpointing or offloading keeps working), and for double backward (an error).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdeconv.models.layers import Pool, Switches, Unpool
from segdeconv.models.memory.switch_kernels import gather_cpu, place_cpu, pool_cpu

Step = Callable[[Tensor, "Workspace"], Tensor]  # rebuilds one tensor from its source
CHEAP_CONV_MACS = 32  # rebuild a conv whose output costs ≤ this many multiply-adds per value (3×3 on RGB: 27)
_TAG = "_segdeconv_lean"
_state = threading.local()


def _autocast_state(device: str) -> tuple[str, bool, Optional[torch.dtype]]:
    """The forward's autocast state on ``device``, replayed when a map is rebuilt; a device type without
    autocast (``meta``: shape-only runs) has none to replay."""
    try:
        return device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    except RuntimeError:
        return device, False, None


class _Recipe:
    """How to rebuild one tensor: ``steps`` applied in order to ``source`` (a kept tensor or a recipe)."""

    __slots__ = ("source", "steps", "autocast", "workspace", "pending", "value")

    def __init__(self, source: Union[Tensor, "_Recipe"], step: Step, device: str) -> None:
        self.source, self.steps, self.workspace = source, [step], _state.workspace
        self.autocast = _autocast_state(device)
        self.pending = 0  # saved copies not yet unpacked by backward
        self.value: Optional[Tensor] = None  # the rebuilt tensor, while a pending copy still needs it

    def build(self) -> Tensor:
        if self.value is not None:
            return self.value
        x = self.source if isinstance(self.source, Tensor) else self.source.build()
        device, enabled, dtype = self.autocast
        replay = torch.autocast(device, dtype=dtype, enabled=enabled, cache_enabled=False) if dtype else nullcontext()
        with replay:
            for step in self.steps:
                x = step(x, self.workspace)
        if self.pending > 0:
            self.value = x
        return x

    def unpack(self) -> Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("model.lean does not support double backward (create_graph=True): build the "
                               "model with lean=False (model.lean=false) for higher-order gradients")
        with torch.no_grad():
            x = self.build()
        self.pending -= 1
        if self.pending <= 0:
            self.pending, self.value = 0, None
        return x


def _pack(t: Tensor) -> Any:
    recipe = getattr(t, _TAG, None)
    if recipe is None:
        return t.detach()  # as autograd would keep it (detached: no reference cycle through grad_fn)
    recipe.pending += 1
    return recipe


def _unpack(packed: Any) -> Tensor:
    return packed.unpack() if isinstance(packed, _Recipe) else packed


def _depth() -> int:
    return getattr(_state, "depth", 0)


def _foreign_hooks() -> bool:
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    hooks = top(False) if top is not None else None
    return hooks is not None and hooks[0] is not _pack


@contextmanager
def lean_scope(enabled: bool) -> Iterator[bool]:
    """Within: saved tensors tagged by :func:`run` are kept as recipes. Yields whether lean is active."""
    if not (enabled and torch.is_grad_enabled()) or _foreign_hooks() or _plain_graph_only():
        yield False
        return
    if _depth() == 0:
        _state.workspace = Workspace()  # shared by this forward's recipes, freed with them
    _state.depth = _depth() + 1
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield True
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            _state.workspace = None


def active() -> bool:
    """Whether a :func:`lean_scope` is open and lean (what :func:`run` tags is then rebuilt in backward)."""
    return _depth() > 0


def _plain_graph_only() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def track(out: Tensor, source: Tensor, step: Step, inplace: bool = False) -> Tensor:
    """Tag ``out`` (just computed from ``source``; ``step(source, workspace)`` computes it again) as
    rebuildable; a no-op outside :func:`lean_scope`. ``inplace``: ``out`` is ``source`` modified in
    place; the step joins ``source``'s recipe (an untagged source is kept by autograd anyway)."""
    if _depth() == 0:
        return out
    recipe = getattr(source, _TAG, None)
    if inplace:
        if recipe is not None:
            recipe.steps.append(step)
        return out
    setattr(out, _TAG, _Recipe(recipe if recipe is not None else source.detach(), step, out.device.type))
    return out


class Workspace:
    """Memory for rebuilt CPU tensors. A rebuilt map lives only until backward has used it, so the
    next rebuild of a similar size takes its pages instead of faulting in fresh ones (glibc maps
    every block over 32 MB anew; for a 360×480×64 map the page faults cost as much as the
    BatchNorm itself). A storage is free again once nothing but the workspace refers to it; the
    workspace is dropped with the graph that made it."""

    def __init__(self) -> None:
        self.storages: list[torch.UntypedStorage] = []
        self._uses = getattr(torch._C, "_storage_Use_Count", None)

    def empty(self, shape: Sequence[int], like: Tensor, fmt: torch.memory_format = torch.contiguous_format,
              dtype: Optional[torch.dtype] = None) -> Tensor:
        """``torch.empty(shape, dtype or like.dtype, memory_format=fmt)`` on ``like``'s device."""
        return self._take(torch.empty(tuple(shape), dtype=dtype or like.dtype, device="meta", memory_format=fmt),
                          like.device)

    def empty_like(self, t: Tensor) -> Tensor:
        """``torch.empty_like(t)``: the layout an out-of-place op on ``t`` gives."""
        return self._take(torch.empty_like(t, device="meta"), t.device)

    def _take(self, meta: Tensor, device: torch.device) -> Tensor:
        nbytes = max(1, meta.numel()) * meta.element_size()
        storage = self._free(nbytes)
        if storage is None:
            storage = torch.empty(nbytes, dtype=torch.uint8, device=device).untyped_storage()
            if self._uses is not None:
                self.storages.append(storage)
        return torch.empty(0, dtype=meta.dtype, device=device).set_(storage, 0, meta.shape, meta.stride())

    def _free(self, nbytes: int) -> Optional[torch.UntypedStorage]:
        uses = self._uses
        if uses is None:  # _take keeps no storages when use counts cannot be read
            return None
        fits = [s for s in self.storages if nbytes <= s.nbytes() <= 2 * nbytes and uses(s._cdata) == 1]
        return min(fits, key=lambda s: s.nbytes()) if fits else None


def _versions(module: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in module.parameters(recurse=False))


def _guarded(module: nn.Module, fn: Step) -> Step:
    """``fn`` that refuses to rebuild after ``module``'s weights changed in place (autograd's own
    saved-tensor check would fire in the plain graph)."""
    versions = _versions(module)

    def guarded(x: Tensor, ws: Workspace) -> Tensor:
        if _versions(module) != versions:
            raise RuntimeError(f"model.lean: a parameter of {module} was modified in place between forward "
                               f"and backward; run backward before changing the weights (or use lean=False)")
        return fn(x, ws)

    return guarded


def _batch_norm_again(bn: nn.BatchNorm2d) -> Step:
    """The forward's batch norm again: batch statistics when it used them (recomputed on copies of
    the running statistics, so the module's buffers move once per forward), else the running
    statistics as they were. On CPU into workspace memory: ``native_batch_norm.out`` is the kernel
    ``F.batch_norm`` itself ends in, with an output laid out as that one's."""
    training = bn.training or (bn.running_mean is None and bn.running_var is None)
    # a BatchNorm has both running statistics (track_running_stats) or neither
    stats = None if bn.running_mean is None or bn.running_var is None else \
        (bn.running_mean.clone(), bn.running_var.clone())

    def again(z: Tensor, ws: Workspace) -> Tensor:
        rm, rv = (None, None) if stats is None else (stats[0].clone(), stats[1].clone())
        if z.device.type != "cpu":  # GPUs: F.batch_norm may pick cuDNN's kernel; call it the same way
            return F.batch_norm(z, rm, rv, bn.weight, bn.bias, training, 0.0, bn.eps)
        kind = next((p.dtype for p in (bn.weight, bn.bias, rm, rv) if p is not None), z.dtype)
        mean, invstd = (torch.empty(z.shape[1], dtype=kind) for _ in range(2))
        out = ws.empty_like(z)
        torch.ops.aten.native_batch_norm.out(z, bn.weight, bn.bias, rm, rv, training, 0.0, bn.eps,
                                             out=out, save_mean=mean, save_invstd=invstd)
        return out

    return _guarded(bn, again)


def _pool_again(pool: Pool, switches: Switches) -> Step:
    """Pooled values again, from the pool's input: in NCHW the values at the switches (a max-pool
    output *is* its input at the argmax, bit for bit; gathering is 4× cheaper than pooling
    there), in channels_last the pooling kernel the forward ran."""
    def again(y: Tensor, ws: Workspace) -> Tensor:
        if pool.compact and y.device.type == "cpu":
            if y.is_contiguous():
                return gather_cpu(y, switches.indices, ws.empty)
            return pool_cpu(y, pool.ceil_mode, ws.empty)[0]
        return pool.pooled(y)[0]

    return again


def _unpool_again(op: Unpool, switches: Switches) -> Step:
    def again(y: Tensor, ws: Workspace) -> Tensor:
        if switches.indices.dtype == torch.uint8 and y.device.type == "cpu":
            return place_cpu(y, switches.indices, switches.size, ws.empty)  # the kernel the forward ran
        return op(y, switches)

    return again


def _is_cheap_conv(m: nn.Module) -> bool:
    if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        return False
    return m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] <= CHEAP_CONV_MACS


def step(m: nn.Module, x: Tensor) -> Any:
    """``m(x)``, tagging the result when it is a cheap function of ``x``."""
    if isinstance(m, nn.BatchNorm2d):  # not SyncBatchNorm: its statistics come from every rank
        return track(m(x), x, _batch_norm_again(m))
    if isinstance(m, nn.ReLU):
        relu = torch.relu_ if m.inplace else torch.relu
        return track(m(x), x, lambda t, ws: relu(t), inplace=m.inplace)
    if isinstance(m, Pool):
        y, sw = m.pooled(x)
        track(y, x, _pool_again(m, sw))
        return (m.dropout(y) if m.dropout is not None else y), sw
    if _is_cheap_conv(m) and getattr(x, _TAG, None) is None:
        return track(m(x), x, _guarded(m, lambda t, ws: m(t)))
    return m(x)


def run(modules: Iterable[nn.Module], x: Tensor) -> Any:
    """``nn.Sequential(*modules)(x)`` with the rebuildable results tagged (see the module docstring)."""
    for m in modules:
        x = step(m, x)
    return x


def unpool(op: Unpool, x: Tensor, switches: Switches) -> Tensor:
    """``op(x, switches)``, tagged: rebuilt from ``x`` (or its own recipe) and the switches."""
    return track(op(x, switches), x, _unpool_again(op, switches))
