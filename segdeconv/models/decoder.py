"""The mirrored decoder: unpool with the encoder's switches, then conv/transposed-conv stages."""
from __future__ import annotations

from typing import NamedTuple, cast

from torch import Tensor, nn

from segdeconv.errors import ConfigError
from segdeconv.models.layers import Switches, Unpool, conv_bn_relu
from segdeconv.models.vgg import mirror_stages

DECODER_KINDS = ("conv", "transposed")


class DecoderStage(NamedTuple):
    """One decoder stage: unpool with the mirrored pool's switches, then ``layers`` (views of the
    decoder's modules: nothing is registered twice)."""

    unpool: Unpool
    layers: nn.Sequential

    def __call__(self, x: Tensor, switches: Switches) -> Tensor:
        return self.layers(self.unpool(x, switches))  # (B,C,h,w) -> (B,C,2h,2w) -> [conv, BN, ReLU]×n


class MirroredDecoder(nn.Module):
    """Unpool + [conv, BN, ReLU]×n per stage, deepest stage first (SegNet §3, Noh et al. §3.2).

    ``kind="transposed"`` uses stride-1 transposed convolutions ("deconvolution" layers, as in
    DeconvNet); ``"conv"`` plain convolutions (SegNet). ``drop_last`` leaves out the final conv of
    the shallowest stage (SegNet: the classifier takes its place). ``relu=False`` gives
    SegNet-Basic's linear decoder. ``dropout=p`` ends each of the ``dropout_stages`` deepest stages
    with ``nn.Dropout(p)`` (Bayesian SegNet's ``decdrop5``–``decdrop3`` follow ``conv5_1_D``–``conv3_1_D``,
    the last conv of decoder stages 5–3, before the next unpooling).
    """

    def __init__(
        self,
        stages: list[list[int]],
        kernel_size: int = 3,
        kind: str = "conv",
        batch_norm: bool = True,
        relu: bool = True,
        drop_last: bool = False,
        dropout: float = 0.0,
        dropout_stages: int = 0,
    ) -> None:
        super().__init__()
        if kind not in DECODER_KINDS:
            raise ConfigError(f"model.decoder={kind!r} is unknown; choose one of {DECODER_KINDS}")
        plan = mirror_stages(stages)
        if drop_last:
            plan[-1] = plan[-1][:-1]
        self.unpool = Unpool()
        self.stages = nn.ModuleList()
        for i, stage in enumerate(plan):  # deepest first
            layers = [m for c_in, c_out in stage
                      for m in conv_bn_relu(c_in, c_out, kernel_size, batch_norm, relu, kind == "transposed")]
            if dropout > 0 and i < dropout_stages:
                layers.append(nn.Dropout(dropout))  # after the stage's last conv(-BN-ReLU)
            self.stages.append(nn.Sequential(*layers))
        self.out_channels = plan[-1][-1][1]

    def forward(self, x: Tensor, switches: list[Switches]) -> Tensor:
        for stage, sw in zip(self.stage_modules(), reversed(switches)):  # deepest first
            x = stage(x, sw)  # (B, C, h, w) -> unpool at the switches (B, C, 2h, 2w) -> (B, C', 2h, 2w)
        return x

    def stage_modules(self) -> list[DecoderStage]:
        """One :class:`DecoderStage` per stage, deepest first (a memory policy,
        :mod:`segdeconv.models.memory`, hands out wrapped ones)."""
        return [DecoderStage(self.unpool, cast(nn.Sequential, layers)) for layers in self.stages]  # built as Sequentials
