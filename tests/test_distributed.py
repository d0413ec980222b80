"""torchrun with 2 CPU processes (gloo): training, rank-0-only outputs, failure handling."""
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, TINY

from segdeconv.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _run(args, tmp_path, timeout=240, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(TORCHRUN + args + [f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_two_process_training_writes_once_and_learns(tmp_path):
    over = [o for o in TINY if not o.startswith("dataset.batch_size")]
    r = _run(["train.py", *over, "dataset.batch_size=2", "dataset.train.length=32", "trainer.max_epochs=3",
              "trainer.sync_bn=true"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["best.pt", "last.pt"]  # no per-rank copies
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["train_rank0.log", "train_rank1.log"]
    assert len(list((tmp_path / "tb").iterdir())) == 1  # one TensorBoard writer (rank 0)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["step"] == 3 * 32 // (2 * 2)  # global batch = 2 ranks × 2
    losses = ckpt["losses"]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert not any(k.startswith("module.") for k in ckpt["model"])


def test_a_rank_that_raises_ends_the_job_quickly(tmp_path):
    over = [o for o in TINY if not o.startswith("dataset.batch_size")]
    t0 = time.monotonic()
    r = _run(["train.py", *over, "dataset.batch_size=2", "trainer.max_epochs=2",
              "dataset.train._target_=helpers.faults.FailOnRank"], tmp_path, timeout=120,
             env_extra={"PYTHONPATH": str(REPO / "tests")})
    assert r.returncode != 0
    assert time.monotonic() - t0 < 90
    assert "injected failure on rank 1" in r.stderr


def test_torchrun_evaluate_equals_single_process_exactly(tmp_path):
    """7 val images over 2 ranks (uneven shards, nothing counted twice), fp32, batch 1."""
    from conftest import compose_cfg

    from segdeconv.tasks.evaluate import evaluate_checkpoint
    from segdeconv.tasks.train import fit

    run = tmp_path / "run"
    fit(compose_cfg(TINY + ["trainer.max_steps=3", "dataset.val.length=7", f"output_dir={run}"]))
    ckpt = run / "checkpoints" / "last.pt"
    common = [f"ckpt_path={ckpt}", "precision=fp32", "batch_size=1", "report.figures=false"]
    single = evaluate_checkpoint(compose_cfg(common + [f"output_dir={tmp_path / 'single'}"], "evaluate"))
    r = _run(["evaluate.py", *common], tmp_path / "ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    dist_m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert dist_m["num_images"] == 7
    assert dist_m["num_pixels"] == single["num_pixels"]
    assert dist_m["mIoU"] == single["mIoU"] and dist_m["per_class_iou"] == single["per_class_iou"]
