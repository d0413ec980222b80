"""Class-region evidence through the whole segmentation network (Zeiler & Fergus 2014, §2.1).

:class:`~segdeconv.visualize.projection.Projector` projects one *encoder* unit. Here the signal
starts at the output instead: the target is the sum of class ``c``'s logits over a region ``R``
of the output (the predicted mask of ``c`` by default, a box, or one pixel), and it is passed
down the whole network — the decoder (the adjoint of its unpooling is a gather at the encoder's
switches, its convolutions are transposed), any fc layers (DeconvNet), then the encoder (unpooling
with its own switches, transposed filters) — to the pixels.

Implementation: autograd on the eval-mode model with the ReLU's backward rule swapped
(:func:`backward_rule`), as ``captum.attr.Deconvolution`` / ``GuidedBackprop`` do with hooks.
Every other layer reverses exactly as in :class:`Projector` (max-pool backward routes through the
switches, conv backward is the transposed filter, eval-mode BN is its per-channel scale), so

* ``deconvnet``: Z&F — the ReLU passes ``relu(g)``;
* ``guided_backprop``: ``relu(g) · [a > 0]`` (Springenberg et al. 2015);
* ``gradient``: ``g · [a > 0]``, the plain gradient (Simonyan et al. 2014 saliency, signed).

The model runs with ``lean`` off (its recomputed graph assumes the model's own in-place ReLUs)
and in eval mode; both are restored afterwards. Compact (uint8) switches have their own backward.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence, Union, cast

import torch
from torch import Tensor, nn

from segdeconv.engine.checkpoint import unwrap
from segdeconv.errors import ConfigError
from segdeconv.visualize.projection import check_method, reverse_relu

Point = tuple[int, int]  # (y, x)
BoxYX = tuple[int, int, int, int]  # (y0, x0, y1, x1), end exclusive
Region = Union[None, Point, BoxYX, Sequence[int], Tensor]
ClassRef = Union[int, str]


def check_class(class_index: ClassRef, num_classes: int, class_names: Optional[Sequence[str]] = None) -> int:
    """The class index that ``class_index`` (an index, or a name in ``class_names``: exact, else
    case-insensitive) stands for."""
    if isinstance(class_index, str):
        if class_names is None:
            raise ConfigError(f"class {class_index!r} is a name but no class_names were given; "
                              f"pass class_names=load_trained(...).class_names or an index 0..{num_classes - 1}")
        names = list(class_names)
        if class_index in names:
            return names.index(class_index)
        folded = [i for i, n in enumerate(names) if n.casefold() == class_index.casefold()]
        if len(folded) != 1:
            raise ConfigError(f"class {class_index!r} is unknown; use one of {', '.join(names)}")
        return folded[0]
    if isinstance(class_index, bool) or not isinstance(class_index, int) or not 0 <= class_index < num_classes:
        raise ConfigError(f"class index {class_index!r} is out of range; use 0..{num_classes - 1} (or a class name)")
    return int(class_index)


def region_mask(region: Region, size: Point, predicted: Tensor, class_index: int) -> Tensor:
    """``region`` as a non-empty bool mask ``(H, W)``; ``None`` is ``predicted == class_index``.

    ``region``: ``None``, a pixel ``(y, x)``, a box ``(y0, x0, y1, x1)`` (ends exclusive) or a
    bool tensor ``(H, W)``. ``predicted`` is the arg-max label map ``(H, W)``.
    """
    h, w = size
    if region is None:
        mask = predicted == class_index
        if not bool(mask.any()):
            raise ConfigError(f"class {class_index} is predicted nowhere in this image; "
                              f"pass region=(y0, x0, y1, x1) or region=(y, x) to choose the pixels")
        return mask
    if isinstance(region, Tensor):
        if region.shape != (h, w) or region.dtype != torch.bool:
            raise ConfigError(f"region mask must be a bool tensor of the image size {(h, w)}, "
                              f"got {region.dtype} {tuple(region.shape)}")
        if not bool(region.any()):
            raise ConfigError("region mask is empty; select at least one pixel")
        return region.to(predicted.device)
    try:
        r = tuple(int(v) for v in region)
    except (TypeError, ValueError):
        r = ()
    if len(r) == 2:
        r = (r[0], r[1], r[0] + 1, r[1] + 1)
    if len(r) != 4:
        raise ConfigError(f"region={region!r} must be (y, x), (y0, x0, y1, x1), a bool mask or None")
    y0, x0, y1, x1 = r
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ConfigError(f"region={region!r} is empty or outside the {h}x{w} image; "
                          f"use 0 <= y0 < y1 <= {h} and 0 <= x0 < x1 <= {w} (ends exclusive)")
    mask = torch.zeros(h, w, dtype=torch.bool, device=predicted.device)
    mask[y0:y1, x0:x1] = True
    return mask


def as_batch(image: Tensor) -> Tensor:
    """One image ``(3, H, W)`` or ``(1, 3, H, W)`` → ``(1, 3, H, W)``."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ConfigError(f"expected one image (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    return image


class _RuleReLU(torch.autograd.Function):
    """ReLU forward; backward by :func:`~segdeconv.visualize.projection.reverse_relu`'s rule."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, method: str) -> Tensor:
        y = x.clamp_min(0)
        ctx.save_for_backward(y)
        ctx.method = method
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        return reverse_relu(g, y > 0, ctx.method), None


@contextmanager
def backward_rule(model: nn.Module, method: str) -> Iterator[nn.Module]:
    """Within: ``model`` in eval mode, lean off, every ``nn.ReLU`` reversed by ``method``.

    ``gradient`` keeps the real ReLUs. Modes, ``lean`` flags and ReLU forwards are restored after.
    """
    check_method(method)
    model = unwrap(model)
    modules = list(model.modules())
    modes = [(m, m.training) for m in modules]
    leans = [(m, m.lean) for m in modules if isinstance(getattr(m, "lean", None), bool)]
    relus = [m for m in modules if isinstance(m, nn.ReLU)] if method != "gradient" else []
    model.eval()
    for m, _ in leans:
        cast(Any, m).lean = False  # a plain bool attribute (checked above); Module types attributes as Tensor | Module
    for m in relus:  # an instance attribute shadows ReLU.forward (a method, which mypy will not let be assigned)
        cast(Any, m).forward = lambda x, _m=method: _RuleReLU.apply(x, _m)
    try:
        yield model
    finally:
        for m in relus:
            del m.forward
        for m, lean in leans:
            m.lean = lean
        for m, mode in modes:
            m.training = mode


def input_gradient(model: nn.Module, image: Tensor, method: str,
                   target: Callable[[nn.Module, Tensor], Tensor]) -> Tensor:
    """``∂ target(net, x) / ∂x`` under :func:`backward_rule` (``method``): a ``(3, H, W)`` map.

    ``target`` runs the (eval-mode, lean-off) network on ``x`` ``(1, 3, H, W)`` and returns the
    scalar to project — a class's logits over a region here, a decoder unit in
    :mod:`~segdeconv.visualize.decoder_maps`.
    """
    net = unwrap(model)
    p = next(net.parameters(), None)
    with torch.inference_mode(False), torch.enable_grad(), backward_rule(net, method):
        x = as_batch(image).detach().to(p.device if p is not None else image.device, torch.float32).clone()
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(target(net, x), x)
    return grad[0].detach()  # (3, H, W)


def class_evidence(model: nn.Module, image: Tensor, class_index: ClassRef, region: Region = None,
                   method: str = "deconvnet", class_names: Optional[Sequence[str]] = None) -> Tensor:
    """Project class ``c``'s evidence over ``region`` back to the pixels: a ``(3, H, W)`` map.

    The target is ``Σ_{(y,x) ∈ R} logits[c, y, x]`` of ``model`` (eval mode) on ``image``
    ``(3, H, W)`` (normalized, as the model sees it); ``region=None`` is the predicted mask of
    ``c``. ``method``: ``deconvnet`` (Z&F §2.1), ``guided_backprop`` or ``gradient`` (signed
    saliency). ``class_index`` may be a name when ``class_names`` is given. The map lives in the
    normalized input space; show it with :func:`~segdeconv.visualize.render.heatmap`.
    """
    check_method(method)

    def target(net: nn.Module, x: Tensor) -> Tensor:
        logits = net(x)  # (1, C, H, W)
        c = check_class(class_index, int(logits.shape[1]), class_names)
        mask = region_mask(region, (x.shape[-2], x.shape[-1]), logits[0].detach().argmax(0), c)
        return logits[0, c][mask].sum()

    return input_gradient(model, image, method, target)


__all__ = ["class_evidence", "input_gradient", "backward_rule", "check_class", "region_mask", "as_batch"]
