"""Zeiler & Fergus (2014) deconvnet projection of one feature activation back to pixel space.

Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*, ECCV 2014, §2.1: to
examine an activation, set every other activation of its layer to zero and pass the map down
through a "deconvnet" attached to the network, which reverses each layer with

* **unpooling** — max-pooling is not invertible, but the *switches* recorded in the forward pass
  (the location of each pooling region's max) put every value back where the max came from;
* **rectification** — the reconstructed signal goes through a ReLU (kept positive);
* **filtering** — the *transposed* versions of the same learned filters (the adjoint of the
  convolution: ``F.conv_transpose2d`` with the conv's own weight, stride, dilation; no bias).

The projection is built from the encoder's own modules: no weights are copied.

**BatchNorm** (not in the paper). In eval mode BN is the per-channel affine map
``y = γ (x − μ) / √(σ² + ε) + β``. The projection treats it as the conv bias is treated: the
shift is dropped and the linear part is applied in the transposed direction — being diagonal,
it is itself: the signal is multiplied per channel by ``γ / √(σ² + ε)``. This equals folding BN
into the preceding conv (weight × ``γ/√(σ²+ε)`` per output channel) and filtering with the
folded weight, and it is exactly what autograd (hence captum) does through an eval-mode BN.

**The three methods differ only in how a ReLU is reversed** (``a`` = the forward activation):

* ``deconvnet``: ``relu(g)`` (Z&F; ``captum.attr.Deconvolution``);
* ``gradient``: ``g · [a > 0]`` (the ReLU's derivative; Simonyan et al. 2014 saliency, autograd);
* ``guided_backprop``: ``relu(g) · [a > 0]`` (Springenberg et al. 2015; ``captum.attr.GuidedBackprop``).

A projection is zero outside the unit's receptive field, so the forward record and the pass down
both run on receptive-field crops (:func:`~segdeconv.visualize.geometry.plan_crop`) — exact, and
many times cheaper than whole-image passes for all but the deepest layers. Tensors are kept
channels-last, which oneDNN convolves ~1.7× faster on CPU.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdeconv.engine.checkpoint import unwrap
from segdeconv.errors import ConfigError
from segdeconv.models.layers import Pool, Switches, Unpool
from segdeconv.visualize.geometry import Box, CropStep, crop, full_box, map_sizes, plan_crop, receptive_box, window

Method = Literal["deconvnet", "guided_backprop", "gradient"]
METHODS: tuple[str, ...] = ("deconvnet", "guided_backprop", "gradient")


def reverse_relu(g: Tensor, active: Tensor, method: str) -> Tensor:
    """Pass signal ``g`` down through a ReLU whose forward output was positive where ``active``."""
    if method == "deconvnet":
        return g.clamp_min(0)  # Z&F §2.1 rectification: the forward activation is not used
    if method == "gradient":
        return g * active
    return g.clamp_min(0) * active  # guided backprop: both


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else a :class:`ConfigError`."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is unknown; use one of {', '.join(METHODS)}")
    return method


def bn_scale(bn: nn.BatchNorm2d) -> Tensor:
    """The linear part ``γ / √(σ² + ε)`` of an eval-mode BatchNorm, per channel."""
    if bn.running_var is None:
        raise ConfigError(f"{bn} has no running statistics; the projection needs eval-mode BN")
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


def transposed_filter(g: Tensor, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> Tensor:
    """Filter with the transposed conv weights (Z&F §2.1), dropping what falls in the padding."""
    y = F.conv_transpose2d(g, conv.weight, None, conv.stride, 0, 0, conv.groups, conv.dilation)
    left, right, top, bottom = pad
    return y[..., top:y.shape[-2] - bottom, left:y.shape[-1] - right]


def _crop_forward(step: CropStep, x: Tensor):
    """One module on a crop: convs zero-pad only the sides clipped at the map border."""
    m = step.module
    if isinstance(m, nn.Conv2d):
        return F.conv2d(F.pad(x, step.pad), m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
    return m(x)  # Pool (ceil mode covers a clipped last window), BN/ReLU/Dropout: per position


@contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """Eval mode (BN uses its running statistics) and no autograd; restores the modes after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


@dataclass
class Recording:
    """A forward pass over a crop: the plan, ReLU masks ``a > 0`` and pool switches by step."""

    steps: list[CropStep]
    active: dict[int, Tensor]
    switches: dict[int, Switches]
    output: Tensor  # (1, C, h, w): the layer's activations on the top box


@dataclass
class Projection:
    """The projection of one activation, on ``box`` (the clipped receptive field) of the input."""

    crop: Tensor  # (3, h, w), in the (normalized) input space
    box: Box
    size: tuple[int, int]  # input (H, W)
    layer: str
    channel: int
    position: tuple[int, int]  # (y, x) in the layer's map
    value: float  # the activation
    method: str

    def image(self) -> Tensor:
        """The projection as a full input-size image ``(3, H, W)`` (zero outside ``box``)."""
        return crop(self.crop, self.box, (0, self.size[0], 0, self.size[1]))


def block_names(features: nn.Sequential, convs: Mapping[str, nn.Module]) -> dict[str, int]:
    """``{"conv1_1": i, …, "pool1": j, …}``: the index of the module whose output each name is.

    A conv's name stands for the output of its conv-BN-ReLU block (the rectified feature map,
    as in Z&F); ``poolN`` for the N-th pool's output.
    """
    index = {id(m): i for i, m in enumerate(features)}
    names: dict[str, int] = {}
    for name, conv in convs.items():
        i = index[id(conv)]
        while i + 1 < len(features) and isinstance(features[i + 1], (nn.BatchNorm2d, nn.ReLU)):
            i += 1
        names[name] = i
    pools = [i for i, m in enumerate(features) if isinstance(m, Pool)]
    names.update({f"pool{n + 1}": i for n, i in enumerate(pools)})
    return dict(sorted(names.items(), key=lambda kv: kv[1]))


class Projector:
    """Deconvnet / guided-backprop / gradient projections through a conv–BN–ReLU–pool stack.

    ``Projector.from_model(model)`` takes a :class:`~segdeconv.models.VGGEncoder` or any model
    with one as ``.encoder`` (SegNet, SegNet-Basic, DeconvNet). The constructor takes any
    ``nn.Sequential`` of supported modules and a ``{name: module index}`` table.
    """

    def __init__(self, features: nn.Sequential, layers: Mapping[str, int]) -> None:
        for m in features:
            window(m)  # raises on an unsupported module
        self.features = features
        self.layers = dict(sorted(layers.items(), key=lambda kv: kv[1]))
        self.unpool = Unpool()

    @classmethod
    def from_model(cls, model: nn.Module) -> "Projector":
        """The projector of ``model``'s VGG encoder (``model.encoder`` or ``model`` itself)."""
        enc: Any = getattr(unwrap(model), "encoder", model)  # duck-typed: .features and .conv_layers, checked here
        if not (isinstance(getattr(enc, "features", None), nn.Sequential) and hasattr(enc, "conv_layers")):
            raise ConfigError(f"{type(model).__name__} has no VGG encoder (.encoder.features) to project through")
        return cls(enc.features, block_names(enc.features, enc.conv_layers()))

    @property
    def device(self) -> torch.device:
        p = next(self.features.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def layer_index(self, layer: str) -> int:
        """Module index of ``layer``; an unknown name is a one-line error listing the valid ones."""
        if layer not in self.layers:
            raise ConfigError(f"unknown layer {layer!r}; valid layers: {', '.join(self.layers)}")
        return self.layers[layer]

    def num_channels(self, layer: str) -> Optional[int]:
        """Channels of ``layer``'s feature map (``None``: no conv below it, the input's count)."""
        end = self.layer_index(layer)
        convs = [m for m in self.features[:end + 1] if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels if convs else None

    def check_channel(self, layer: str, channel: int) -> int:
        """``channel`` if ``layer`` has it, else a :class:`ConfigError` giving the valid range."""
        n = self.num_channels(layer)
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0 or (n is not None and channel >= n):
            valid = f"{n} channels: 0..{n - 1}" if n is not None else "channels start at 0"
            raise ConfigError(f"channel {channel!r} is out of range for {layer} ({valid})")
        return channel

    def map_size(self, layer: str, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of ``layer``'s map for an input of ``size`` (H, W)."""
        return map_sizes(self.features[:self.layer_index(layer) + 1], size)[-1]

    def receptive_box(self, layer: str, y: int, x: int) -> Box:
        """Unclipped receptive field of unit ``(y, x)`` of ``layer`` in input pixels."""
        return receptive_box(self.features[:self.layer_index(layer) + 1], y, x)

    def activations(self, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """Whole-map activations ``(B, C, h, w)`` of ``layers`` (one forward, up to the deepest)."""
        wanted = {self.layer_index(n): n for n in layers}
        out: dict[str, Tensor] = {}
        x = images.to(self.device).contiguous(memory_format=torch.channels_last)
        with _inference(self.features):
            for i, m in enumerate(self.features[:max(wanted) + 1]):
                x = m(x)[0] if isinstance(m, Pool) else m(x)
                if i in wanted:
                    out[wanted[i]] = x
        return out

    def record(self, image: Tensor, layer: str, top: Box) -> Recording:
        """Forward pass on the crop that box ``top`` of ``layer`` needs, keeping masks and switches."""
        x = _as_batch(image).to(self.device)
        steps = plan_crop(self.features[:self.layer_index(layer) + 1], (x.shape[-2], x.shape[-1]), top)
        x = crop(x, full_box(x), steps[0].in_box).contiguous(memory_format=torch.channels_last)
        active: dict[int, Tensor] = {}
        switches: dict[int, Switches] = {}
        with _inference(self.features):
            for i, step in enumerate(steps):
                x = _crop_forward(step, x)
                if isinstance(step.module, Pool):
                    x, switches[i] = x
                elif isinstance(step.module, nn.ReLU):
                    active[i] = x > 0
        return Recording(steps, active, switches, x)

    def project_down(self, g: Tensor, rec: Recording, method: str = "deconvnet") -> Tensor:
        """Reverse every recorded layer, top to bottom: ``g`` on the top box → input-crop signal."""
        check_method(method)
        with torch.no_grad():
            for i in reversed(range(len(rec.steps))):
                m = rec.steps[i].module
                if isinstance(m, nn.ReLU):
                    g = reverse_relu(g, rec.active[i], method)
                elif isinstance(m, nn.BatchNorm2d):
                    g = g * bn_scale(m).view(1, -1, 1, 1)
                elif isinstance(m, nn.Conv2d):
                    g = transposed_filter(g, m, rec.steps[i].pad)
                elif isinstance(m, Pool):
                    g = self.unpool(g, rec.switches[i])  # Z&F unpooling with the forward switches
                # Dropout / Identity: the identity in eval mode
        return g

    def top_position(self, image: Tensor, layer: str, channel: int) -> tuple[int, int]:
        """``(y, x)`` of the strongest activation of ``channel`` in ``layer`` for ``image``."""
        fmap = self.activations(_as_batch(image), [layer])[layer][0, channel]
        y, x = divmod(int(fmap.argmax()), fmap.shape[-1])
        return y, x

    def project(self, image: Tensor, layer: str, channel: int,
                position: Optional[tuple[int, int]] = None, method: str = "deconvnet",
                seed: Optional[float] = None) -> Projection:
        """Project activation ``(layer, channel, position)`` of ``image`` (3,H,W) to pixel space.

        ``position=None`` takes the channel's strongest activation. Every other activation of the
        layer is zeroed; the chosen one keeps its value (Z&F) unless ``seed`` gives another
        (``seed=1.0`` is the gradient of the activation, as captum computes it).
        """
        return self.project_methods(image, layer, channel, position, [method], seed)[method]

    def project_methods(self, image: Tensor, layer: str, channel: int,
                        position: Optional[tuple[int, int]] = None,
                        methods: Sequence[str] = METHODS, seed: Optional[float] = None) -> dict[str, Projection]:
        """:meth:`project` with several ``methods`` sharing one forward record: ``{method: Projection}``."""
        for method in methods:
            check_method(method)
        self.check_channel(layer, channel)
        x = _as_batch(image)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        y, xx = position if position is not None else self.top_position(x, layer, channel)
        h, w = self.map_size(layer, size)
        if not (0 <= y < h and 0 <= xx < w):
            raise ConfigError(f"position {(y, xx)} is outside the {h}x{w} {layer} map of a {size} input")
        rec = self.record(x, layer, (y, y + 1, xx, xx + 1))
        value = float(rec.output[0, channel, 0, 0])
        g = torch.zeros_like(rec.output)
        g[0, channel, 0, 0] = value if seed is None else seed
        return {m: Projection(self.project_down(g, rec, m)[0].contiguous(), rec.steps[0].in_box, size,
                              layer, channel, (y, xx), value, m) for m in methods}


def _as_batch(image: Tensor) -> Tensor:
    if image.dim() == 3:
        return image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ConfigError(f"expected one image (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    return image
