"""Optional dense-CRF post-processing (Krähenbühl & Koltun 2011), as EDeconvNet+CRF (Noh et al. 2015).

Needs the ``pydensecrf2`` package (``pip install pydensecrf2``; it builds from source). It refines
the softmax probabilities of any ``predict`` function with a Gaussian (smoothness) and a
bilateral (appearance) pairwise term, on the de-normalized RGB image; CPU only, per image.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from segdeconv.data.image import denormalize
from segdeconv.errors import ConfigError

PredictFn = Callable[[nn.Module, Tensor], Tensor]
_DEFAULTS = {"iterations": 5, "gaussian_sxy": 3, "gaussian_compat": 3,
             "bilateral_sxy": 80, "bilateral_srgb": 13, "bilateral_compat": 10}


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise ConfigError("crf.enabled=true needs the pydensecrf2 package: pip install pydensecrf2 "
                          "(or set crf.enabled=false)") from None
    return dcrf


def refine(probs: np.ndarray, image: np.ndarray, params: dict) -> np.ndarray:
    """(C, H, W) probabilities + (H, W, 3) uint8 image → (C, H, W) CRF marginals."""
    dcrf = _densecrf()
    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, 1e-8, 1.0)).reshape(c, -1), dtype=np.float32))
    d.addPairwiseGaussian(sxy=params["gaussian_sxy"], compat=params["gaussian_compat"])
    d.addPairwiseBilateral(sxy=params["bilateral_sxy"], srgb=params["bilateral_srgb"],
                           rgbim=np.ascontiguousarray(image), compat=params["bilateral_compat"])
    return np.asarray(d.inference(int(params["iterations"])), dtype=np.float32).reshape(c, h, w)


def crf_predict_fn(cfg: Any, base: PredictFn) -> PredictFn:
    """Wrap ``base``: its softmax probabilities refined by the dense CRF, returned as log-probabilities."""
    _densecrf()  # fail at configuration time, not after the first batch
    params = {k: cfg.get(k, v) for k, v in _DEFAULTS.items()}

    def predict(model: nn.Module, images: Tensor) -> Tensor:
        probs = base(model, images).float().softmax(1).cpu().numpy()
        rgb = (denormalize(images.float().cpu()) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        q = np.stack([refine(p, im, params) for p, im in zip(probs, rgb)])
        return torch.from_numpy(q).to(images.device).clamp_min_(1e-12).log_()

    return predict
