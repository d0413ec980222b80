"""Helpers for tests that drive the real command-line entry points (train.py, evaluate.py, …)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, TINY


def with_overrides(base: list[str], **values: object) -> list[str]:
    """``base`` overrides with ``values`` (dotted keys written ``a__b``) replacing or appending keys."""
    new = {k.replace("__", "."): f"{k.replace('__', '.')}={v}" for k, v in values.items()}
    return [o for o in base if o.split("=", 1)[0] not in new] + list(new.values())


def tiny(**values: object) -> list[str]:
    """:data:`TINY` at 1/8 width, fp32 (cheapest deterministic CPU run), plus ``values``."""
    return with_overrides(TINY, **{"model__encoder__width": 0.125, "trainer__precision": "fp32", **values})


def cli_env(**extra: str) -> dict[str, str]:
    """One intra-op thread (the same numerics in every run, no oversubscription of a shared CPU), no GPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return {**env, **extra}


def run_cli(script: str, args: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``python <script> <args>`` in the repo root; output captured as text."""
    return subprocess.run([sys.executable, script, *args], cwd=REPO, env=cli_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def tree_digest(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root`` (to prove nothing was changed)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
