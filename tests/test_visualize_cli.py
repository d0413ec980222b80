"""``python visualize.py``: checkpoint → top-k projections → PNGs, index.html, TensorBoard."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli
from conftest import compose_cfg

from segdeconv.engine.checkpoint import save_checkpoint
from segdeconv.errors import CheckpointError, ConfigError
from segdeconv.tasks.visualize import visualize
from segdeconv.trained import load_trained


def run(ckpt: Path, out: Path, *extra: str) -> dict:
    return visualize(compose_cfg([
        f"ckpt_path={ckpt}", f"output_dir={out}", "progress=false", "layers=[conv1_1,conv3_2]",
        "channels=[0,3]", "topk=2", "tile_px=16", *extra,
    ], "visualize"))


def test_end_to_end_writes_figures_index_and_tensorboard(tiny_ckpt, tmp_path):
    fig = tmp_path / "docs" / "zf.png"
    facts = run(tiny_ckpt, tmp_path / "run", "method=[deconvnet,guided_backprop]", f"figure_out={fig}")
    out = tmp_path / "run"
    for name in ("conv1_1.png", "conv3_2.png", "figure.png", "index.html", "topk.json"):
        assert (out / name).is_file(), name
    assert fig.is_file() and list((out / "tb").glob("events.out.tfevents.*"))
    assert "SyntheticShapes split=val (8 images)" in facts["dataset"]  # the checkpoint's dataset
    assert "conv3_2.png" in (out / "index.html").read_text()


def test_dataset_group_override_and_split(tiny_ckpt, tmp_path):
    facts = run(tiny_ckpt, tmp_path, "dataset=synthetic", "dataset.val.length=3", "dataset.image_size=[40,56]",
                "split=test", "limit=2")
    assert "split=test (2 images)" in facts["dataset"]


def test_overlay_on_the_checkpoint_dataset(tiny_ckpt, tmp_path):
    facts = run(tiny_ckpt, tmp_path, "+dataset.val.length=3", "split=train", "topk=5")
    assert "split=train (3 images)" in facts["dataset"]
    table = json.loads((tmp_path / "topk.json").read_text())["conv3_2"]
    assert table["image"][0][3:] == [-1, -1]  # 5 slots, 3 images


def test_load_trained_needs_an_architecture(tiny_ckpt, tmp_path):
    import torch

    state = torch.load(tiny_ckpt, weights_only=True)
    assert not load_trained(tiny_ckpt).model.training
    bare = save_checkpoint({"model": state["model"], "config": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="names no architecture; it was not written by segdeconv's trainer"):
        load_trained(bare)


def test_default_layers_fit_the_checkpoint_encoder(tiny_ckpt, tmp_path):
    """``layers: null`` (the default): the last conv of the two deepest stages of whatever encoder was trained."""
    from segdeconv.tasks.visualize import default_layers

    facts = visualize(compose_cfg([f"ckpt_path={tiny_ckpt}", f"output_dir={tmp_path}", "progress=false",
                                   "channels=[0]", "topk=1", "tile_px=16"], "visualize"))
    assert facts["layers"] == "conv2_1, conv3_2"  # the default segnet_small: VGG11's 3 stages
    vgg16 = ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2", "conv3_1", "conv3_2", "conv3_3", "pool3",
             "conv4_1", "conv4_2", "conv4_3", "pool4", "conv5_1", "conv5_2", "conv5_3", "pool5"]
    assert default_layers(vgg16) == ["conv4_3", "conv5_3"]
    assert run(tiny_ckpt, tmp_path / "one", "layers=conv3_2")["layers"] == "conv3_2"  # a bare name is one layer


def test_channel_out_of_range_is_a_config_error(tiny_ckpt, tmp_path):
    with pytest.raises(ConfigError, match=r"channel 40 is out of range for conv1_1 \(32 channels: 0..31\)"):
        run(tiny_ckpt, tmp_path, "channels=[0,40]")


@pytest.mark.slow
def test_unknown_layer_is_one_line_and_exit_2(tiny_ckpt, tmp_path):
    res = run_cli("visualize.py", [f"ckpt_path={tiny_ckpt}", f"hydra.run.dir={tmp_path}", "layers=[conv9_9]"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith("error: unknown layer 'conv9_9'; valid layers: conv1_1, pool1, conv2_1, ")


def test_figure_out_may_not_overwrite_the_checkpoint(tiny_ckpt, tmp_path):
    from cli_helpers import tree_digest

    before = tree_digest(tiny_ckpt.parent)
    res = run_cli("visualize.py", [f"ckpt_path={tiny_ckpt}", f"hydra.run.dir={tmp_path / 'v'}", f"figure_out={tiny_ckpt}"])
    assert res.returncode == 2 and "figure_out=" in res.stderr and "checkpoint" in res.stderr
    assert tree_digest(tiny_ckpt.parent) == before
