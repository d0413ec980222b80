"""Per-parameter learning-rate and weight-decay multipliers: Caffe's ``param { lr_mult decay_mult }``.

``optimizer.param_mults`` maps a parameter kind to ``[lr_mult, decay_mult]``; the group of that kind
trains at ``lr · lr_mult`` with weight decay ``weight_decay · decay_mult`` (Caffe's ``SGDSolver``:
``local_rate = rate · lr_mult``, ``local_decay = weight_decay · decay_mult``). Kinds:

* ``conv.weight`` / ``conv.bias`` — every ``Conv2d`` and ``ConvTranspose2d`` (Caffe Convolution/Deconvolution);
* ``bn.weight`` / ``bn.bias`` — every BatchNorm's scale and shift (caffe-segnet ``BN``: blobs 0 and 1).

Unlisted kinds keep ``[1, 1]``. SegNet-Tutorial ``Models/segnet_train.prototxt``: every Convolution
``param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }``, every BN
``param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 0 }`` →
``{conv.bias: [2, 0], bn.bias: [1, 0]}``.

The groups are a function of the model and the mapping only (resume rebuilds the same ones): the
``[1, 1]`` group first (``param_groups[0]`` is the base lr the trainer logs), then one group per other
distinct ``[lr_mult, decay_mult]`` in sorted kind order; empty groups are left out.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from segdeconv.errors import ConfigError

KEY = "optimizer.param_mults"
KINDS = ("bn.bias", "bn.weight", "conv.bias", "conv.weight")
_MODULES: dict[str, tuple[type, ...]] = {"conv": (nn.Conv2d, nn.ConvTranspose2d), "bn": (_BatchNorm,)}
Mults = tuple[float, float]


def check_mults(mults: Mapping[Any, Any]) -> dict[str, Mults]:
    """``{kind: (lr_mult, decay_mult)}`` from the config mapping, or a one-line ConfigError."""
    out: dict[str, Mults] = {}
    for kind, pair in mults.items():
        if kind not in KINDS:
            raise ConfigError(f"{KEY}.{kind} is not a parameter kind; use {', '.join(KINDS)}")
        ok = isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2
        if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in pair):
            raise ConfigError(f"{KEY}.{kind}={pair!r} must be [lr_mult, decay_mult], two numbers ≥ 0 "
                              f"(e.g. [2, 0]: Caffe's conv bias)")
        out[str(kind)] = (float(pair[0]), float(pair[1]))
    return out


def param_kinds(model: nn.Module) -> dict[int, str]:
    """``id(parameter) → kind`` for the parameters of ``model``'s convolutions and BatchNorms."""
    kinds: dict[int, str] = {}
    for module in model.modules():
        prefix = next((k for k, types in _MODULES.items() if isinstance(module, types)), None)
        if prefix is None:
            continue
        for name, p in module.named_parameters(recurse=False):
            kinds[id(p)] = f"{prefix}.{name}"
    return kinds


def param_groups(params: Iterable[nn.Parameter], kinds: Mapping[int, str], mults: Mapping[str, Mults],
                 lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """``params`` split into optimizer groups by ``mults`` (module docstring); each group names its kinds."""
    order: list[Mults] = [(1.0, 1.0)] + sorted({m for k, m in sorted(mults.items())} - {(1.0, 1.0)},
                                                key=lambda m: min(k for k, v in mults.items() if v == m))
    groups: dict[Mults, dict[str, Any]] = {m: {"params": [], "kinds": set()} for m in order}
    for p in params:
        kind = kinds.get(id(p), "other")
        m = mults.get(kind, (1.0, 1.0))
        groups[m]["params"].append(p)
        groups[m]["kinds"].add(kind)
    out = []
    for (lr_mult, decay_mult), g in groups.items():
        if not g["params"]:
            continue
        group = {"params": g["params"], "name": ",".join(sorted(g["kinds"]))}
        if (lr_mult, decay_mult) != (1.0, 1.0):
            group.update(lr=lr * lr_mult, weight_decay=weight_decay * decay_mult)
        out.append(group)
    return out


def with_param_mults(factory: Callable[..., Any], model: nn.Module, mults: Optional[Mapping[Any, Any]],
                     lr: float, weight_decay: float) -> Callable[[Iterable[nn.Parameter]], Any]:
    """The optimizer ``factory`` (a partial taking parameters) applied to :func:`param_groups` of the
    parameters it is given; ``mults`` empty or ``None``: ``factory`` itself (one group)."""
    if not mults:
        return factory
    checked, kinds = check_mults(mults), param_kinds(model)
    return lambda params: factory(param_groups(params, kinds, checked, lr, weight_decay))
