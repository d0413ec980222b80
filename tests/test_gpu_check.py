"""benchmarks/gpu_check.py on a CPU: the --dry-run plan lists every row; without --dry-run it refuses (exit 2)."""
import itertools
import time

import pytest
import torch
from cli_helpers import run_cli

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips

SCRIPT = "benchmarks/gpu_check.py"


def _rows(stdout: str) -> list[list[str]]:
    """The table's body rows as lists of cells."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| model |")]
    return [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]


def test_dry_run_plans_every_row_with_its_command():
    t0 = time.monotonic()
    r = run_cli(SCRIPT, ["--dry-run"], timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert time.monotonic() - t0 < 20
    rows = _rows(r.stdout)
    assert all(row[4] == "not run (dry run)" for row in rows), [row[4] for row in rows]
    planned = {tuple(row[:4]) for row in rows}
    variants = ("NCHW", "channels_last", "channels_last + compile")
    for model, run, prec, variant in itertools.product(("segnet", "deconvnet"), ("train", "infer"),
                                                        ("fp32", "bf16", "fp16"), variants):
        assert (model, run, prec, variant) in planned
    for model, run in itertools.product(("segnet", "deconvnet"), ("train", "infer")):
        assert (model, run, "bf16", "int64 switches (channels_last)") in planned
    ddp = [row for row in rows if row[1] == "ddp"]
    assert len(ddp) == 1 and "torch.distributed.run --standalone --nproc_per_node 2 train.py" in ddp[0][-1]
    assert "trainer.device=cuda" in ddp[0][-1]
    assert len(rows) == 2 * 2 * (3 * 3 + 1) + 1
    commands = {row[-1] for row in rows}
    assert len(commands) == len(rows)  # every row its own command line
    assert any("trainer.compile=true" in c and "--worker infer deconvnet" in c for c in commands)
    assert any("model.encoder.compact_switches=false" in c for c in commands)
    assert "GPU:" in r.stdout and "`python benchmarks/gpu_check.py --dry-run`" in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run")
def test_without_cuda_it_exits_2_with_one_line():
    r = run_cli(SCRIPT, [], timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA device") and "--dry-run" in lines[0]
