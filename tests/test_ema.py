"""trainer.ema_decay: the weight EMA's arithmetic, what validation scores, what checkpoints and inference
load, and that a resumed run continues the same average bit for bit."""
from __future__ import annotations

import contextlib
import json
import shutil

import pytest
import torch
from cli_helpers import run_cli, tiny
from conftest import compose_cfg
from torch import nn

from segdeconv.engine.checkpoint import load_checkpoint, step_checkpoint_path, strip_checkpoint
from segdeconv.engine.ema import WeightEMA


def test_ema_follows_the_warmed_up_formula_by_hand_for_weights_and_bn_stats_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    ema = WeightEMA(model, decay=0.25)
    w, bn = model[0].weight, model[1]
    expected = None
    decays = []
    for t, value in enumerate([2.0, 4.0, 8.0, 16.0]):
        with torch.no_grad():
            w.fill_(value)
            bn.running_mean.fill_(-value)
            bn.num_batches_tracked.fill_(10 + t)
        ema.update(model)
        if expected is None:
            expected = value  # the first update copies
        else:
            decays.append(min(0.25, (1 + t) / (10 + t)))  # t updates averaged before this one
            expected = decays[-1] * expected + (1 - decays[-1]) * value
        assert ema.module[0].weight.item() == pytest.approx(expected, rel=1e-6)
        assert ema.module[1].running_mean.item() == pytest.approx(-expected, rel=1e-6)
        assert ema.module[1].num_batches_tracked.item() == 10 + t
    assert decays[0] < 0.25 and decays[-1] == 0.25  # both the warm-up and the cap were exercised
    assert int(ema.n_averaged) == 4 and not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(model, decay=1.0)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    out, args = tmp_path_factory.mktemp("ema_run"), ema_args()
    with global_determinism_restored():
        fit_in_process(args + [f"output_dir={out}"])
    return out, args


def ema_args() -> list[str]:
    return tiny(trainer__max_epochs=2, trainer__deterministic="true", trainer__ema_decay=0.9,
                trainer__checkpoint_every_steps=2, trainer__keep_last=10)


def fit_in_process(overrides: list[str]) -> None:
    from segdeconv.tasks.train import fit

    fit(compose_cfg(overrides))


@contextlib.contextmanager
def global_determinism_restored():
    """trainer.deterministic=true switches torch's process-wide deterministic mode on: give it back, so
    that the tests after this module run as they would alone."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])


def test_ema_run_checkpoints_the_average_inference_loads_it_and_evaluate_reproduces_validation(ema_run, tmp_path):
    from segdeconv.trained import load_trained

    out, _ = ema_run
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["ema_updates"] == ckpt["step"] > 0
    assert set(ckpt["ema_model"]) == set(ckpt["model"])
    assert any(not torch.equal(ckpt["ema_model"][k], ckpt["model"][k]) for k in ckpt["model"])
    loaded = load_trained(out / "checkpoints" / "last.pt").model.state_dict()
    assert all(torch.equal(loaded[k], ckpt["ema_model"][k]) for k in ckpt["model"])  # the average, not the raw
    last_val = json.loads((out / "val_metrics.json").read_text())[-1]
    r = run_cli("evaluate.py", [f"ckpt_path={out / 'checkpoints' / 'last.pt'}", f"hydra.run.dir={tmp_path / 'ev'}",
                                "report.figures=false", "report.bf_score=false"])
    assert r.returncode == 0, r.stderr
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert scored["mIoU"] == last_val["mIoU"]  # evaluate.py loads the EMA weights validation scored
    small = strip_checkpoint(out / "checkpoints" / "last.pt", tmp_path / "ship.pt")
    shipped = load_checkpoint(small)
    assert "ema_model" not in shipped and shipped["ema_updates"] == ckpt["ema_updates"]
    assert all(torch.equal(shipped["model"][k], ckpt["ema_model"][k]) for k in ckpt["model"])


def test_ema_resume_from_a_step_checkpoint_continues_the_same_average(ema_run, tmp_path):
    out, args = ema_run
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(step_checkpoint_path(out / "checkpoints", 2), tmp_path / "checkpoints")
    with global_determinism_restored():
        fit_in_process(args + [f"output_dir={tmp_path}", "trainer.resume=auto"])
    ref, got = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (out, tmp_path))
    assert got["ema_updates"] == ref["ema_updates"]
    for k in ref["ema_model"]:
        assert torch.equal(got["ema_model"][k], ref["ema_model"][k]), k


@pytest.mark.slow
def test_ema_decay_cannot_change_on_resume_and_is_range_checked(ema_run, tmp_path):
    out, args = ema_run
    args = [a for a in args if not a.startswith("trainer.ema_decay=")]
    r = run_cli("train.py", args + ["trainer.ema_decay=0.5", "trainer.resume=auto", f"hydra.run.dir={out}"])
    assert r.returncode == 2 and "trainer.ema_decay" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train.py", args + ["trainer.ema_decay=1.5", f"hydra.run.dir={tmp_path / 'bad'}"])
    assert r.returncode == 2 and "trainer.ema_decay" in r.stderr and "Traceback" not in r.stderr
