"""Weight initialisation: torchvision's (the default) and the original Caffe fillers (``init: paper``).

Fan-in/fan-out are counted from the layer's *meaning*, not from the weight's layout: a
``Conv2d`` weight is ``(out, in, kh, kw)`` but a ``ConvTranspose2d`` weight is ``(in, out, kh, kw)``,
so ``torch.nn.init``'s ``fan_out`` mode on a transposed convolution is really its fan-in (and
``fan_in`` its fan-out). :func:`true_fans` undoes that swap, so a convolution and the equivalent
stride-1 transposed convolution get the same scale.

Caffe's fillers (``include/caffe/filler.hpp``, BVLC/caffe): ``msra`` draws N(0, 2/n) with
n = fan_in = ``count / num`` = in·kh·kw by default (He et al. 2015); ``gaussian`` draws N(0, std²);
``constant`` fills ``value`` (default 0). A layer without ``weight_filler`` gets constant 0, i.e.
the prototxt expects its weights from a pretrained model.
"""
from __future__ import annotations

import math
from typing import Iterable, Union

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from segdeconv.errors import ConfigError

INITS = ("torchvision", "paper")
CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def check_init(init: str) -> str:
    if init not in INITS:
        raise ConfigError(f"model.init={init!r} is unknown; choose one of {INITS}")
    return init


def true_fans(conv: Union[nn.Conv2d, nn.ConvTranspose2d]) -> tuple[int, int]:
    """(fan_in, fan_out) of a (transposed) convolution with groups=1: inputs feeding one output
    value, and outputs one input value reaches (for a stride-1 transposed conv: in·k², out·k²)."""
    w = conv.weight
    rf = w[0][0].numel()  # kh·kw
    c_out, c_in = (w.shape[1], w.shape[0]) if isinstance(conv, nn.ConvTranspose2d) else (w.shape[0], w.shape[1])
    return int(c_in * rf), int(c_out * rf)


def init_weights(module: nn.Module) -> None:
    """torchvision VGG initialisation: Kaiming-normal convs (std √(2/fan_out)), unit BN, zero biases.

    Both convolution kinds use their true fan-out (:func:`true_fans`); ``nn.init.kaiming_normal_(
    mode="fan_out")`` would give a transposed convolution √(2/fan_in) instead.
    """
    for m in module.modules():
        if isinstance(m, CONVS):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / true_fans(m)[1]))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def msra_(modules: Iterable[nn.Module]) -> None:
    """Caffe ``weight_filler { type: "msra" }`` (fan-in) and ``bias_filler { type: "constant" }``.

    On a transposed convolution this uses its true fan-in (in·k²); Caffe's ``count / num`` would
    give out·k² there, but no original prototxt puts an msra filler on a deconvolution.
    """
    for m in modules:
        if isinstance(m, CONVS):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / true_fans(m)[0]))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def gaussian_(modules: Iterable[nn.Module], std: float) -> None:
    """Caffe ``weight_filler { type: "gaussian" std: … }``, ``bias_filler { type: "constant" value: 0 }``."""
    for m in modules:
        if isinstance(m, CONVS):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def set_bn_eps(model: nn.Module, eps: float) -> nn.Module:
    """Give every BatchNorm of ``model`` the variance ε ``eps`` (after construction; returns ``model``).

    caffe-segnet's ``BN`` layer adds 1e-9 to the variance (``bn_layer.cpp``), PyTorch 1e-5: at a
    channel of variance ~1e-5 the two normalise differently by √2. ``model.bn_eps`` of the paper recipes."""
    if not (isinstance(eps, (int, float)) and 0 < eps < 1):
        raise ConfigError(f"model.bn_eps={eps!r} must be a number in (0, 1); e.g. model.bn_eps=1e-9 "
                          f"(caffe-segnet) or 1e-5 (PyTorch's default)")
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eps = float(eps)
    return model


def bn_(modules: Iterable[nn.Module], shift: float) -> None:
    """Caffe-SegNet ``BN`` layer: ``scale_filler`` constant 1, ``shift_filler`` constant ``shift``."""
    for m in modules:
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, shift)
