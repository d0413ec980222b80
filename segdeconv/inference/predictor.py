"""``Predictor``: a trained checkpoint as a function from images to class maps.

    from segdeconv import Predictor
    p = Predictor.from_checkpoint("outputs/train/…/checkpoints/best.pt", device="auto")
    mask = p.predict("street.png")            # (H, W) class ids at the image's own size
    probs = p.predict_proba(pil_image)         # (C, H, W) float32 softmax probabilities
    Image.fromarray(p.overlay(image, mask, alpha=0.5)).save("overlay.png")

    bayes = Predictor.from_checkpoint("bayesian_segnet.pt", mc_samples=8, mc_seed=0)
    u = bayes.predict_uncertainty("street.png")  # mean, mask, variance, entropy (Bayesian SegNet)

Sizes: by default (``input_size="auto"``) each image is resized (bilinear, as the validation
pipeline does) to the ``dataset.image_size`` the checkpoint was trained at; the logits are
resized back (bilinear) to the original size before the argmax. With a sliding ``window`` (or
``input_size=None``) the image is used at its native resolution instead, zero-padded (in
normalized space, i.e. the mean colour) at the bottom/right only if it is smaller than the
model's minimum input, and the padding is cropped off the output.

Monte-Carlo dropout (``mc_samples=N``, Bayesian SegNet): ``predict``/``predict_proba`` use the mean
softmax of N seeded dropout passes (BatchNorm in eval mode, BN folding keeps the dropout layers);
:meth:`Predictor.predict_uncertainty` adds the samples' variance and the mean's entropy.
"""
from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdeconv.data.image import ImageInput, list_images, to_rgb, to_tensors
from segdeconv.engine.runtime import resolve_channels_last, resolve_precision
from segdeconv.engine.step import autocast, to_device
from segdeconv.errors import UserError
from segdeconv.inference.montecarlo import MCDropout, mc_predict_fn, require_dropout
from segdeconv.inference.quantize import check_int8_strategy, check_quantize, quantize_int8
from segdeconv.inference.strategies import make_predict_fn, plain
from segdeconv.models.fuse import fold_batchnorm
from segdeconv.palette import colorize, overlay
from segdeconv.trained import load_trained

SizeSpec = Union[str, None, Sequence[int]]


def min_input_side(model: nn.Module) -> int:
    """The smallest image side the model accepts (1 for ceil-mode SegNet, 193 for DeconvNet)."""
    from segdeconv.models.deconvnet import FC_KERNEL, DeconvNet
    from segdeconv.models.validate import min_input_size

    enc = getattr(model, "encoder", None)
    if enc is None:
        return 1
    return min_input_size(enc.num_pools, enc.ceil_mode, FC_KERNEL if isinstance(model, DeconvNet) else 1)


class Predictor:
    """A model in eval mode plus everything needed to go from images to class maps."""

    def __init__(self, model: nn.Module, class_names: Sequence[str], palette: Sequence[Sequence[int]],
                 device: torch.device, amp_dtype: Optional[torch.dtype] = None,
                 predict_fn: Optional[Callable[[nn.Module, Tensor], Tensor]] = None,
                 input_size: Optional[tuple[int, int]] = None, channels_last: bool = False,
                 mc_samples: Optional[int] = None, mc_seed: int = 0) -> None:
        if mc_samples is not None:
            if predict_fn is not None:
                raise UserError("pass either predict_fn or mc_samples to Predictor, not both")
            predict_fn = mc_predict_fn(mc_samples, mc_seed)
        self.mc = predict_fn if isinstance(predict_fn, MCDropout) else None
        if self.mc is not None:
            require_dropout(model, "the model")
        self.model = model.eval()
        self.channels_last = channels_last
        self.class_names = list(class_names)
        self.palette = [list(c) for c in palette]
        self.device, self.amp_dtype = device, amp_dtype
        self.predict_fn = predict_fn or plain
        self.input_size = input_size
        self.min_side = min_input_side(model)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], device: Union[str, torch.device] = "auto", precision: Optional[str] = None,
                        tta: Any = None, window: Any = None, input_size: SizeSpec = "auto",
                        crf: Any = None, optimize: bool = True, mc_samples: Optional[int] = None,
                        mc_seed: int = 0, quantize: Optional[str] = None,
                        calibration: Iterable[ImageInput] = ()) -> "Predictor":
        """Load ``path`` safely (``weights_only``) and rebuild the model from its stored config.

        ``precision``: None = the checkpoint's ``trainer.precision``; ``tta``: ``{"flip": bool,
        "scales": [...]}``; ``window``: a size, ``[H, W]`` or ``{"window", "stride", "blend"}``
        for sliding-window inference; ``input_size``: ``"auto"``, ``"train"``, None (native) or
        ``(H, W)`` (see the module docstring). ``optimize``: fold BatchNorm into the convolutions
        and use channels_last where it pays (CUDA, native-bf16 CPUs, fp32 on CPUs; speed-ups in
        benchmarks/README.md); fp32 logits move by ~1e-6 (a max-pool near-tie may pick the other
        switch). ``False`` runs the model exactly as ``evaluate.py`` does. ``mc_samples``: Monte-Carlo
        dropout passes per image (a Bayesian SegNet checkpoint; not combined with tta/window/crf), seeded
        with ``mc_seed`` (:class:`~segdeconv.inference.montecarlo.MCDropout`). ``quantize="int8"``: see
        :meth:`quantize` (``calibration``: its images).
        """
        predict_fn = make_predict_fn(tta, window, crf, mc_samples, mc_seed)  # config errors first
        if (int8 := check_quantize(quantize) is not None):
            check_int8_strategy(tta, window, mc_samples)
        trained = load_trained(path, device)
        if mc_samples is not None:
            require_dropout(trained.model, f"ckpt_path={path}")
        dev, model = next(trained.model.parameters()).device, trained.model
        amp = resolve_precision(precision or trained.precision, dev)
        size = _resolve_size(input_size, trained.image_size, window is not None)
        channels_last = False
        if optimize:
            model = fold_batchnorm(model, inplace=True)
            channels_last = resolve_channels_last("auto", dev, amp, inference=True)
            model = model.to(memory_format=torch.channels_last) if channels_last else model
        p = cls(model, trained.class_names, trained.palette, dev, amp, predict_fn, size, channels_last)
        return p.quantize(calibration, max_images=None) if int8 else p

    def quantize(self, images: Iterable[ImageInput], max_images: Optional[int] = 16, batch_size: int = 4
                 ) -> "Predictor":
        """Run an int8 model from now on (:func:`~segdeconv.inference.quantize.quantize_int8`: PT2E static
        PTQ, CPU), calibrated on the first ``max_images`` (None: all) of ``images`` (resized as inputs are;
        a few representative photos). Needs a fixed ``input_size``; not with Monte-Carlo dropout."""
        check_int8_strategy(mc_samples=self.mc.samples if self.mc is not None else None, native=self.input_size is None)
        x = [self._prepare(to_rgb(im)) for im in itertools.islice(images, max_images)]
        batches = [torch.stack(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        self.model = quantize_int8(self.model.to(memory_format=torch.contiguous_format), batches, len(batches),
                                   mixed_bf16=self.amp_dtype == torch.bfloat16)
        self.amp_dtype, self.channels_last = None, False
        return self

    # ------------------------------------------------------------------ core
    def _prepare(self, rgb: np.ndarray) -> Tensor:
        """HxWx3 uint8 → normalized (3, h, w) at the size the model runs at."""
        if self.input_size is not None and rgb.shape[:2] != self.input_size:
            rgb = cv2.resize(rgb, (self.input_size[1], self.input_size[0]), interpolation=cv2.INTER_LINEAR)
        return to_tensors(rgb, np.zeros(1, np.uint8))[0]

    @torch.inference_mode()
    def _logits(self, batch: Tensor, fn: Optional[Callable[[nn.Module, Tensor], Tensor]] = None) -> Tensor:
        """(B, 3, h, w) → (B, C, h, w) float32 logits (or log-probabilities) of ``fn`` (default: the
        predictor's strategy), padding handled."""
        h, w = batch.shape[-2:]
        ph, pw = max(0, self.min_side - h), max(0, self.min_side - w)
        x = F.pad(batch, (0, pw, 0, ph)) if ph or pw else batch
        x = to_device(x, self.device, self.channels_last)
        with autocast(self.device, self.amp_dtype):
            out = (fn or self.predict_fn)(self.model, x)
        return out[..., :h, :w].float()

    def _batches(self, rgbs: Iterable[np.ndarray], batch_size: int, fn: Optional[Callable] = None
                 ) -> Iterator[tuple[np.ndarray, Tensor]]:
        """(original image, (C, H, W) logits of ``fn`` at its size), batching consecutive same-size inputs."""
        pending: list[tuple[np.ndarray, Tensor]] = []

        def flush() -> Iterator[tuple[np.ndarray, Tensor]]:
            logits = self._logits(torch.stack([t for _, t in pending]), fn)
            for (rgb, _), lg in zip(pending, logits):
                yield rgb, _resize_logits(lg, rgb.shape[:2])
            pending.clear()

        for rgb in rgbs:
            t = self._prepare(rgb)
            if pending and (t.shape != pending[0][1].shape or len(pending) >= batch_size):
                yield from flush()
            pending.append((rgb, t))
        if pending:
            yield from flush()

    # ------------------------------------------------------------------ public API
    def predict_proba(self, image: ImageInput) -> np.ndarray:
        """(C, H, W) float32 class probabilities at the image's original size."""
        (_, logits), = self._batches([to_rgb(image)], 1)
        return logits.softmax(0).cpu().numpy()

    def predict(self, image: ImageInput) -> np.ndarray:
        """(H, W) class ids (uint8; int64 beyond 256 classes) at the image's original size."""
        (_, logits), = self._batches([to_rgb(image)], 1)
        return self._labels(logits)

    def predict_batch(self, images: Iterable[ImageInput], batch_size: int = 4) -> list[np.ndarray]:
        """:meth:`predict` for many images (batched where consecutive images share a size)."""
        return [self._labels(lg) for _, lg in self._batches(map(to_rgb, images), batch_size)]

    def predict_uncertainty(self, image: ImageInput) -> dict[str, np.ndarray]:
        """Bayesian SegNet's outputs at the image's original size (needs ``mc_samples``): ``mean`` (C, H, W)
        softmax averaged over the samples, ``mask`` (H, W) its argmax (= :meth:`predict`), ``variance``
        (H, W) the samples' softmax variance averaged over the classes (as ``Scripts/test_bayesian_segnet.py``:
        ``np.mean(np.var(prob, axis=0), axis=2)``), ``entropy`` (H, W) of ``mean`` in nats, 0..log C."""
        (_, out), = self._batches([to_rgb(image)], 1, self._mc_stats)
        return self._uncertainty(out)

    def iter_predict(self, sources: Iterable[ImageInput], batch_size: int = 4,
                     on_error: Optional[Callable[[Any, UserError], None]] = None
                     ) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """Yield ``(source, rgb, mask)``; unreadable inputs go to ``on_error`` (or raise)."""
        for src, rgb, logits in self._iter(sources, batch_size, on_error):
            yield src, rgb, self._labels(logits)

    def iter_uncertainty(self, sources: Iterable[ImageInput], batch_size: int = 4,
                         on_error: Optional[Callable[[Any, UserError], None]] = None
                         ) -> Iterator[tuple[Any, np.ndarray, dict[str, np.ndarray]]]:
        """Yield ``(source, rgb, predict_uncertainty(...))`` (needs ``mc_samples``), like :meth:`iter_predict`."""
        for src, rgb, out in self._iter(sources, batch_size, on_error, self._mc_stats):
            yield src, rgb, self._uncertainty(out)

    def _iter(self, sources: Iterable[ImageInput], batch_size: int,
              on_error: Optional[Callable[[Any, UserError], None]], fn: Optional[Callable] = None
              ) -> Iterator[tuple[Any, np.ndarray, Tensor]]:
        """``(source, rgb, fn output at the original size)``; unreadable inputs go to ``on_error``."""
        order: list[Any] = []

        def readable() -> Iterator[np.ndarray]:
            for src in sources:
                try:
                    rgb = to_rgb(src)
                except UserError as e:
                    if on_error is None:
                        raise
                    on_error(src, e)
                    continue
                order.append(src)
                yield rgb

        for i, (rgb, out) in enumerate(self._batches(readable(), batch_size, fn)):
            yield order[i], rgb, out

    def predict_folder(self, folder: Union[str, Path], batch_size: int = 4,
                       recursive: bool = False) -> dict[Path, np.ndarray]:
        """``{path: mask}`` for every image in ``folder``; unreadable files are skipped with a warning."""
        def skip(src: Any, err: UserError) -> None:
            warnings.warn(f"skipped {src}: {err}", stacklevel=3)

        return {src: mask for src, _, mask in self.iter_predict(list_images(folder, recursive), batch_size, skip)}

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) class ids → (H, W, 3) uint8 RGB in the checkpoint's palette."""
        return colorize(mask, self.palette)

    def overlay(self, image: ImageInput, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The coloured ``mask`` blended over ``image`` (HxWx3 uint8) with opacity ``alpha``."""
        return overlay(to_rgb(image), mask, self.palette, alpha)

    def _mc_stats(self, model: nn.Module, x: Tensor) -> Tensor:
        """log(mean softmax) (C channels) and the class-averaged variance (1 channel), stacked so that
        padding and resizing treat them alike."""
        if self.mc is None:
            raise UserError("uncertainty needs Monte-Carlo dropout: Predictor.from_checkpoint(..., mc_samples=N) "
                            "with a Bayesian SegNet checkpoint (predict.py: mc_samples=N)")
        mean, var = self.mc.stats(model, x)
        return torch.cat([mean.clamp_min(1e-12).log(), var.mean(1, keepdim=True)], 1)

    def _uncertainty(self, out: Tensor) -> dict[str, np.ndarray]:
        log_mean = out[:-1].log_softmax(0)
        mean = log_mean.exp()
        entropy = (-(mean * log_mean).sum(0)).clamp_min(0.0)
        return {"mean": mean.cpu().numpy(), "mask": self._labels(log_mean),
                "variance": out[-1].clamp_min(0.0).cpu().numpy(), "entropy": entropy.cpu().numpy()}

    def _labels(self, logits: Tensor) -> np.ndarray:
        dtype = np.uint8 if logits.shape[0] <= 256 else np.int64
        return logits.argmax(0).cpu().numpy().astype(dtype)

    def __repr__(self) -> str:
        mc = f", mc_samples={self.mc.samples}, mc_seed={self.mc.seed}" if self.mc else ""
        return (f"Predictor({type(self.model).__name__}, {len(self.class_names)} classes, device={self.device}, "
                f"precision={getattr(self.model, 'precision', self.amp_dtype or 'fp32')}, input_size={self.input_size or 'native'}{mc})")


def _resize_logits(logits: Tensor, size: Sequence[int]) -> Tensor:
    """(C, h, w) → (C, H, W) bilinear (no-op when the sizes already agree)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def _resolve_size(spec: SizeSpec, trained: Optional[Sequence[int]], sliding: bool) -> Optional[tuple[int, int]]:
    """``"auto"`` → the training size (native with a sliding window); ``"train"``; None; (H, W)."""
    if spec == "auto":
        spec = None if sliding else "train"
    if spec is None or spec == "native":
        return None
    if spec == "train":
        return (int(trained[0]), int(trained[1])) if trained else None
    if isinstance(spec, str) or len(spec) != 2 or min(int(v) for v in spec) < 1:
        raise UserError(f"input_size={spec!r} must be 'auto', 'train', 'native'/None or (H, W)")
    return int(spec[0]), int(spec[1])
