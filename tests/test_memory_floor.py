"""benchmarks/memory_floor.py (the least peak RSS of an exact training step), the child-only peak RSS of
benchmarks/common.run_measured, and bench_train's run directories."""
import re
import sys

import pytest
from cli_helpers import cli_env, run_cli
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from common import run_measured  # noqa: E402
from memory_floor import backward_peak, conv_layers  # noqa: E402

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips


def _segnet_conv_values(h: int, w: int, classes: int) -> int:
    """Values in every conv output of VGG16 SegNet for one h×w image, counted from the architecture."""
    px = [h * w >> 2 * i for i in range(5)]  # the five resolutions
    enc = 2 * 64 * px[0] + 2 * 128 * px[1] + 3 * 256 * px[2] + 3 * 512 * px[3] + 3 * 512 * px[4]
    dec = ((64 + classes) * px[0] + (128 + 64) * px[1] + (256 + 256 + 128) * px[2] + (512 + 512 + 256) * px[3]
           + 3 * 512 * px[4])
    return enc + dec


def test_conv_layers_counts_every_encoder_and_decoder_convolution():
    from segdeconv.models.segnet import SegNet
    from segdeconv.models.vgg import VGGEncoder

    layers = conv_layers(SegNet(11, VGGEncoder()), (64, 96))
    assert len(layers) == 13 + 13
    assert layers[0][1:3] == (3 * 64 * 96, 0)  # conv1_1 on the RGB image: rebuilt by the lean graph, not kept
    assert sum(o for _, _, o, _ in layers) == _segnet_conv_values(64, 96, 11) - 64 * 64 * 96
    assert layers[-1][2] == 11 * 64 * 96  # the classifier's output


def test_backward_walk_finds_a_huge_layer_in_the_middle():
    """Three convs, the middle one with a huge weight: the peak is at it, not at either end."""
    layers = [("a", 10, 100, 1), ("big", 100, 100, 10_000), ("c", 100, 100, 1)]
    name, stored, copies, grads, wgrad, maps = backward_peak(layers, batch=1, act_bytes=2, autocast=True)
    assert name == "big"
    assert stored == (100 + 100) * 2  # a's output + big's input
    assert copies == (1 + 10_000) * 2 and grads == (10_000 + 1) * 4 and wgrad == 10_000 * 2 and maps == 200 * 2
    assert backward_peak(layers, 1, 4, autocast=False)[2] == 0  # no bf16 copies without autocast


def _table(stdout: str) -> dict[str, tuple[float, float]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] != "part":
            rows[cells[0].strip("*")] = tuple(float(c.rstrip("×")) for c in cells[1:])
    return rows


def test_floor_table_adds_up_and_compares_with_the_reference():
    r = run_cli("benchmarks/memory_floor.py", ["--size", "64", "96", "--batch", "2", "--reference-gib", "4.33"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^\d{4}-\d\d-\d\d · .+ · torch ", r.stdout, re.M)  # the machine line
    rows = _table(r.stdout)
    stored = next(k for k in rows if k.startswith("stored conv outputs"))
    values = _segnet_conv_values(64, 96, 11) - 64 * 64 * 96
    assert f"(all kept: {values / 1e6:.1f} M values/image × 2)" in stored
    assert 0.2 < rows["imports of train.py + optimizer (measured)"][0] < 2.0  # a measured process, not a constant
    floor = next(v for k, v in rows.items() if k.startswith("floor: peak of the backward walk"))
    parts = [v for k, v in rows.items() if not k.startswith(("floor", "issue"))]
    assert len(parts) == 8
    for i in (0, 1):
        assert floor[i] == pytest.approx(sum(p[i] for p in parts), abs=0.03)  # each part rounded to 0.01
        assert rows["floor / reference"][i] == pytest.approx(floor[i] / 4.33, abs=0.006)
    assert rows["issue #18 target (× reference)"] == (0.50, 0.40)


@pytest.mark.parametrize("args, message", [(["--reference-gib", "0"], "--reference-gib must be > 0"),
                                           (["--size", "16", "16"], "--size must be ≥ 32 × 32")])
def test_bad_arguments_exit_2_with_the_fix(args, message):
    r = run_cli("benchmarks/memory_floor.py", args, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_run_measured_reports_the_child_own_peak_not_this_process_inherited_one():
    import resource

    own_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pytest with torch: hundreds of MiB
    small = run_measured([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert small.rss_gib < min(0.1, own_kib / 2**20)  # a bare interpreter, not the inherited ru_maxrss
    bigger = run_measured([sys.executable, "-c", f"b = bytearray({2 * own_kib * 1024}); b[::4096] = b'x' * len(b[::4096])"])
    assert bigger.rss_gib >= 2 * own_kib / 2**20 * 0.95


def test_bench_train_runs_each_train_py_in_its_own_run_directory(tmp_path):
    """bench_train.ours_runs launches train.py once per step count: each needs a fresh hydra.run.dir, or
    the second is refused as overwriting the first run's record. (Timing is not asserted: at this size
    start-up noise exceeds the steps; per_image refuses that case, tested below.)"""
    from bench_train import ours_runs

    runs = ours_runs("segnet", ["dataset.image_size=[64,96]"], (1, 2), cli_env(), tmp_path)  # raises if one fails
    assert all(0.3 < r.rss_gib < 8 for r in runs), runs
    for n in (1, 2):
        assert (tmp_path / str(n) / "checkpoints" / "last.pt").is_file(), sorted(tmp_path.rglob("*"))


def test_per_image_rates_and_refuses_a_non_positive_time_difference():
    from bench_train import per_image
    from common import Measured

    short, long = Measured(10.0, 1.5, 20.0, ""), Measured(14.0, 2.0, 28.0, "")
    assert per_image(8, [short, long]) == (2.0, 1.0, 2.0)  # 8 images in 4 s, 8 CPU s; the larger peak
    for noisy in (Measured(9.0, 2.0, 28.0, ""), Measured(14.0, 2.0, 20.0, "")):  # wall, then CPU, not longer
        with pytest.raises(ValueError, match="start-up noise exceeds the timed steps; widen --steps"):
            per_image(8, [short, noisy])


@pytest.mark.parametrize("args, message", [(["--steps", "3", "3"], "need 1 <= N1 < N2"),
                                           (["--steps", "0", "2"], "need 1 <= N1 < N2"),
                                           (["--configs", "segdeconv default,nope"], "unknown 'nope'; choose from")])
def test_bench_train_rejects_bad_arguments_before_running_anything(args, message):
    r = run_cli("benchmarks/bench_train.py", args, timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
