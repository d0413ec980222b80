"""Hydra multirun with the Optuna sweeper maximizes the val mIoU that train.py returns."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml
from cli_helpers import cli_env, tiny
from conftest import REPO

from segdeconv.tasks.commands import sweep_metric

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips


def test_sweep_metric_is_the_val_miou_and_nan_when_no_validation_ran():
    assert sweep_metric({"mIoU": 0.25, "pixel_acc": 0.9}) == 0.25
    assert math.isnan(sweep_metric({}))


@pytest.mark.slow
def test_optuna_sweep_runs_two_trials_and_reports_the_best_val_miou(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    r = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
         "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=0", "optimizer.lr=interval(1e-4,1e-2)",
         *tiny(trainer__max_epochs=1), f"hydra.sweep.dir={sweep}"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in trials] == ["0", "1"]
    lrs, mious = [], []
    for trial in trials:
        overrides = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        lrs.append(float(next(o for o in overrides if o.startswith("optimizer.lr=")).split("=")[1]))
        mious.append(json.loads((trial / "val_metrics.json").read_text())[-1]["mIoU"])
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs) and lrs[0] != lrs[1]
    best = max(range(2), key=mious.__getitem__)
    assert results["name"] == "optuna"
    assert results["best_value"] == pytest.approx(mious[best])
    assert results["best_params"] == {"optimizer.lr": pytest.approx(lrs[best])}


@pytest.mark.slow
def test_a_diverging_trial_is_counted_as_failed_and_the_sweep_goes_on(tmp_path):
    """Issue #32: a trial whose loss turns NaN used to end the whole sweep (sys.exit in the trial) with no
    optimization_results.yaml; it is now reported to Optuna as a failed trial."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    r = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=random",
         "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize",
         "optimizer.lr=choice(1e30,1e-3)",  # seed 0 samples 1e-3, then 1e30 (optuna 2.10's RandomSampler)
         *tiny(trainer__max_epochs=1), f"hydra.sweep.dir={sweep}"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "failed: loss is nan at step" in r.stderr and "Traceback" not in r.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"] == {"optimizer.lr": pytest.approx(1e-3)}
