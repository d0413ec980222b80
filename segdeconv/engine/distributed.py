"""torch.distributed set-up for torchrun (DDP): nccl on GPU, gloo on CPU, chosen automatically."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process)."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
