"""Seeding and RNG snapshots (checkpointable with ``weights_only=True``: tensors/lists only)."""
from __future__ import annotations

import os
import random
import warnings
from typing import Any, Optional

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU + CUDA); optionally force deterministic kernels.

    ``max_unpool2d`` is flagged non-deterministic because arbitrary indices may collide; the
    switches of non-overlapping 2×2 pools never do, so it is deterministic here and only its alert
    is silenced (``warn_only``: any other such op warns instead of failing the run).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        warnings.filterwarnings("ignore", message="max_unpooling2d_forward_out does not have a deterministic")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch CPU/CUDA generator states as tensors and plain containers."""
    kind, keys, pos, *rest = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": {"keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(rest[0]), "gauss": float(rest[1])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Optional[dict[str, Any]]) -> None:
    """Inverse of :func:`capture_rng` (missing parts are left as they are)."""
    if not state:
        return
    random.setstate((state["python_version"], tuple(state["python"]), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
