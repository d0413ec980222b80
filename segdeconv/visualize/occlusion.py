"""Occlusion sensitivity for segmentation (Zeiler & Fergus 2014, §4.2, Fig. 7).

Z&F slide a grey square over the image and plot the probability of the correct class as a
function of the square's position. For a segmentation model the score is the *mean softmax
probability of class* ``c`` *over a region* ``R`` of the output (the predicted mask of ``c`` on the
clean image by default); the map holds how much it **drops** when each patch is occluded:
``score(image) − score(occluded)``, positive where the image region supports ``c``.

Windows follow ``captum.attr.Occlusion`` exactly: along each axis the patch starts at
``0, s, 2s, …, ⌈(H − p)/s⌉·s`` (the last one may hang over the far edge and is cut there), and
each pixel gets the mean drop of the windows covering it. Occluded copies go through the model
``batch_size`` at a time, in eval mode without autograd, channels-last (faster on CPU).

**Speed** (``input_size``). The cost is one forward per window: a 32-px patch at stride 16 over a
360×480 image is 22 × 29 = 638 forwards. ``input_size=(h, w)`` — the size the model was trained at,
``load_trained(...).image_size``, as the :class:`~segdeconv.inference.predictor.Predictor`'s
``input_size="train"`` — runs the whole map at that size: the image is resized (bilinear), the patch,
stride and region are scaled by ``h/H``, ``w/W`` (a 32/16 patch at 360×480 is 16/8 at 180×240: the
same 638 windows on ¼ of the pixels), and the map is upsampled (bilinear) back to ``(H, W)``. At the
native size (``input_size=None``) the map is exactly captum's. Reusing the clean image's features
outside a patch's receptive field would not pay for SegNet: pool5's units see (nearly) the whole
image, so the whole decoder — half the forward, measured — changes with every patch.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdeconv.engine.checkpoint import unwrap
from segdeconv.errors import ConfigError
from segdeconv.visualize.evidence import ClassRef, Region, as_batch, check_class, region_mask


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of the patch along an axis of ``size`` px (captum's ``Occlusion`` layout)."""
    return [i * stride for i in range(math.ceil((size - patch) / stride) + 1)]


def check_window(size: tuple[int, int], patch: int, stride: int, batch_size: int) -> None:
    """``1 ≤ stride ≤ patch ≤ min(H, W)`` and ``batch_size ≥ 1``, else a :class:`ConfigError`."""
    for key, v in (("patch", patch), ("stride", stride), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{key}={v!r} must be an integer >= 1 (e.g. patch=32 stride=16 batch_size=16)")
    if patch > min(size):
        raise ConfigError(f"patch={patch} px is larger than the {size[0]}x{size[1]} image; use patch <= {min(size)}")
    if stride > patch:
        raise ConfigError(f"stride={stride} is larger than patch={patch}: pixels between patches would "
                          f"never be occluded; use stride <= patch")


def mean_probability(logits: Tensor, class_index: int, mask: Tensor) -> Tensor:
    """Mean softmax probability of ``class_index`` over ``mask`` (H, W): ``(B, C, H, W)`` → ``(B,)``."""
    region = logits.flatten(2)[:, :, mask.flatten()].float()  # (B, C, N): only the region's pixels
    return region.softmax(1)[:, class_index].mean(-1)


Pair = tuple[int, int]  # (along y, along x)


def _windows(size: Pair, patch: Pair, stride: Pair) -> list[Pair]:
    return [(y, x) for y in window_starts(size[0], patch[0], stride[0])
            for x in window_starts(size[1], patch[1], stride[1])]


def _batches(items: Sequence[Pair], n: int) -> Iterator[Sequence[Pair]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _scaled(v: int, scale: float) -> int:
    return max(1, int(round(v * scale)))


def _scale_region(region: Region, size: Pair, small: Pair, device: torch.device) -> Optional[Tensor]:
    """``region`` given at ``size`` as a bool mask at ``small``: pixels at least half covered (else any)."""
    if region is None:
        return None  # the predicted mask, computed at the model's size
    full = region_mask(region, size, torch.zeros((), device=device), 0)
    cover = F.interpolate(full[None, None].float(), size=small, mode="area")[0, 0]
    return cover >= 0.5 if bool((cover >= 0.5).any()) else cover > 0


def occlusion_map(model: nn.Module, image: Tensor, class_index: ClassRef, region: Region = None,
                  patch: int = 32, stride: int = 16, batch_size: int = 16, fill: float = 0.0,
                  class_names: Optional[Sequence[str]] = None,
                  input_size: Optional[Sequence[int]] = None) -> Tensor:
    """Z&F §4.2 occlusion map ``(H, W)``: the drop of class ``c``'s mean probability over ``region``.

    ``image`` ``(3, H, W)`` is normalized as the model sees it, so ``fill=0`` is the dataset's
    mean colour (Z&F's grey square). ``region``: ``None`` (the predicted mask of ``c`` on the clean
    image), ``(y, x)``, ``(y0, x0, y1, x1)`` (ends exclusive) or a bool mask ``(H, W)``; the region
    stays fixed while the patch moves. ``patch``/``stride`` in px of ``image``; ``batch_size``
    occluded copies per forward. Each pixel holds the mean drop over the patches that cover it.
    ``input_size=(h, w)``: run the model at that size (the training size; see the module doc).
    """
    return occlusion_maps(model, image, [class_index], region, patch, stride, batch_size, fill, class_names,
                          input_size)[0]


def occlusion_maps(model: nn.Module, image: Tensor, classes: Sequence[ClassRef], region: Region = None,
                   patch: int = 32, stride: int = 16, batch_size: int = 16, fill: float = 0.0,
                   class_names: Optional[Sequence[str]] = None,
                   input_size: Optional[Sequence[int]] = None) -> Tensor:
    """:func:`occlusion_map` of several classes from one sweep ``(K, H, W)``: each occluded copy goes
    through the model once and scores every class over its own region (its predicted mask when
    ``region`` is None), so K classes cost one map's forwards."""
    net = unwrap(model)
    p = next(net.parameters(), None)
    x = as_batch(image).detach().to(p.device if p is not None else image.device, torch.float32)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    check_window(size, patch, stride, batch_size)
    small = size if input_size is None else (int(input_size[0]), int(input_size[1]))
    if min(small) < 1:
        raise ConfigError(f"input_size={tuple(input_size or ())} must be two sizes >= 1 (h, w)")
    if small == size:
        return _occlusion(net, x, classes, region, (patch, patch), (stride, stride), batch_size, fill, class_names)
    sy, sx = small[0] / size[0], small[1] / size[1]
    x = F.interpolate(x, size=small, mode="bilinear", align_corners=False)  # as Predictor's input_size="train"
    m = _occlusion(net, x, classes, _scale_region(region, size, small, x.device),
                   (_scaled(patch, sy), _scaled(patch, sx)), (_scaled(stride, sy), _scaled(stride, sx)),
                   batch_size, fill, class_names)
    return F.interpolate(m[None], size=size, mode="bilinear", align_corners=False)[0]


def _occlusion(net: nn.Module, x: Tensor, classes: Sequence[ClassRef], region: Region, patch: Pair, stride: Pair,
               batch_size: int, fill: float, class_names: Optional[Sequence[str]]) -> Tensor:
    """The occlusion maps ``(K, H, W)`` of ``x`` (1, 3, H, W) at its own size, with a ``patch`` (ph, pw) window."""
    x = x.contiguous(memory_format=torch.channels_last)  # oneDNN convolves channels-last faster on CPU
    size = (int(x.shape[-2]), int(x.shape[-1]))
    (ph, pw), modes = patch, [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with torch.inference_mode():
            logits = net(x)  # (1, C, H, W)
            cs = [check_class(c, int(logits.shape[1]), class_names) for c in classes]
            masks = [region_mask(region, size, logits[0].argmax(0), c) for c in cs]

            def score(out: Tensor) -> Tensor:  # (b, K): each class's mean probability over its own region
                return torch.stack([mean_probability(out, c, m) for c, m in zip(cs, masks)], 1)

            base = score(logits)  # (1, K)
            total = torch.zeros(len(cs), *size, dtype=torch.float64, device=x.device)
            count = torch.zeros(size, dtype=torch.float64, device=x.device)
            for batch in _batches(_windows(size, patch, stride), batch_size):
                copies = x.expand(len(batch), -1, -1, -1).clone(memory_format=torch.channels_last)  # (b, 3, H, W)
                for i, (y0, x0) in enumerate(batch):
                    copies[i, :, y0:y0 + ph, x0:x0 + pw] = fill
                drops = (base - score(net(copies))).double()  # (b, K)
                for (y0, x0), d in zip(batch, drops):
                    total[:, y0:y0 + ph, x0:x0 + pw] += d.view(-1, 1, 1)
                    count[y0:y0 + ph, x0:x0 + pw] += 1
    finally:
        for m, mode in modes:
            m.training = mode
    return (total / count).float()  # (K, H, W); every pixel is covered (stride <= patch)


__all__ = ["occlusion_map", "occlusion_maps", "mean_probability", "window_starts"]
