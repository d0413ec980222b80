"""benchmarks/memory_floor.py (the least peak RSS of an exact training step) and the peak-RSS guard of
benchmarks/common.run_measured."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from common import run_measured  # noqa: E402
from memory_floor import conv_outputs  # noqa: E402

SCRIPT = [sys.executable, "benchmarks/memory_floor.py"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _segnet_conv_values(h: int, w: int, classes: int) -> int:
    """Values in every conv output of VGG16 SegNet for one h×w image, counted from the architecture."""
    px = [h * w >> 2 * i for i in range(5)]  # the five resolutions
    enc = 2 * 64 * px[0] + 2 * 128 * px[1] + 3 * 256 * px[2] + 3 * 512 * px[3] + 3 * 512 * px[4]
    dec = ((64 + classes) * px[0] + (128 + 64) * px[1] + (256 + 256 + 128) * px[2] + (512 + 512 + 256) * px[3]
           + 3 * 512 * px[4])
    return enc + dec


def test_conv_outputs_counts_every_encoder_and_decoder_convolution():
    from segdeconv.models.segnet import SegNet
    from segdeconv.models.vgg import VGGEncoder

    total, largest = conv_outputs(SegNet(11, VGGEncoder()), (64, 96))
    assert total == _segnet_conv_values(64, 96, 11)
    assert largest == 64 * 64 * 96


def _table(stdout: str) -> dict[str, tuple[float, float]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] != "part":
            rows[cells[0].strip("*")] = tuple(float(c.rstrip("×")) for c in cells[1:])
    return rows


def test_floor_table_adds_up_and_compares_with_the_reference():
    r = subprocess.run(SCRIPT + ["--size", "64", "96", "--batch", "2", "--reference-gib", "4.33"], cwd=REPO,
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^\d{4}-\d\d-\d\d · .+ · torch ", r.stdout, re.M)  # the machine line
    rows = _table(r.stdout)
    stored = next(k for k in rows if k.startswith("stored conv outputs"))
    values = _segnet_conv_values(64, 96, 11)
    assert f"({values / 1e6:.1f} M values/image × 2)" in stored
    assert rows[stored][0] == pytest.approx(values * 2 * 4 / 2**30, abs=0.006)  # fp32 column, 2 decimals
    assert rows[stored][1] == pytest.approx(values * 2 * 2 / 2**30, abs=0.006)
    assert 0.2 < rows["imports of train.py + optimizer (measured)"][0] < 2.0  # a measured process, not a constant
    a, b, floor = rows["A: start of backward"], rows["B: end of backward (+ fp32 gradients)"], rows["floor = max(A, B)"]
    for i in (0, 1):
        assert floor[i] == pytest.approx(max(a[i], b[i]), abs=0.006)
        assert rows["floor / reference"][i] == pytest.approx(floor[i] / 4.33, abs=0.006)
    assert rows["issue #18 target (× reference)"] == (0.50, 0.40)


@pytest.mark.parametrize("args, message", [(["--reference-gib", "0"], "--reference-gib must be > 0"),
                                           (["--size", "16", "16"], "--size must be ≥ 32 × 32")])
def test_bad_arguments_exit_2_with_the_fix(args, message):
    r = subprocess.run(SCRIPT + args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_run_measured_refuses_a_child_hidden_by_this_process_peak():
    import resource

    own_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pytest with torch: hundreds of MiB
    with pytest.raises(RuntimeError, match="hidden by this process's own"):
        run_measured([sys.executable, "-c", "pass"])
    bigger = run_measured([sys.executable, "-c", f"b = bytearray({2 * own_kib * 1024}); b[::4096] = b'x' * len(b[::4096])"])
    assert bigger.rss_gib >= 2 * own_kib / 2**20 * 0.95


def test_bench_train_runs_each_train_py_in_its_own_run_directory():
    """bench_train.ours launches train.py twice (two step counts): each needs a fresh hydra.run.dir, or
    the second is refused as overwriting the first run's record. Run from a fresh process (see above)."""
    code = ("import sys; sys.path.insert(0, 'benchmarks'); from bench_train import ours; "
            "print(ours('segnet', ['dataset.image_size=[64,96]'], (1, 2), None))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    img_s, cpu_s, rss = eval(r.stdout.strip().splitlines()[-1])
    assert img_s > 0 and cpu_s > 0 and 0.3 < rss < 8
