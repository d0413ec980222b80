"""``load_trained(path)``: the one way anything loads a trained checkpoint.

    from segdeconv import load_trained
    t = load_trained("checkpoints/camvid_segnet_cpu.pt", device="cpu")
    t.model(x)                      # eval mode, weights loaded
    t.class_names, t.palette, t.image_size, t.precision, t.ignore_index

The checkpoint (a plain dict loaded with ``weights_only=True``, see
:mod:`segdeconv.engine.checkpoint`) names its architecture by a stable registry name and keyword
arguments (``"arch"``, :mod:`segdeconv.models.registry`) and records the resolved training config;
everything a user of the model needs is read from them here, once. Plain Python: no Hydra import. The
evaluate/predict/export/visualize tasks, the :class:`~segdeconv.inference.predictor.Predictor`,
the benchmarks and tools/ all go through this function.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from segdeconv.engine.checkpoint import load_checkpoint, load_model_state, weights_key
from segdeconv.engine.runtime import resolve_device
from segdeconv.errors import CheckpointError, ConfigError
from segdeconv.models import registry
from segdeconv.models.memory.policy import MemoryPolicy, apply_policy
from segdeconv.palette import default_palette

PathLike = Union[str, Path]


@dataclass
class Trained:
    """A trained model in eval mode and the facts of its training that inference needs."""

    model: nn.Module
    class_names: list[str]
    palette: list[list[int]]
    image_size: Optional[tuple[int, int]]  # dataset.image_size the model was trained at (H, W)
    precision: str  # the training's trainer.precision ("auto", "fp32", "bf16", "fp16")
    channels_last: Union[str, bool]  # the training's trainer.channels_last
    ignore_index: int
    dataset_cfg: dict[str, Any]  # the resolved dataset config it was trained with ({} if none)
    config: dict[str, Any] = field(repr=False)  # the whole resolved training config
    step: int = 0
    path: Path = Path("checkpoint")

    @property
    def num_classes(self) -> int:
        return registry.num_classes_of(self.model)

    @property
    def val_batch_size(self) -> int:
        """The training's validation batch size (``dataset.val_batch_size`` or ``dataset.batch_size``)."""
        d = self.dataset_cfg
        return int(d.get("val_batch_size") or d.get("batch_size") or 1)


def load_trained(path: PathLike, device: Union[str, torch.device] = "cpu", key: str = "ckpt_path") -> Trained:
    """Load ``path`` safely, rebuild its model on ``device`` (``"auto"`` picks CUDA when present) and
    read its classes, palette, training size/precision/layout and dataset config.

    ``key`` names the config key the path came from, for the error messages."""
    ckpt = load_checkpoint(path, key=key)
    cfg = ckpt.get("config") or {}
    if not ckpt.get("arch"):
        raise CheckpointError(f"{path} names no architecture; it was not written by segdeconv's trainer")
    dev = resolve_device(device) if isinstance(device, str) else device
    try:
        model = registry.build(ckpt["arch"], "arch")
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    load_model_state(model, ckpt[weights_key(ckpt)], path)
    # inference runs the paper's plain graph: the training-memory policies (lean, recompute) only change how
    # autograd stores a step, and their forward wrappers would hide the model's signature from torch.export
    model = apply_policy(model, MemoryPolicy(lean=False)).to(dev).eval()
    n = registry.num_classes_of(model)
    dataset_cfg, trainer = dict(cfg.get("dataset") or {}), cfg.get("trainer") or {}
    size = dataset_cfg.get("image_size")
    return Trained(
        model=model,
        class_names=[str(c) for c in (ckpt.get("class_names") or range(n))],
        palette=[list(map(int, c)) for c in (ckpt.get("palette") or default_palette(n))],
        image_size=(int(size[0]), int(size[1])) if size else None,
        precision=str(trainer.get("precision", "fp32")),
        channels_last=trainer.get("channels_last", False),
        ignore_index=int((cfg.get("loss") or {}).get("ignore_index", 255)),
        dataset_cfg=dataset_cfg,
        config=cfg,
        step=int(ckpt.get("step") or 0),
        path=Path(path),
    )
