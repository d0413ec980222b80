"""SegNet and SegNet-Basic (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

SegNet: the 13 conv layers of VGG16-BN as encoder; a decoder that mirrors it, upsampling with the
encoder's max-pool indices (no learned upsampling, no skip features), conv + BN + ReLU; a 3×3
classifier conv giving raw logits (no BN/ReLU). 29.45M parameters with 11 classes (§3).
SegNet-Basic (§4.1): 4 encoder stages of 64 7×7 filters, 4 linear decoder stages (no ReLU), 1×1
classifier. The input LRN layer of the Caffe SegNet-Basic is replaced by the dataset's ImageNet
normalisation.
"""
from __future__ import annotations

from typing import Optional, Union

from torch import Tensor, nn

from segdeconv.models.decoder import MirroredDecoder
from segdeconv.models.layers import init_weights
from segdeconv.models.vgg import VGGEncoder
from segdeconv.models.validate import check_input


class SegNet(nn.Module):
    """Encoder with switches → mirrored unpool/conv decoder → classifier.

    ``forward(x: (B,3,H,W)) -> (B,num_classes,H,W)`` logits at the input size (any H, W ≥ 1;
    with ``ceil_mode`` every size unpools back exactly). ``checkpoint=True``: every encoder and
    decoder stage keeps only its input and is recomputed in backward (≈ 1/3 more compute, far
    less activation memory; outputs, gradients and BN statistics unchanged); ``checkpoint=N``: only
    the N shallowest encoder and decoder stages (full resolution first: most memory per FLOP).
    """

    def __init__(
        self,
        num_classes: int,
        encoder: Optional[VGGEncoder] = None,
        decoder: str = "conv",
        classifier_kernel: int = 3,
        decoder_relu: bool = True,
        checkpoint: Union[bool, int] = False,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.encoder = encoder if encoder is not None else VGGEncoder("vgg16", batch_norm=True)
        enc = self.encoder
        # SegNet: the classifier replaces the last conv of the shallowest decoder stage.
        drop_last = classifier_kernel != 1 and len(enc.stages[0]) > 1
        self.decoder = MirroredDecoder(
            enc.stages, enc.kernel_size, decoder, enc.batch_norm, decoder_relu, drop_last, checkpoint
        )
        enc.checkpoint = checkpoint if checkpoint is not False else enc.checkpoint
        self.classifier = nn.Conv2d(self.decoder.out_channels, self.num_classes, classifier_kernel, padding=classifier_kernel // 2)
        init_weights(self.decoder)
        init_weights(self.classifier)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.encoder)
        feats, switches = self.encoder(x)  # (B, 512, H/32, W/32), 5 switches
        x = self.decoder(feats, switches)  # (B, 64, H, W)
        return self.classifier(x)  # (B, num_classes, H, W)


def segnet_basic(
    num_classes: int, width: float = 1.0, ceil_mode: bool = True, compact_switches: bool = False,
    checkpoint: Union[bool, int] = False,
) -> SegNet:
    """SegNet-Basic: 4×(64 7×7 conv, BN, ReLU, pool) encoder, linear 7×7 decoder, 1×1 classifier."""
    enc = VGGEncoder("basic", batch_norm=True, width=width, ceil_mode=ceil_mode,
                     compact_switches=compact_switches)
    return SegNet(num_classes, enc, decoder="conv", classifier_kernel=1, decoder_relu=False, checkpoint=checkpoint)
