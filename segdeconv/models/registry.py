"""Stable model names: how a config and a checkpoint say which architecture to build.

An architecture is a plain dict: the registry ``name`` plus the builder's keyword arguments, a nested
dict with its own ``name`` for a sub-module (the encoder)::

    {"name": "segnet", "num_classes": 11, "classifier_kernel": 3,
     "encoder": {"name": "vgg", "arch": "vgg16", "width": 0.25}}

``conf/model/*.yaml`` are such dicts and a checkpoint stores one under ``"arch"``, so renaming or
moving a class never orphans a checkpoint: only this table maps names to code (the idea of smp's
``create_model``). A model of your own is ``register_model("mine")(MyModel)``, or named by its import
path ``"package.module:MyModel"`` (no registration needed; the checkpoint records that path).
Pure Python: nothing here imports Hydra.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Mapping

from torch import nn

from segdeconv.errors import ConfigError
from segdeconv.models.deconvnet import DeconvNet
from segdeconv.models.memory.policy import MemoryPolicy, apply_policy, current_names, split_policy
from segdeconv.models.segnet import SegNet, segnet_basic
from segdeconv.models.vgg import VGGEncoder

Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {"segnet": SegNet, "segnet_basic": segnet_basic, "deconvnet": DeconvNet,
                              "vgg": VGGEncoder}
# The code paths that checkpoints of format 1 (``_target_`` in their model config) name.
LEGACY_TARGETS = {
    "segdeconv.models.SegNet": "segnet", "segdeconv.models.segnet.SegNet": "segnet",
    "segdeconv.models.segnet_basic": "segnet_basic", "segdeconv.models.segnet.segnet_basic": "segnet_basic",
    "segdeconv.models.DeconvNet": "deconvnet", "segdeconv.models.deconvnet.DeconvNet": "deconvnet",
    "segdeconv.models.VGGEncoder": "vgg", "segdeconv.models.vgg.VGGEncoder": "vgg",
}
TRAINING_ONLY = ("init_from",)  # model.* keys that instruct the trainer, not the constructor


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` buildable as ``model.name=<name>`` (and from checkpoints naming it)."""
    def add(builder: Builder) -> Builder:
        if name in MODELS and MODELS[name] is not builder:
            raise ValueError(f"model name {name!r} is already registered to {MODELS[name]!r}")
        MODELS[name] = builder
        return builder
    return add


def builder(name: str, where: str = "model") -> Builder:
    """The callable ``name`` stands for: a registered name, or an import path ``module:attr``."""
    if name in MODELS:
        return MODELS[name]
    module, sep, attr = str(name).partition(":")
    if sep and module and attr:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"{where}.name={name!r} cannot be imported ({e}); put its module on PYTHONPATH") from None
    raise ConfigError(f"{where}.name={name!r} is unknown; use one of {', '.join(sorted(MODELS))} "
                      f"or an import path 'package.module:Class'")


def build(arch: Mapping[str, Any], where: str = "model", pretrained: bool = False) -> nn.Module:
    """The module ``arch`` describes. ``pretrained=False`` (rebuilding a trained model): an encoder's
    ``weights`` (ImageNet file) is not read — the checkpoint holds every weight. The memory keys
    (``lean``, ``recompute``, ``recompute_fc``) are no constructor's: they choose the memory policy applied
    to the built model (:mod:`segdeconv.models.memory`)."""
    policy, rest = split_policy(arch, where) if isinstance(arch, Mapping) else (MemoryPolicy(), arch)
    return apply_policy(_build(rest, where, pretrained), policy)


def _build(arch: Mapping[str, Any], where: str, pretrained: bool) -> nn.Module:
    if not isinstance(arch, Mapping) or not arch.get("name"):
        raise ConfigError(f"{where}.name is not set; choose a model group, e.g. model=segnet (conf/model/)")
    kwargs = {k: v for k, v in arch.items() if k != "name" and k not in TRAINING_ONLY}
    if not pretrained and "weights" in kwargs:
        kwargs["weights"] = None
    for key, value in kwargs.items():
        if isinstance(value, Mapping) and "name" in value:  # a sub-module: the encoder
            kwargs[key] = _build(value, f"{where}.{key}", pretrained)
    fn = builder(str(arch["name"]), where)
    _check_kwargs(fn, kwargs, arch["name"], where)
    try:
        model = fn(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {arch['name']} cannot be built ({e}); check the {where}.* keys") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{where}.name={arch['name']!r} did not build an nn.Module")
    return model


def num_classes_of(model: nn.Module) -> int:
    """``model.num_classes``, the int attribute every segdeconv model sets (``nn.Module.__getattr__``
    types attribute access as ``Tensor | Module``)."""
    n: Any = model.num_classes
    return int(n)


def _check_kwargs(fn: Builder, kwargs: Mapping[str, Any], name: str, where: str) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]} is not an option of {name}; its options are "
                          f"{', '.join(p for p in params if p != 'self')}")


def from_legacy(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 model config (``_target_: segdeconv.models.SegNet``) as an architecture dict; a config
    that already has a ``name`` is returned as a copy. Nested ``_target_`` nodes are converted too."""
    out: dict[str, Any] = {}
    for key, value in model_cfg.items():
        if key == "_target_":
            out["name"] = LEGACY_TARGETS.get(str(value)) or ":".join(str(value).rsplit(".", 1))
        elif isinstance(value, Mapping):
            out[key] = from_legacy(value)
        else:
            out[key] = value
    return out


def arch_of(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint records under ``"arch"``: the model config without its training-only keys,
    with the encoder's ``weights`` file dropped (the checkpoint holds the trained weights) and the memory
    keys under their current names (``checkpoint`` → ``recompute``)."""
    arch = {k: v for k, v in current_names(from_legacy(model_cfg)).items() if k not in TRAINING_ONLY}
    encoder = arch.get("encoder")
    if isinstance(encoder, dict) and "weights" in encoder:
        encoder["weights"] = None
    return arch
