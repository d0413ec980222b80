"""Shared fixtures: config composition and one tiny trained checkpoint per test session."""
from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared by pytest, CLI
# subprocesses and torchrun workers, spinning threads slow every process down many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# A tiny, fast configuration for end-to-end runs (the default segnet_small on 64×80 synthetic images).
TINY = [
    "trainer.progress=false",
    "dataset.image_size=[64,80]",
    "dataset.train.length=16",
    "dataset.val.length=8",
    "dataset.batch_size=4",
]


def compose_cfg(overrides: list[str], config_name: str = "train"):
    """``hydra.compose`` of ``conf/<config_name>.yaml`` with overrides (no Hydra run dir)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name=config_name, overrides=overrides)


def shared_data(name: str) -> Path:
    """Path of ../shared/data/<name>, or skip the test with the reason."""
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"{p} is absent (real data lives in ../shared/data beside the repo)")
    return p


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Output dir of a 2-epoch tiny synthetic training run (checkpoints/best.pt, last.pt, tb/)."""
    from segdeconv.tasks.train import fit

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = compose_cfg(TINY + ["trainer.max_epochs=2", f"output_dir={out}"])
    fit(cfg)
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    """Path to the tiny run's best.pt."""
    return tiny_run / "checkpoints" / "best.pt"
