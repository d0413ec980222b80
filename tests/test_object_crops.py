"""DeconvNet stage 1: object-centred crops from VOC XML boxes, SegmentationObject instances or the
mask's connected components; the two-stage experiments and model.init_from."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, shared_data
from data_helpers import make_voc, write_png

from segdeconv.data.object_crops import ObjectCrops, component_boxes, enlarge, instance_boxes, voc_object_crops
from segdeconv.data.voc import VOCSegmentation
from segdeconv.errors import CheckpointError, ConfigError

pytestmark = pytest.mark.slow  # CLI end-to-end runs: the whole suite has them, -m 'not slow' skips

PAL = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]


def object_voc(root: Path) -> tuple[Path, list[str]]:
    """A 1-image VOC tree: a 20×30 car (class 7) at rows 10–29, cols 40–69 of a 60×100 image, plus a
    4×4 speck of class 3; XML, SegmentationObject and SegmentationClass written for it."""
    make_voc(root, n=1, size=(60, 100))
    voc = root / "VOCdevkit" / "VOC2012"
    name = "2011_000000"
    mask = np.zeros((60, 100), np.uint8)
    mask[10:30, 40:70] = 7
    mask[50:54, 5:9] = 3
    write_png(voc / "SegmentationClass" / f"{name}.png", mask, PAL)
    inst = np.zeros_like(mask)
    inst[10:30, 40:70], inst[50:54, 5:9] = 1, 2
    write_png(voc / "SegmentationObject" / f"{name}.png", inst, PAL)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    (voc / "Annotations" / f"{name}.xml").write_text(
        "<annotation><object><name>car</name><bndbox><xmin>41</xmin><ymin>11</ymin><xmax>70</xmax>"
        "<ymax>30</ymax></bndbox></object></annotation>")
    return root, [name]


def test_each_box_source_finds_the_objects(tmp_path):
    root, _ = object_voc(tmp_path)
    ds = VOCSegmentation(root, "train")
    assert [it[1] for it in ObjectCrops(ds, source="xml").items] == [(10, 40, 30, 70)]
    assert sorted(it[1] for it in ObjectCrops(ds, source="instances").items) == [(10, 40, 30, 70), (50, 5, 54, 9)]
    assert [it[1] for it in ObjectCrops(ds, source="components", min_area=64).items] == [(10, 40, 30, 70)]
    auto = ObjectCrops(ds)  # prefers XML when present
    assert auto.counts == {"xml": 1, "instances": 0, "components": 0}


def test_crop_is_the_enlarged_box_centred_on_the_object(tmp_path):
    root, _ = object_voc(tmp_path)
    crops = ObjectCrops(VOCSegmentation(root, "train"), source="xml", box_scale=1.2)
    image, mask = crops.crop(0)
    assert mask.shape == (24, 36)  # 20×30 enlarged 1.2× about its centre
    ys, xs = np.nonzero(mask == 7)
    assert (ys.min() + ys.max() + 1) / 2 == mask.shape[0] / 2 and (xs.min() + xs.max() + 1) / 2 == mask.shape[1] / 2
    x, y = crops[0]
    assert x.shape == (3, 24, 36) and y.dtype == torch.int64


def test_enlarge_clips_to_the_image():
    assert enlarge((0, 0, 10, 10), 2.0, (12, 12)) == (0, 0, 12, 12)
    assert enlarge((4, 4, 8, 8), 1.0, (12, 12)) == (4, 4, 8, 8)


def test_components_and_instances_ignore_background_and_border():
    m = np.zeros((10, 10), np.uint8)
    m[0, :] = 255
    m[2:5, 2:5] = 1
    m[7:9, 7:9] = 1  # a second component of the same class
    assert sorted(component_boxes(m, min_area=1)) == [(2, 2, 5, 5), (7, 7, 9, 9)]
    assert component_boxes(m, min_area=5) == [(2, 2, 5, 5)]
    assert instance_boxes(np.where(m == 1, 3, m).astype(np.uint8)) == [(2, 2, 9, 9)]


def test_bad_options_are_config_errors(tmp_path):
    root, _ = object_voc(tmp_path)
    ds = VOCSegmentation(root, "train")
    with pytest.raises(ConfigError, match="source='boxes' is unknown"):
        ObjectCrops(ds, source="boxes")
    with pytest.raises(ConfigError, match="box_scale=0.5 must be ≥ 1"):
        ObjectCrops(ds, box_scale=0.5)


def test_real_voc_sample_masks_only_use_components():
    root = shared_data("voc_sample")
    crops = voc_object_crops(str(root), "train")
    assert crops.counts["components"] == len(crops) > 0 and crops.counts["xml"] == 0
    for k in range(len(crops)):
        _, mask = crops.crop(k)
        assert ((mask > 0) & (mask < 255)).any()  # every crop holds its object


@pytest.fixture()
def voc_root(tmp_path):
    return make_voc(tmp_path / "voc", n=16, size=(240, 260))


SMALL = ["model.encoder.width=0.0625", "model.fc_channels=64", "model.encoder.weights=null", "dataset.val_min_size=256", "dataset.num_workers=0",
         "dataset.batch_size=2", "trainer.accumulate_grad_batches=1", "trainer.max_steps=1", "trainer.progress=false",
         "trainer.limit_val_images=1"]
NOISY = ["dataset.train.min_area=1", "dataset.train.box_scale=8"]  # make_voc's masks are per-pixel noise


def test_two_stage_experiments_chain_through_init_from(voc_root, tmp_path):
    from segdeconv.tasks.train import build_trainer, fit

    s1 = compose_cfg(["experiment=voc_deconvnet_stage1", f"dataset.root={voc_root}", *SMALL, *NOISY,
                      f"output_dir={tmp_path / 's1'}"])
    assert s1.scheduler.milestones == [0.45, 0.9] and s1.trainer.max_steps == 1  # SMALL shortens the 20k
    fit(s1)
    ckpt = tmp_path / "s1" / "checkpoints" / "last.pt"
    s2 = compose_cfg(["experiment=voc_deconvnet_stage2", f"dataset.root={voc_root}", *SMALL,
                      f"model.init_from={ckpt}", f"output_dir={tmp_path / 's2'}"])
    tr = build_trainer(s2)
    saved = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in tr.model.state_dict().items())
    assert tr.state.step == 0  # weights only: a new run


def test_init_from_a_different_architecture_is_one_clear_error(voc_root, tmp_path):
    from segdeconv.tasks.train import build_trainer, fit

    fit(compose_cfg(["experiment=voc_deconvnet_stage1", f"dataset.root={voc_root}", *SMALL, *NOISY,
                     f"output_dir={tmp_path / 's1'}"]))
    ckpt = tmp_path / "s1" / "checkpoints" / "last.pt"
    wider = [o for o in SMALL if not o.startswith("model.fc_channels")] + ["model.fc_channels=32"]
    with pytest.raises(CheckpointError, match=r"model.init_from=.*does not fit this model"):
        build_trainer(compose_cfg(["experiment=voc_deconvnet_stage2", f"dataset.root={voc_root}", *wider,
                                   f"model.init_from={ckpt}", f"output_dir={tmp_path / 's2'}"]))
