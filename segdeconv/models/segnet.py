"""SegNet and SegNet-Basic (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

SegNet: the 13 conv layers of VGG16-BN as encoder; a decoder that mirrors it, upsampling with the
encoder's max-pool indices (no learned upsampling, no skip features), conv + BN + ReLU; a 3×3
classifier conv giving raw logits (no BN/ReLU). 29.45M parameters with 11 classes (§3).
SegNet-Basic (§4.1): 4 encoder stages of 64 7×7 filters, 4 linear decoder stages (no ReLU), 1×1
classifier; its Caffe input LRN layer is ``input_lrn=True``.
Bayesian SegNet(-Basic) (Kendall et al. 2015) is ``dropout=0.5`` (:mod:`segdeconv.models.bayesian`).
Architecture pinned to ``Models/{,bayesian_}segnet{,_basic}_train.prototxt`` of
alexgkendall/SegNet-Tutorial by ``tests/test_prototxt_tables.py``.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from segdeconv.models.bayesian import dropout_plan
from segdeconv.models.decoder import MirroredDecoder
from segdeconv.models.initialization import bn_, check_init, init_weights, msra_, set_bn_eps
from segdeconv.models.inputs import InputAdapter
from segdeconv.models.validate import check_input
from segdeconv.models.vgg import VGGEncoder


class SegNet(nn.Module):
    """Encoder with switches → mirrored unpool/conv decoder → classifier.

    ``forward(x: (B,3,H,W)) -> (B,num_classes,H,W)`` logits at the input size (any H, W ≥ 1;
    with ``ceil_mode`` every size unpools back exactly). Memory policies (recompute, lean graph) are
    applied from outside (:mod:`segdeconv.models.memory`; ``model.recompute``/``model.lean``).

    ``dropout=p`` (Bayesian SegNet: 0.5) puts ``nn.Dropout(p)`` after the pools of the
    ``dropout_stages`` deepest encoder stages and at the end of as many deepest decoder stages
    (default: all but the two outermost, the prototxts' "central" units: pool3–5 and decoder
    stages 5–3 for VGG16, pool3–4 and ``conv_decode4``/``conv_decode3`` for SegNet-Basic).
    ``init="paper"``: the prototxts' Caffe fillers (:meth:`paper_init`); ``input``/``input_lrn``:
    the originals' input convention (:class:`~segdeconv.models.inputs.InputAdapter`); ``bn_eps``: every
    BatchNorm's ε (caffe-segnet's BN layer: 1e-9; :func:`~segdeconv.models.initialization.set_bn_eps`).
    """

    def __init__(
        self,
        num_classes: int,
        encoder: Optional[VGGEncoder] = None,
        decoder: str = "conv",
        classifier_kernel: int = 3,
        decoder_relu: bool = True,
        dropout: float = 0.0,
        dropout_stages: Optional[int] = None,
        init: str = "torchvision",
        input: str = "imagenet",
        input_lrn: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.input_adapter = InputAdapter(input, input_lrn)
        self.encoder = encoder if encoder is not None else VGGEncoder("vgg16", batch_norm=True)
        enc = self.encoder
        self.dropout = float(dropout)
        n_drop = dropout_plan(self.dropout, dropout_stages, enc.num_pools)
        enc.set_dropout(self.dropout, n_drop)
        # SegNet: the classifier replaces the last conv of the shallowest decoder stage.
        drop_last = classifier_kernel != 1 and len(enc.stages[0]) > 1
        self.decoder = MirroredDecoder(
            enc.stages, enc.kernel_size, decoder, enc.batch_norm, decoder_relu, drop_last, self.dropout, n_drop,
        )
        self.classifier = nn.Conv2d(self.decoder.out_channels, self.num_classes, classifier_kernel, padding=classifier_kernel // 2)
        init_weights(self.decoder)
        init_weights(self.classifier)
        if check_init(init) == "paper":
            self.paper_init()
        set_bn_eps(self, bn_eps)

    def paper_init(self) -> None:
        """The Caffe fillers of the training prototxts: every conv ``msra`` (std √(2/fan_in)), biases 0,
        BN scale 1 and shift 0.001 — shift 0 in ``bayesian_segnet_train.prototxt`` (VGG16 only; the
        Bayesian SegNet-Basic one keeps 0.001). A pretrained encoder (``encoder.weights``) is kept."""
        shift = 0.0 if self.dropout > 0 and self.encoder.arch != "basic" else 1e-3
        parts = [self.decoder, self.classifier] + ([] if self.encoder.weights else [self.encoder])
        for part in parts:
            msra_(part.modules())
            bn_(part.modules(), shift)
        if self.encoder.weights and not self.encoder.pretrained_bn:  # a plain VGG file: its BN is fresh
            bn_(self.encoder.modules(), shift)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.encoder)
        x = self.input_adapter(x)  # identity for input="imagenet"
        feats, switches = self.encoder(x)  # (B, 512, H/32, W/32), 5 switches
        x = self.decoder(feats, switches)  # (B, 64, H, W)
        return self.classifier(x)  # (B, num_classes, H, W)


def segnet_basic(
    num_classes: int, width: float = 1.0, ceil_mode: bool = True, compact_switches: bool = False,
    dropout: float = 0.0, dropout_stages: Optional[int] = None, init: str = "torchvision",
    input: str = "imagenet", input_lrn: bool = False, bn_eps: float = 1e-5,
) -> SegNet:
    """SegNet-Basic: 4×(64 7×7 conv, BN, ReLU, pool) encoder, linear 7×7 decoder (BN, no ReLU, as
    ``conv_decode*`` in ``segnet_basic_train.prototxt``), 1×1 classifier. 1.42M parameters @ 11 classes."""
    enc = VGGEncoder("basic", batch_norm=True, width=width, ceil_mode=ceil_mode,
                     compact_switches=compact_switches)
    return SegNet(num_classes, enc, decoder="conv", classifier_kernel=1, decoder_relu=False, dropout=dropout,
                  dropout_stages=dropout_stages, init=init, input=input, input_lrn=input_lrn, bn_eps=bn_eps)
