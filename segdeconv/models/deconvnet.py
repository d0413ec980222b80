"""DeconvNet (Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015).

Fig. 2 of the paper, top to bottom::

    conv1–conv5 (VGG16 + BN), pool with switches        (B, 512, 7, 7)   at 224×224
    fc6  7×7 conv 512→4096 (valid) + BN + ReLU           (B, 4096, 1, 1)
    fc7  1×1 conv 4096→4096 + BN + ReLU                  (B, 4096, 1, 1)
    fc6-deconv 7×7 transposed conv 4096→512 + BN + ReLU  (B, 512, 7, 7)
    unpool5, deconv5 (512,512,512) … unpool1, deconv1 (64,64)   (B, 64, 224, 224)
    score 1×1 conv 64→C                                  (B, C, 224, 224)

251.8M parameters with 21 classes. fc6 needs a pool5 map of ≥ 7×7, i.e. inputs ≥ 224 px per side
(≥ 193 with ceil-mode pools); smaller inputs get a clear error (pad them, or use sliding windows).
Architecture pinned to HyeonwooNoh/DeconvNet ``training/00{1,2}_stage_*/stage_*_train.prototxt``
by ``tests/test_prototxt_tables.py``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from segdeconv.models.decoder import MirroredDecoder
from segdeconv.models.initialization import bn_, check_init, gaussian_, init_weights, set_bn_eps
from segdeconv.models.inputs import InputAdapter
from segdeconv.models.pretrained import read_weights
from segdeconv.models.validate import check_input
from segdeconv.models.vgg import VGGEncoder

FC_KERNEL = 7


def _fc_block(conv: nn.Module, channels: int, batch_norm: bool) -> nn.Sequential:
    layers = [conv] + ([nn.BatchNorm2d(channels)] if batch_norm else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DeconvNet(nn.Module):
    """VGG16-BN encoder → fc6/fc7 as convolutions → fc6-deconv → mirrored unpool + deconv decoder.

    Memory policies (recompute of the stages or of fc6–fc6-deconv, lean graph) are applied from
    outside (:mod:`segdeconv.models.memory`; ``model.recompute``, ``model.recompute_fc``, ``model.lean``).
    ``init="paper"``: the prototxts' fillers (:meth:`paper_init`); ``input="caffe_bgr_mean"``: the
    original's BGR 0–255 minus mean input (:class:`~segdeconv.models.inputs.InputAdapter`); ``bn_eps``:
    every BatchNorm's ε (:func:`~segdeconv.models.initialization.set_bn_eps`).
    """

    def __init__(
        self,
        num_classes: int,
        encoder: Optional[VGGEncoder] = None,
        decoder: str = "transposed",
        fc_channels: int = 4096,
        init: str = "torchvision",
        input: str = "imagenet",
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.input_adapter = InputAdapter(input)
        self.encoder = encoder if encoder is not None else VGGEncoder("vgg16", batch_norm=True)
        enc, bn = self.encoder, self.encoder.batch_norm
        c5 = enc.out_channels
        fc = max(1, int(round(fc_channels * enc.width)))
        self.fc6 = _fc_block(nn.Conv2d(c5, fc, FC_KERNEL), fc, bn)
        self.fc7 = _fc_block(nn.Conv2d(fc, fc, 1), fc, bn)
        self.fc6_deconv = _fc_block(nn.ConvTranspose2d(fc, c5, FC_KERNEL), c5, bn)
        self.decoder = MirroredDecoder(enc.stages, enc.kernel_size, decoder, bn)
        self.classifier = nn.Conv2d(self.decoder.out_channels, self.num_classes, 1)
        for m in (self.fc6, self.fc7, self.fc6_deconv, self.decoder, self.classifier):
            init_weights(m)
        if check_init(init) == "paper":
            self.paper_init()
        if enc.weights:
            self.load_fc_from_vgg(enc.weights)
        set_bn_eps(self, bn_eps)

    def paper_init(self) -> None:
        """The fillers of ``stage_{1,2}_train.prototxt``: ``fc6-deconv``, every ``deconvN_M`` and
        ``seg-score-voc`` gaussian std 0.01 with zero bias; every BN (``bnN_M``, ``bnfc6``, ``bnfc7``,
        ``fc6-deconv-bn``, ``debnN_M``) scale 1, shift 0.001. conv1–conv5 and fc6/fc7 have no filler
        there (Caffe's default constant 0: they are VGG16's ImageNet weights), so they keep the
        torchvision init until ``encoder.weights`` loads them; a ``vgg*_bn`` file's BN is kept, fresh BN gets the fillers."""
        gaussian_([*self.fc6_deconv.modules(), *self.decoder.modules(), self.classifier], std=0.01)
        random_encoder = [] if self.encoder.pretrained_bn else [self.encoder]  # BN a plain VGG file left fresh
        for part in [self.fc6, self.fc7, self.fc6_deconv, self.decoder] + random_encoder:
            bn_(part.modules(), shift=1e-3)

    def fc_stage(self) -> nn.Sequential:
        """fc6 → fc7 → fc6-deconv as one stage (a view: nothing is registered twice; a memory policy,
        :mod:`segdeconv.models.memory`, hands out a wrapped one)."""
        return nn.Sequential(self.fc6, self.fc7, self.fc6_deconv)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.encoder, min_pooled=FC_KERNEL)
        x = self.input_adapter(x)  # identity for input="imagenet"
        feats, switches = self.encoder(x)  # (B, 512, H/32, W/32)
        x = self.fc_stage()(feats)  # (B, 4096, h-6, w-6) twice, then back to (B, 512, h, w)
        x = self.decoder(x, switches)  # (B, 64, H, W)
        return self.classifier(x)  # (B, num_classes, H, W)

    def load_fc_from_vgg(self, weights: str) -> None:
        """Initialise fc6/fc7 from torchvision's ``classifier.0``/``classifier.3`` Linear layers (the same
        keys in the ``vgg16`` and ``vgg16_bn`` layouts; ``weights``: a path, ``imagenet`` or ``imagenet_bn``).

        The 25088→4096 fc6 matrix is the 7×7×512 convolution reshaped (Long et al. 2015, §3.1), as
        DeconvNet's ``VGG_ILSVRC_16_layers_conv.caffemodel``; fc7 is the 4096→4096 1×1 convolution.
        """
        if self.encoder.num_pools != 5:  # VGG16's fc6 reads pool5: after pool4 it would load but mean nothing
            return  # (checked first: no second read of the weights file the encoder already loaded)
        state, _ = read_weights(weights, self.encoder)
        w6, w7 = state.get("classifier.0.weight"), state.get("classifier.3.weight")
        conv6, conv7 = self.fc6[0], self.fc7[0]  # Sequential(Conv2d, …) by construction (_fc_block)
        assert isinstance(conv6, nn.Conv2d) and isinstance(conv7, nn.Conv2d)
        assert conv6.bias is not None and conv7.bias is not None  # nn.Conv2d(…, bias=True), the default
        if w6 is None or w7 is None or w6.numel() != conv6.weight.numel() or w7.numel() != conv7.weight.numel():
            return  # features-only file or a narrowed model: fc layers keep their random init
        with torch.no_grad():
            conv6.weight.copy_(w6.view_as(conv6.weight))
            conv6.bias.copy_(state["classifier.0.bias"])
            conv7.weight.copy_(w7.view_as(conv7.weight))
            conv7.bias.copy_(state["classifier.3.bias"])
