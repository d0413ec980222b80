"""torch.distributed set-up for torchrun (DDP): nccl on GPU, gloo on CPU, chosen automatically."""
from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from segdeconv.errors import ConfigError

DIST_TIMEOUT_S = 300.0  # the one default of trainer.dist_timeout_s (conf/trainer/default.yaml says the same)
# torch >= 2.3 binds the process group to this rank's GPU (eager NCCL init, barriers on the right device)
_HAS_DEVICE_ID = "device_id" in inspect.signature(dist.init_process_group).parameters


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def tag(self) -> str:
        """``[rank N]`` under torchrun (for log lines), empty for a single process."""
        return f"[rank {self.rank}]" if self.enabled else ""

    @property
    def suffix(self) -> str:
        """``_rankN`` under torchrun (per-rank log file names), empty for a single process."""
        return f"_rank{self.rank}" if self.enabled else ""


def env_info() -> DistInfo:
    """Rank/world size from torchrun's environment variables (single process when unset)."""
    return DistInfo(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def init_distributed(device: torch.device, timeout_s: float = DIST_TIMEOUT_S) -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process): nccl on ``device`` (which
    must be this rank's ``cuda:LOCAL_RANK``, from :func:`~segdeconv.engine.runtime.resolve_device`), made
    the current device first, or gloo on CPU."""
    info = env_info()
    if not info.enabled or dist.is_initialized():
        return info
    timeout = datetime.timedelta(seconds=timeout_s)
    if device.type != "cuda":
        dist.init_process_group("gloo", timeout=timeout)
        return info
    if device.index != info.local_rank:
        raise ConfigError(f"rank {info.rank} would use {device} but its GPU is cuda:{info.local_rank} (LOCAL_RANK); "
                          f"use trainer.device=cuda")
    torch.cuda.set_device(device)  # before NCCL starts: otherwise every rank opens a context on GPU 0
    extra: dict[str, Any] = {"device_id": device} if _HAS_DEVICE_ID else {}
    dist.init_process_group("nccl", timeout=timeout, **extra)
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
