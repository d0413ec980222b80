"""Inference strategies shared by :class:`~segdeconv.inference.Predictor` and ``evaluate.py``.

Every strategy is a ``predict(model, images) -> logits`` function (the hook of
:func:`segdeconv.engine.evaluate`): ``images`` (B, 3, H, W) normalized, result (B, C, H, W).

- :func:`sliding_window`: tiles of ``window`` every ``stride`` pixels, softmax probabilities
  blended with Gaussian or uniform weights (for images larger than the training crops).
- :func:`tta`: horizontal flip and multi-scale views, softmax probabilities averaged.
- :class:`~segdeconv.inference.montecarlo.MCDropout`: Monte-Carlo dropout (Bayesian SegNet), the
  mean softmax of seeded stochastic passes (``mc_samples``; runs alone, not combined with the others).

Where several predictions are blended the result is ``log(mean probability)``: its argmax is the
argmax of the averaged probabilities and its softmax gives them back. A single view (scale 1.0,
no flip; or one window covering the image) returns the model's logits unchanged, so the trivial
settings reproduce plain evaluation exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdeconv.errors import ConfigError
from segdeconv.inference.montecarlo import mc_predict_fn

PredictFn = Callable[[nn.Module, Tensor], Tensor]
BLENDS = ("gaussian", "uniform")


def plain(model: nn.Module, images: Tensor) -> Tensor:
    """The model's logits for the whole image."""
    return model(images)


def _pair(value: Any, key: str) -> tuple[int, int]:
    """``224`` or ``[H, W]`` → ``(H, W)`` positive ints (ConfigError naming ``key`` otherwise)."""
    vals = [value, value] if isinstance(value, (int, float)) else list(value)
    if len(vals) != 2 or any(int(v) != v or int(v) < 1 for v in vals):
        raise ConfigError(f"{key}={value!r} must be a positive integer or [H, W] of positive integers")
    return int(vals[0]), int(vals[1])


@dataclass(frozen=True)
class TTAConfig:
    """Test-time augmentation: ``flip`` adds mirrored views; one view per scale in ``scales``."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @classmethod
    def from_any(cls, spec: Any, key: str = "tta") -> "TTAConfig":
        """From None, a TTAConfig or a mapping ``{flip: bool, scales: [float, …]}``."""
        if spec is None or isinstance(spec, cls):
            return spec or cls()
        scales = spec.get("scales") or [1.0]
        scales = [scales] if isinstance(scales, (int, float)) else list(scales)
        if any(not isinstance(s, (int, float)) or not 0 < s <= 8 for s in scales):
            raise ConfigError(f"{key}.scales={scales} must be numbers in (0, 8], e.g. [0.75, 1.0, 1.25]")
        return cls(bool(spec.get("flip", False)), tuple(float(s) for s in scales))

    @property
    def trivial(self) -> bool:
        return not self.flip and self.scales == (1.0,)


@dataclass(frozen=True)
class SlidingConfig:
    """Sliding-window inference: ``window`` (H, W), ``stride`` (default: half the window)."""

    window: Optional[tuple[int, int]] = None
    stride: Optional[tuple[int, int]] = None
    blend: str = "gaussian"

    @classmethod
    def from_any(cls, spec: Any, key: str = "sliding") -> "SlidingConfig":
        """From None, a window size, a SlidingConfig or a mapping ``{window, stride, blend}``."""
        if spec is None or isinstance(spec, cls):
            return spec or cls()
        if not hasattr(spec, "get"):  # a bare window size: 224 or [H, W]
            spec = {"window": spec}
        blend = str(spec.get("blend") or "gaussian")
        if blend not in BLENDS:
            raise ConfigError(f"{key}.blend={blend!r} is unknown; use one of {BLENDS}")
        if spec.get("window") is None:
            return cls(blend=blend)
        window = _pair(spec["window"], f"{key}.window")
        stride = spec.get("stride")
        half = (max(1, window[0] // 2), max(1, window[1] // 2))
        stride = _pair(stride, f"{key}.stride") if stride is not None else half
        if stride[0] > window[0] or stride[1] > window[1]:
            raise ConfigError(f"{key}.stride={list(stride)} is larger than {key}.window={list(window)}; "
                              f"pixels between windows would get no prediction")
        return cls(window, stride, blend)


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Tile offsets covering ``size``: every ``stride``, the last one flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    return starts if starts[-1] == size - window else starts + [size - window]


def blend_weights(window: tuple[int, int], blend: str, device: torch.device) -> Tensor:
    """(h, w) tile weights: all ones (uniform) or a Gaussian with σ = window/8, peak 1, floor 1e-3."""
    if blend == "uniform":
        return torch.ones(window, device=device)
    axes = []
    for n in window:
        x = torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2
        axes.append(torch.exp(-0.5 * (x / max(n / 8, 1e-6)) ** 2))
    return (axes[0][:, None] * axes[1][None, :]).clamp_min_(1e-3)


def sliding_window(model: nn.Module, images: Tensor, window: tuple[int, int],
                   stride: tuple[int, int], blend: str = "gaussian", base: PredictFn = plain) -> Tensor:
    """Blend softmax probabilities of ``base`` over tiles; one tile covering all → ``base`` logits.

    A window larger than the image is clipped to the image (no padding), so the tiles never
    contain pixels the whole-image prediction would not see.
    """
    h, w = images.shape[-2:]
    win = (min(window[0], h), min(window[1], w))
    ys, xs = _starts(h, win[0], stride[0]), _starts(w, win[1], stride[1])
    if len(ys) == 1 and len(xs) == 1:
        return base(model, images)
    weight = blend_weights(win, blend, images.device)
    acc: Optional[Tensor] = None
    norm = torch.zeros((h, w), device=images.device)
    for y in ys:
        for x in xs:
            tile = base(model, images[..., y:y + win[0], x:x + win[1]]).float().softmax(1)
            if acc is None:
                acc = images.new_zeros((images.shape[0], tile.shape[1], h, w), dtype=torch.float32)
            acc[..., y:y + win[0], x:x + win[1]] += tile * weight
            norm[y:y + win[0], x:x + win[1]] += weight
    assert acc is not None  # _starts never returns an empty list: at least one tile ran
    return (acc / norm).clamp_min_(1e-12).log_()


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def tta(model: nn.Module, images: Tensor, flip: bool = False, scales: Sequence[float] = (1.0,),
        base: PredictFn = plain) -> Tensor:
    """Average the softmax probabilities of ``base`` over scales × (identity, horizontal flip).

    Each scaled view is resized bilinearly, and its logits are resized back to the input size
    before the softmax. One view (scale 1.0, no flip) returns ``base``'s logits unchanged.
    """
    size = images.shape[-2:]
    views = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]
    if views == [(1.0, False)]:
        return base(model, images)
    total: Optional[Tensor] = None
    for scale, flipped in views:
        x = _resize(images, [max(1, round(n * scale)) for n in size])
        x = x.flip(-1) if flipped else x
        logits = base(model, x).float()
        logits = _resize(logits.flip(-1) if flipped else logits, size)
        probs = logits.softmax(1)
        total = probs if total is None else total + probs
    if total is None:  # no scales: nothing to average (as before, an error)
        raise TypeError("tta needs at least one scale")
    return (total / len(views)).clamp_min_(1e-12).log_()


def _crf_on(crf_cfg: Any) -> bool:
    return bool(crf_cfg is not None and crf_cfg.get("enabled", False))


def make_predict_fn(tta_cfg: Any = None, sliding_cfg: Any = None, crf_cfg: Any = None,
                    mc_samples: Any = None, mc_seed: Any = 0) -> Optional[PredictFn]:
    """The ``predict`` hook for these settings (None when they amount to the plain model).

    Composition: sliding windows inside each TTA view; dense CRF (optional) on the final
    probabilities. ``mc_samples`` (Monte-Carlo dropout) runs alone: combined with another strategy it
    is a ConfigError (the variance map is defined over the samples of one whole-image view).
    """
    t, s = TTAConfig.from_any(tta_cfg), SlidingConfig.from_any(sliding_cfg)
    if mc_samples is not None:
        mc = mc_predict_fn(mc_samples, mc_seed)
        others = [k for k, on in (("tta", not t.trivial), ("sliding.window", s.window is not None),
                                  ("crf.enabled", _crf_on(crf_cfg))) if on]
        if others:
            raise ConfigError(f"mc_samples={mc_samples} cannot be combined with {' / '.join(others)}: "
                              f"Monte-Carlo dropout runs on the whole image alone; drop mc_samples or "
                              f"reset {' / '.join(others)} to the defaults")
        return mc
    fn: Optional[PredictFn] = None
    if s.window is not None:
        assert s.stride is not None  # SlidingConfig.from_any sets the stride whenever it sets the window
        fn = partial(sliding_window, window=s.window, stride=s.stride, blend=s.blend)
    if not t.trivial:
        fn = partial(tta, flip=t.flip, scales=t.scales, base=fn or plain)
    if _crf_on(crf_cfg):
        from segdeconv.inference.crf import crf_predict_fn

        fn = crf_predict_fn(crf_cfg, fn or plain)
    return fn


def describe(tta_cfg: Any = None, sliding_cfg: Any = None, crf_cfg: Any = None,
             mc_samples: Optional[int] = None, mc_seed: int = 0) -> dict:
    """The effective settings as plain data (for metrics.json and logs)."""
    t, s = TTAConfig.from_any(tta_cfg), SlidingConfig.from_any(sliding_cfg)
    out: dict = {"tta": {"flip": t.flip, "scales": list(t.scales)}, "sliding": None, "crf": _crf_on(crf_cfg),
                 "mc_samples": mc_samples, "mc_seed": mc_seed if mc_samples is not None else None}
    if s.window is not None:
        assert s.stride is not None  # SlidingConfig.from_any sets the stride whenever it sets the window
        out["sliding"] = {"window": list(s.window), "stride": list(s.stride), "blend": s.blend}
    return out
