"""VGG encoders built from one cfg table, with max-pool switches (Simonyan & Zisserman 2015).

``features`` is an ``nn.Sequential`` laid out exactly like ``torchvision.models.vgg16(_bn).features``
(conv, [BN], ReLU, …, pool); ImageNet weights load from a local torchvision ``vgg*`` or ``vgg*_bn``
state dict (:mod:`segdeconv.models.pretrained`, ``model.encoder.weights``). The pools are
:class:`~segdeconv.models.layers.Pool` modules that also return switches; decoders mirror the same
table (:func:`mirror_stages`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from torch import Tensor, nn

from segdeconv.errors import ConfigError
from segdeconv.models import pretrained
from segdeconv.models.initialization import init_weights
from segdeconv.models.layers import Pool, Switches, conv_bn_relu

# name -> (channels per stage, kernel size). One table for every encoder and its mirrored decoder.
CFGS: dict[str, tuple[list[list[int]], int]] = {
    "vgg11": ([[64], [128], [256, 256], [512, 512], [512, 512]], 3),
    "vgg13": ([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], 3),
    "vgg16": ([[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]], 3),
    # SegNet-Basic (Badrinarayanan et al. 2017, §4.1): 4 stages of 64 7×7 filters.
    "basic": ([[64], [64], [64], [64]], 7),
}


def scaled_stages(arch: str, width: float, num_stages: Optional[int] = None) -> tuple[list[list[int]], int]:
    """The cfg table of ``arch`` with every channel count multiplied by ``width`` (≥ 1 channel),
    cut to its ``num_stages`` shallowest stages (``None``: all of them)."""
    if arch not in CFGS:
        raise ConfigError(f"model.encoder.arch={arch!r} is unknown; choose one of {sorted(CFGS)}")
    if not width > 0:
        raise ConfigError(f"model.encoder.width={width} must be > 0 (e.g. 1.0, 0.5, 0.25)")
    stages, k = CFGS[arch]
    valid = isinstance(num_stages, int) and not isinstance(num_stages, bool) and 1 <= num_stages <= len(stages)
    if num_stages is not None and not valid:
        raise ConfigError(f"model.encoder.num_stages={num_stages!r} must be an integer from 1 to {len(stages)} "
                          f"(arch={arch} has {len(stages)} stages), or null for all of them")
    return [[max(1, int(round(c * width))) for c in s] for s in stages[:num_stages]], k


def conv_names(stages: list[list[int]]) -> list[str]:
    """Paper names of the convolutions: conv1_1, conv1_2, conv2_1, …"""
    return [f"conv{i + 1}_{j + 1}" for i, s in enumerate(stages) for j in range(len(s))]


class VGGEncoder(nn.Module):
    """VGG conv stages whose pools record switches.

    ``forward(x)`` returns ``(features, switches)``: features ``(B, C5, H/2^S, W/2^S)`` and one
    :class:`Switches` per pool, shallowest first. ``weights``: a local torchvision ``vgg*`` or
    ``vgg*_bn`` state dict, or ``"imagenet"``/``"imagenet_bn"`` from the torch hub cache — never
    downloaded (:mod:`~segdeconv.models.pretrained`; ``pretrained_bn``: whether the BN came from it).
    ``compact_switches=True``: 1-byte window codes instead of int64 indices (SegNet §3; bit-identical).
    ``num_stages=N`` keeps the N shallowest stages (N pools: output stride 2^N; e.g. 4 for images
    of ~100 px, where VGG16's fifth pool leaves a 3×4 map; pretrained weights load for those stages).
    """

    def __init__(
        self,
        arch: str = "vgg16",
        batch_norm: bool = True,
        width: float = 1.0,
        ceil_mode: bool = True,
        compact_switches: bool = False,
        in_channels: int = 3,
        weights: Optional[Union[str, Path]] = None,
        num_stages: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.arch, self.batch_norm, self.width = arch, batch_norm, width
        self.stages, self.kernel_size = scaled_stages(arch, width, num_stages)
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage in self.stages:
            for c in stage:
                layers += conv_bn_relu(c_in, c, self.kernel_size, batch_norm)
                c_in = c
            layers.append(Pool(ceil_mode=ceil_mode, compact=compact_switches))
        self.features = nn.Sequential(*layers)
        self.out_channels = c_in
        self.ceil_mode = ceil_mode
        init_weights(self)
        self.weights = str(weights) if weights else None
        self.weights_layout: Optional[str] = None  # "vgg16", "vgg16_bn", … once loaded ("encoder": by name)
        self.pretrained_bn = False  # BN loaded from weights (False: fresh, e.g. from a plain vgg16 file)
        if weights:
            self.load_pretrained(weights)

    @property
    def num_pools(self) -> int:
        return len(self.stages)

    def pools(self) -> list[Pool]:
        return [m for m in self.features if isinstance(m, Pool)]

    def set_dropout(self, p: float, stages: int) -> None:
        """``nn.Dropout(p)`` on the output of the ``stages`` deepest pools (Bayesian SegNet:
        ``encdrop3``–``encdrop5`` after ``pool3``–``pool5``); ``p=0`` removes them. No parameters:
        the state dict and torchvision's layer indices stay the same."""
        for depth, pool in enumerate(self.pools()):
            pool.dropout = nn.Dropout(p) if p > 0 and depth >= self.num_pools - stages else None

    def conv_layers(self) -> dict[str, nn.Conv2d]:
        """``{"conv1_1": Conv2d, …}`` in forward order (used by the Zeiler & Fergus projection)."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        return dict(zip(conv_names(self.stages), convs))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Switches]]:
        switches: list[Switches] = []
        for stage in self.stage_modules():  # shallowest first: [conv, BN, ReLU]×n, Pool
            x, sw = stage(x)  # (B, C, H, W) -> (B, C', ⌈H/2⌉, ⌈W/2⌉) and the pool's switches
            switches.append(sw)
        return x, switches  # (B, C5, H/32, W/32) for VGG16, 5 switches (num_stages=N: H/2^N, N switches)

    def stage_modules(self) -> list[nn.Sequential]:
        """One ``Sequential`` per stage, shallowest first, ending with its :class:`Pool` (views of
        ``features``; a memory policy, :mod:`segdeconv.models.memory`, hands out wrapped ones)."""
        ends = [i + 1 for i, m in enumerate(self.features) if isinstance(m, Pool)]
        return [self.features[a:b] for a, b in zip([0] + ends[:-1], ends)]

    def load_pretrained(self, weights: Union[str, Path]) -> None:
        """Load ``features.*`` from a torchvision ``vgg*``/``vgg*_bn`` state dict (a path, ``imagenet`` or
        ``imagenet_bn``); a plain file leaves the BN fresh. Clear errors on any mismatch."""
        layout = pretrained.load_encoder(self, weights)
        self.weights_layout = layout.name if layout else "encoder"
        self.pretrained_bn = self.batch_norm and (layout is None or layout.batch_norm)


def mirror_stages(stages: list[list[int]]) -> list[list[tuple[int, int]]]:
    """Decoder (in, out) channels per stage, deepest first, mirroring the encoder table.

    Each decoder stage keeps the stage's width and its last conv returns to the width of the
    previous encoder stage, e.g. VGG16 → (512,512,512 | 512,512,256 | 256,256,128 | 128,64 | 64,64)
    as in Noh et al. 2015, Fig. 2 / SegNet Fig. 2.
    """
    out: list[list[tuple[int, int]]] = []
    for i in reversed(range(len(stages))):
        chs = stages[i]
        c, c_prev = chs[-1], (stages[i - 1][-1] if i > 0 else chs[0])
        outs = [c] * (len(chs) - 1) + [c_prev]
        ins = [c] + outs[:-1]
        out.append(list(zip(ins, outs)))
    return out
