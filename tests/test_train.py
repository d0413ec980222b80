"""End to end: a tiny synthetic run learns, checkpoints round-trip, evaluate.py reproduces mIoU."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TINY, compose_cfg

from segdeconv.engine.checkpoint import load_checkpoint, load_model_state
from segdeconv.trained import load_trained


def test_two_epoch_run_improves_miou_and_writes_outputs(tiny_run):
    hist = json.loads((tiny_run / "val_metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[1]["mIoU"] > hist[0]["mIoU"]  # measured 0.097 → 0.129 (bf16), 0.068 → 0.097 (fp32)
    losses = load_checkpoint(tiny_run / "checkpoints" / "last.pt")["losses"]
    assert sum(losses[4:]) < sum(losses[:4])  # second epoch's 4 steps lower than the first's
    assert (tiny_run / "checkpoints" / "last.pt").is_file()
    assert (tiny_run / "checkpoints" / "best.pt").is_file()
    assert any((tiny_run / "tb").iterdir())


@pytest.mark.slow
def test_synthetic_default_learns(tmp_path):
    from segdeconv.tasks.train import fit

    cfg = compose_cfg(TINY + ["trainer.max_epochs=2", "dataset.train.length=48", f"output_dir={tmp_path}"])
    cfg.trainer.max_epochs = 1
    first = fit(cfg)["mIoU"]
    cfg2 = compose_cfg(TINY + ["trainer.max_epochs=4", "dataset.train.length=48", f"output_dir={tmp_path / 'b'}"])
    later = fit(cfg2)["mIoU"]
    assert later > first


def test_checkpoint_round_trip(tiny_ckpt):
    ckpt = load_checkpoint(tiny_ckpt)
    for key in ("model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "class_names", "palette"):
        assert key in ckpt, key
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    model = load_trained(tiny_ckpt).model
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k
    torch.load(tiny_ckpt, weights_only=True)  # loadable without executing code


@pytest.mark.slow
def test_evaluate_cli_reproduces_trainer_miou_exactly(tiny_run, tmp_path):
    best = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    hist = json.loads((tiny_run / "val_metrics.json").read_text())
    trained = next(h for h in hist if h["step"] == best["step"])
    r = subprocess.run(
        [sys.executable, "evaluate.py", f"ckpt_path={tiny_run / 'checkpoints' / 'best.pt'}", f"output_dir={tmp_path}",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["mIoU"] == trained["mIoU"]
    assert m["num_images"] == 8
    assert "mIoU" in r.stdout


def test_model_mismatch_is_a_clear_error(tiny_ckpt):
    from segdeconv.errors import CheckpointError
    from segdeconv.models import SegNet, VGGEncoder

    ckpt = load_checkpoint(tiny_ckpt)
    other = SegNet(7, VGGEncoder("vgg11", width=0.5, num_stages=3))  # the default segnet_small, 7 classes instead of 5
    try:
        load_model_state(other, ckpt["model"], tiny_ckpt)
    except CheckpointError as e:
        assert "does not fit this model" in str(e) and "classifier" in str(e)
    else:
        raise AssertionError("mismatch not detected")


def test_stripped_checkpoint_keeps_weights_and_drops_training_state(tiny_ckpt, tmp_path):
    from segdeconv.engine.checkpoint import strip_checkpoint

    small = strip_checkpoint(tiny_ckpt, tmp_path / "small.pt")
    a, b = load_checkpoint(tiny_ckpt), load_checkpoint(small)
    assert "optimizer" not in b and "rng" not in b and b["config"] == a["config"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert small.stat().st_size < tiny_ckpt.stat().st_size
    model = load_trained(small).model
    assert model.num_classes == len(b["class_names"])
