"""Memory policies, applied to a built model from outside: its forward stays the paper's.

SegNet, SegNet-Basic and DeconvNet run a sequence of *stages*: ``VGGEncoder.stage_modules()``
([conv, BN, ReLU]×n + pool, shallowest first), ``MirroredDecoder.stage_modules()`` (unpool +
[conv, BN, ReLU]×n, deepest first) and ``DeconvNet.fc_stage()`` (fc6 → fc7 → fc6-deconv).
:func:`apply_policy` replaces, on one model instance, the methods that hand out those stages by
ones that hand out the same stages wrapped, and the forward of the model, its encoder and its
decoder by the same forward inside a lean scope:

* ``recompute`` (Chen et al. 2016; :mod:`.recompute`): a chosen stage keeps only its input and runs
  again in backward. ``True``: every stage and DeconvNet's fc stage; ``N``: the N shallowest
  encoder and decoder stages; ``recompute_fc``: DeconvNet's fc stage.
* ``lean`` (Pleiss et al. 2017, §3; :mod:`.lean`): every other stage tags its element-wise results
  (BN, ReLU, pool, unpool, conv1_1) and the saved-tensor hooks of the scope keep a recipe for them
  instead of the tensor; backward rebuilds them bit for bit.

Compact switches (SegNet §3: each 2×2 window's argmax in one byte, :mod:`.switches`) are the pools'
storage format, chosen when the encoder is built (``compact_switches``), bit-identical too.
Nothing is added to the module tree or the state dict, and ``copy.deepcopy`` carries the policy
(the bound methods are rebound to the copy).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from types import MethodType
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import torch
from torch import nn

from segdeconv.errors import ConfigError
from segdeconv.models.decoder import DecoderStage, MirroredDecoder
from segdeconv.models.deconvnet import DeconvNet
from segdeconv.models.memory import lean
from segdeconv.models.memory.recompute import recomputed, stage_is_recomputed
from segdeconv.models.vgg import VGGEncoder

log = logging.getLogger("segdeconv")
KEYS = ("lean", "recompute", "recompute_fc")
RENAMED = {"checkpoint": "recompute", "checkpoint_fc": "recompute_fc"}  # 2026-12-07; refused in the next release
Stage = Callable[..., Any]


@dataclass(frozen=True)
class MemoryPolicy:
    """What autograd keeps in a training step (defaults: the lean graph, nothing recomputed)."""

    lean: bool = True
    recompute: Union[bool, int] = False
    recompute_fc: bool = False

    def __post_init__(self) -> None:
        stage_is_recomputed(self.recompute, 0)  # a ConfigError naming model.recompute

    def recomputes(self, depth: Optional[int]) -> bool:
        """Whether the stage at ``depth`` (0: full resolution; ``None``: DeconvNet's fc stage) is recomputed."""
        if depth is None:
            return bool(self.recompute_fc) or self.recompute is True
        return stage_is_recomputed(self.recompute, depth)


def current_names(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the deprecated ``checkpoint``/``checkpoint_fc`` under their new names (a stored
    architecture or config: silently; a set new name wins over an unset or null old one)."""
    out = {k: v for k, v in kwargs.items() if k not in RENAMED}
    for old, new in RENAMED.items():
        if kwargs.get(old) is not None and out.get(new) in (None, False):
            out[new] = kwargs[old]
    return out


def split_policy(kwargs: Mapping[str, Any], where: str = "model") -> tuple[MemoryPolicy, dict[str, Any]]:
    """``(memory policy, the constructor's kwargs)`` of a model's keyword arguments. The old names
    ``checkpoint``/``checkpoint_fc`` still work for this release, with a one-line deprecation warning."""
    for old, new in RENAMED.items():
        value, now = kwargs.get(old), kwargs.get(new)
        if value is None:
            continue
        log.warning("%s.%s is deprecated (it will be refused in the next release): use %s.%s=%s",
                    where, old, where, new, value)
        if now not in (None, False) and now != value:
            raise ConfigError(f"{where}.{old}={value!r} (the old name of {where}.{new}) disagrees with "
                              f"{where}.{new}={now!r}; drop {where}.{old}")
    named = current_names(kwargs)
    chosen = {k: named.pop(k) for k in KEYS if k in named}
    return MemoryPolicy(**{k: v for k, v in chosen.items() if v is not None}), named


def apply_policy(model: nn.Module, policy: MemoryPolicy) -> nn.Module:
    """``model`` with ``policy`` in force (replacing any earlier one); returns ``model``."""
    parts = [m for m in model.modules() if isinstance(m, (VGGEncoder, MirroredDecoder, DeconvNet))]
    for m in [model] + [p for p in parts if p is not model]:
        # plain attributes (no tensor, no module); lean=False turns the lean graph off (e.g. for a custom backward)
        vars(m).update(memory_policy=policy, lean=bool(policy.lean))
        _override(m, "forward", _scoped_forward if policy.lean else None)
    for part in parts:
        name, fn = ("fc_stage", _fc_stage) if isinstance(part, DeconvNet) else ("stage_modules", _stages)
        _override(part, name, fn if policy.lean or policy.recompute or policy.recompute_fc else None)
    return model


def policy_of(model: nn.Module) -> MemoryPolicy:
    """The policy :func:`apply_policy` put in force on ``model`` (none: the plain graph)."""
    policy = model.__dict__.get("memory_policy")
    return policy if isinstance(policy, MemoryPolicy) else MemoryPolicy(lean=False)


def _override(obj: nn.Module, name: str, fn: Optional[Callable[..., Any]]) -> None:
    """``obj.<name>`` on this instance only: ``fn`` bound to ``obj``, or (``None``) the class's own again."""
    obj.__dict__.pop(name, None)
    if fn is not None:
        obj.__dict__[name] = MethodType(fn, obj)


def _scoped_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The class's forward inside a lean scope: saved maps that lean stages tagged are kept as recipes."""
    with lean.lean_scope(bool(self.__dict__.get("lean"))):
        return type(self).forward(self, *args, **kwargs)


def _stages(self: Union[VGGEncoder, MirroredDecoder]) -> list[Stage]:
    """The class's ``stage_modules()``, each wrapped as the policy says (depth 0: full resolution)."""
    own: Callable[[Any], list[Any]] = type(self).stage_modules
    stages = own(self)
    n = len(stages)
    depths = range(n - 1, -1, -1) if isinstance(self, MirroredDecoder) else range(n)  # decoder: deepest first
    return [_wrap(self, stage, depth) for stage, depth in zip(stages, depths)]


def _fc_stage(self: DeconvNet) -> Stage:
    return _wrap(self, type(self).fc_stage(self), None)


def _wrap(part: nn.Module, stage: Any, depth: Optional[int]) -> Stage:
    policy: MemoryPolicy = part.__dict__["memory_policy"]
    if policy.recomputes(depth):  # keep the input; run the stage again in backward
        owner = stage.layers if isinstance(stage, DecoderStage) else stage  # whose BN statistics to keep
        return partial(recomputed, owner, stage)
    if part.__dict__.get("lean") and not torch.compiler.is_compiling() and lean.active():
        return partial(_lean_run, stage)
    return stage


def _lean_run(stage: Any, x: torch.Tensor, *switches: Any) -> Any:
    """``stage(x, *switches)`` with its rebuildable results tagged (:func:`lean.run`)."""
    if isinstance(stage, DecoderStage):
        return lean.run(stage.layers, lean.unpool(stage.unpool, x, *switches))
    return lean.run(_leaves(stage), x)


def _leaves(seq: nn.Module) -> Iterator[nn.Module]:
    """The modules of ``seq`` in call order, nested ``Sequential``s (DeconvNet's fc blocks) opened."""
    for m in seq.children():
        yield from (_leaves(m) if isinstance(m, nn.Sequential) else (m,))
