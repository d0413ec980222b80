"""benchmarks/quickstart.py end to end on a tiny task: one row per seed, parsed from train.py's own log; the
``--no-decoder`` ablation builds ``benchmarks/no_decoder.py`` through ``model.name=no_decoder:NoDecoder`` (no library change)."""
import re

import pytest
from cli_helpers import run_cli
from conftest import REPO

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips

TINY = ["dataset.image_size=[32,48]", "dataset.train.length=8", "dataset.val.length=4",
        "dataset.batch_size=4", "trainer.max_epochs=1", "trainer.device=cpu"]
SCRIPT = "benchmarks/quickstart.py"


def rows(stdout: str) -> list[tuple[str, ...]]:
    return re.findall(r"^\| (\d+) \| (\w+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| cpu, ", stdout, re.M)


@pytest.mark.parametrize("ablation,model", [(["--no-decoder"], "NoDecoder"), ([], "segnet")])
def test_trains_and_reports_one_row_per_seed(ablation, model):
    """Options and overrides in any order; each row names the model train.py actually built."""
    args = ablation + ["--threads", "1", "--seeds", "3", *TINY[:2], "--avx2", *TINY[2:]]
    r = run_cli(SCRIPT, args + (["--seeds", "3", "4"] if ablation else []), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = rows(r.stdout)
    seeds = ["3", "4"] if ablation else ["3"]
    assert [row[0] for row in got] == seeds and {row[1] for row in got} == {model}, r.stdout
    assert all(0.0 <= float(m) <= 1.0 and float(run) <= float(wall) for *_, m, wall, run in got), got
    assert re.search(rf"min [0-9.]+ · mean [0-9.]+ over {len(seeds)} seeds", r.stdout), r.stdout
    assert "AVX2" in r.stdout.splitlines()[0] and "1 threads" in r.stdout.splitlines()[0]  # the capped child's view


@pytest.mark.parametrize("args,words", [(["--seeds", "1", "1"], "each seed once"),
                                        (["hydra.run.dir=/tmp/x"], "set by this script"),
                                        (["dataset.image_size"], "unrecognized arguments: dataset.image_size")])
def test_bad_arguments_are_one_usage_error(args, words):
    r = run_cli(SCRIPT, args, timeout=120)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_no_decoder_head_predicts_at_the_input_size_without_switches(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
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
