"""The model as the training loop runs it: channels_last, SyncBatchNorm + DDP under torchrun, torch.compile."""
from __future__ import annotations

import logging
from typing import cast

import torch
from torch import nn

from segdeconv.engine.distributed import DistInfo

log = logging.getLogger("segdeconv")


def training_model(model: nn.Module, device: torch.device, dist: DistInfo, channels_last: bool, sync_bn: bool,
                   compile_model: bool) -> tuple[nn.Module, nn.Module]:
    """``(plain model, the wrapper training calls)``; the plain model is what checkpoints and validation use
    (a new module only when SyncBatchNorm replaced the BatchNorm layers)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    wrapped = model
    if dist.enabled:
        if sync_bn and device.type != "cuda":
            log.warning("trainer.sync_bn=true needs CUDA (SyncBatchNorm has no CPU kernel); "
                        "keeping per-process BatchNorm on %s", device)
        elif sync_bn:
            model = wrapped = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if compile_model:
        # compiling an nn.Module gives an OptimizedModule (an nn.Module); the stub types it as a callable
        return model, cast(nn.Module, torch.compile(wrapped))
    return model, wrapped
