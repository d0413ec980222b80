"""What the first layer sees: the dataset's ImageNet-normalised RGB, or the originals' Caffe inputs.

Every dataset yields ``(3, H, W)`` float32 RGB normalised with ImageNet mean/std
(:mod:`segdeconv.data.base`); :class:`InputAdapter` turns that into what the original network was
trained on, inside the model, so datasets, augmentation and export stay unchanged:

* ``imagenet`` — unchanged (identity; torchvision's VGG16-BN weights expect this);
* ``caffe_bgr`` — raw BGR pixels 0–255, no mean subtraction: SegNet's ``DenseImageData`` layer has no
  ``transform_param`` and reads images with OpenCV (alexgkendall/caffe-segnet
  ``dense_image_data_layer.cpp``; ``Scripts/test_bayesian_segnet.py`` feeds ``image*255`` in BGR);
* ``caffe_bgr_mean`` — BGR 0–255 minus DeconvNet's ``mean_value`` 104.008/116.669/122.675
  (``training/00{1,2}_stage_*/stage_*_train.prototxt``).

``lrn=True`` appends SegNet-Basic's ``norm`` layer (``LRN`` local_size 5, alpha 1e-4, beta 0.75, k 1,
across channels). Caffe computes ``x / (k + alpha/n · Σ x²)^beta`` over n zero-padded neighbouring
channels (``lrn_layer.cpp``: ``alpha_over_size``), which is exactly ``nn.LocalResponseNorm``.
"""
from __future__ import annotations

from typing import TypedDict

import torch
from torch import Tensor, nn

from segdeconv.data.image import IMAGENET_MEAN, IMAGENET_STD
from segdeconv.errors import ConfigError

INPUTS = ("imagenet", "caffe_bgr", "caffe_bgr_mean")
DECONVNET_BGR_MEAN = (104.008, 116.669, 122.675)  # training/00{1,2}_stage_*/*.prototxt transform_param


class _LRN(TypedDict):
    """``nn.LocalResponseNorm`` arguments."""

    size: int
    alpha: float
    beta: float
    k: float


SEGNET_BASIC_LRN = _LRN(size=5, alpha=1e-4, beta=0.75, k=1.0)  # segnet_basic_train.prototxt "norm"


class InputAdapter(nn.Module):
    """``(B,3,H,W)`` ImageNet-normalised RGB → the model's input convention (no parameters).

    The constants are non-persistent buffers: they follow ``.to(device/dtype)`` but stay out of
    the state dict, so checkpoints are the same with or without an adapter.
    """

    scale: Tensor  # buffers (register_buffer in __init__)
    shift: Tensor

    def __init__(self, kind: str = "imagenet", lrn: bool = False) -> None:
        super().__init__()
        if kind not in INPUTS:
            raise ConfigError(f"model.input={kind!r} is unknown; choose one of {INPUTS}")
        self.kind = kind
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        # BGR_c = 255·(x_rgb·std + mean) − offset, channels reversed: one multiply-add per channel.
        offset = torch.tensor(DECONVNET_BGR_MEAN) if kind == "caffe_bgr_mean" else torch.zeros(3)
        self.register_buffer("scale", (255.0 * std).flip(0).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (255.0 * mean).flip(0).sub(offset).view(1, 3, 1, 1), persistent=False)
        self.lrn = nn.LocalResponseNorm(**SEGNET_BASIC_LRN) if lrn else None

    def forward(self, x: Tensor) -> Tensor:
        if self.kind != "imagenet":
            x = torch.addcmul(self.shift, x.flip(1), self.scale)  # (B,3,H,W) RGB → BGR 0–255
        if self.lrn is not None:
            x = self.lrn(x)
        return x

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
