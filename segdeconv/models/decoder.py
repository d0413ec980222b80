"""The mirrored decoder: unpool with the encoder's switches, then conv/transposed-conv stages."""
from __future__ import annotations

from functools import partial
from typing import Iterable, Union, cast

from torch import Tensor, nn

from segdeconv.errors import ConfigError
from segdeconv.models import lean as lean_graph
from segdeconv.models.layers import Switches, Unpool, conv_bn_relu
from segdeconv.models.recompute import checkpointed, stage_is_checkpointed
from segdeconv.models.vgg import mirror_stages

DECODER_KINDS = ("conv", "transposed")


class MirroredDecoder(nn.Module):
    """Unpool + [conv, BN, ReLU]×n per stage, deepest stage first (SegNet §3, Noh et al. §3.2).

    ``kind="transposed"`` uses stride-1 transposed convolutions ("deconvolution" layers, as in
    DeconvNet); ``"conv"`` plain convolutions (SegNet). ``drop_last`` leaves out the final conv of
    the shallowest stage (SegNet: the classifier takes its place). ``relu=False`` gives
    SegNet-Basic's linear decoder. ``dropout=p`` ends each of the ``dropout_stages`` deepest stages
    with ``nn.Dropout(p)`` (Bayesian SegNet's ``decdrop5``–``decdrop3`` follow ``conv5_1_D``–``conv3_1_D``,
    the last conv of decoder stages 5–3, before the next unpooling). ``checkpoint=True`` recomputes
    each stage in backward (``N``: the N shallowest); dropout masks are replayed (RNG state kept).
    ``lean=True`` (default) keeps one map per conv–BN–ReLU block and no unpooled map for backward
    (:mod:`segdeconv.models.lean`).
    """

    def __init__(
        self,
        stages: list[list[int]],
        kernel_size: int = 3,
        kind: str = "conv",
        batch_norm: bool = True,
        relu: bool = True,
        drop_last: bool = False,
        checkpoint: Union[bool, int] = False,
        dropout: float = 0.0,
        dropout_stages: int = 0,
        lean: bool = True,
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
        self.checkpoint = checkpoint
        stage_is_checkpointed(checkpoint, 0)  # validate
        self.lean = lean

    def forward(self, x: Tensor, switches: list[Switches]) -> Tensor:
        stages = cast(Iterable[nn.Sequential], self.stages)  # __init__ appends only nn.Sequential stages
        with lean_graph.lean_scope(self.lean) as lean:
            for i, (stage, sw) in enumerate(zip(stages, reversed(switches))):
                if stage_is_checkpointed(self.checkpoint, len(self.stages) - 1 - i):  # keep the input, recompute in backward
                    x = checkpointed(stage, partial(self._stage, stage), x, sw)
                elif lean:
                    x = lean_graph.run(stage, lean_graph.unpool(self.unpool, x, sw))
                else:
                    x = self._stage(stage, x, sw)
        return x

    def _stage(self, stage: nn.Sequential, x: Tensor, sw: Switches) -> Tensor:
        return stage(self.unpool(x, sw))  # unpool: (B,C,h,w) -> (B,C,2h,2w) at the switch positions
