"""Every recipe in conf/experiment composes and runs 2 steps (debug=default) on generated data."""
import pytest

from conftest import CONF, compose_cfg
from data_helpers import make_camvid, make_voc
from segdeconv.tasks.train import fit

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# keep the CPU cost of the smoke run small; the full-size models are tested in test_models.py
SHRINK = {
    "segnet": ["model.encoder.width=0.125"],
    "segnet_basic": ["model.width=0.25"],
    "deconvnet": ["model.encoder.width=0.0625", "model.fc_channels=64"],
}


def test_expected_recipes_exist():
    assert {"camvid_segnet_cpu", "camvid_segnet", "camvid_segnet_basic", "voc_deconvnet", "voc_segnet"} <= set(EXPERIMENTS)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("recipe_data")
    return {"camvid": make_camvid(base / "camvid", n=4, size=(96, 128)), "voc": make_voc(base / "voc")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_recipe_runs_in_debug_mode(experiment, roots, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}", "debug=default", f"output_dir={tmp_path}"])
    name = cfg.dataset.name
    model = cfg.model._target_.rsplit(".", 1)[1]
    key = {"SegNet": "segnet", "segnet_basic": "segnet_basic", "DeconvNet": "deconvnet"}[model]
    extra = SHRINK[key] + [f"dataset.root={roots[name]}"]
    if name == "voc":
        extra.append("dataset.val_min_size=256")
    if name == "camvid":
        extra.append("dataset.image_size=[96,128]")
    cfg = compose_cfg([f"experiment={experiment}", "debug=default", f"output_dir={tmp_path}", *extra])
    metrics = fit(cfg)
    assert 0.0 <= metrics["mIoU"] <= 1.0
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
