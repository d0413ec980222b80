"""benchmarks/quickstart.py end to end on a tiny task: one row per seed, parsed from train.py's own log; the
``--no-decoder`` ablation builds ``benchmarks/no_decoder.py`` through ``model._target_`` (no library change)."""
import os
import re
import subprocess
import sys

from conftest import REPO

TINY = ["--", "dataset.image_size=[32,48]", "dataset.train.length=8", "dataset.val.length=4",
        "dataset.batch_size=4", "trainer.max_epochs=1"]


def test_no_decoder_ablation_trains_and_reports_one_row_per_seed():
    cmd = [sys.executable, "benchmarks/quickstart.py", "--no-decoder", "--threads", "1", "--seeds", "3", "4", *TINY]
    r = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = re.findall(r"^\| (\d+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| cpu, ", r.stdout, re.M)
    assert [row[0] for row in rows] == ["3", "4"], r.stdout
    assert all(0.0 <= float(m) <= 1.0 and float(run) <= float(wall) for _, m, wall, run in rows), rows
    assert re.search(r"min [0-9.]+ · mean [0-9.]+ over 2 seeds", r.stdout), r.stdout
    assert "threads" in r.stdout.splitlines()[0]  # the machine line comes first


def test_no_decoder_head_predicts_at_the_input_size_without_switches():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    from no_decoder import NoDecoder
    from segdeconv.models import VGGEncoder

    model = NoDecoder(5, VGGEncoder("vgg11", width=0.5, num_stages=3), decoder="conv", lean=False)
    x = torch.randn(2, 3, 40, 56)
    out = model(x)
    assert out.shape == (2, 5, 40, 56)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert not any("decoder" in name for name, _ in model.named_parameters())
