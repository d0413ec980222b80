"""``segdeconv visualize`` class maps: ``images``, ``classes``, ``evidence.*``, ``occlusion.*``, ``explorer``."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import compose_cfg

from segdeconv.config import check_config
from segdeconv.errors import ConfigError, UserError
from segdeconv.tasks.visualize import visualize
from segdeconv.visualize import occlusion_map
from segdeconv.visualize.occlusion import occlusion_maps

FAST = ["progress=false", "layers=[]", "occlusion.patch=16", "occlusion.stride=16", "evidence.grid=2"]


def cfg_of(ckpt: Path, out: Path, *extra: str):
    return compose_cfg([f"ckpt_path={ckpt}", f"output_dir={out}", *FAST, *extra], "visualize")


def test_evidence_and_occlusion_pngs_for_chosen_images_and_classes(tiny_ckpt, tmp_path):
    facts = visualize(cfg_of(tiny_ckpt, tmp_path, "images=[1,3]", "classes=[0,1]", "evidence.region=[4,4,20,30]",
                             "evidence.enabled=true", "occlusion.enabled=true", "evidence.method=guided_backprop"))
    pngs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert len(pngs) == 8 and all(re.fullmatch(r"(evidence|occlusion)/image[13]_c?\w+\.png", p) for p in pngs), pngs
    assert not (tmp_path / "explorer").exists() and not (tmp_path / "figure.png").exists()  # layers=[]: no search
    assert facts["files"] == pngs or sorted(facts["files"]) == pngs


def test_explorer_folder_is_self_contained(tiny_ckpt, tmp_path):
    visualize(cfg_of(tiny_ckpt, tmp_path, "images=2", "explorer=true", "layers=[conv3_2]", "channels=[0,1]",
                     "topk=2", "tile_px=16"))
    folder = tmp_path / "explorer"
    page = (folder / "index.html").read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page) and "<link" not in page  # nothing external
    data = json.loads(re.search(r"id='data'>(.*?)</script>", page, re.S).group(1))
    assert [len(m["cells"]) for m in data["images"]] == [4, 4] and data["units"][0]["layer"] == "conv3_2"
    for src in re.findall(r'"(?:src|image|pred|conf|evidence|occlusion)":"([^"]+)"', page):
        assert (folder / src).is_file(), src
    with pytest.raises(UserError, match="already exists and holds files"):  # never mixed with an earlier page
        visualize(cfg_of(tiny_ckpt, tmp_path, "images=1", "explorer=true"))


@pytest.mark.parametrize("override, message", [
    ("classes=[1,Cat]", r"classes=\[1,Cat\]: class 'Cat' is unknown; use one of"),
    ("classes=[99]", r"classes=\[99\]: class index 99 is out of range"),
    ("images=[0,50]", r"images=\[0, 50\]: \[50\] not in the split's 8 images; use indices 0..7"),
    ("images=0", r"images=0 must be ≥ 1"),
    ("occlusion.stride=24", r"occlusion.stride=24 is larger than occlusion.patch=16.*set occlusion.stride ≤ 16"),
    ("occlusion.patch=4096", r"occlusion.patch=4096 px is larger than the \d+x\d+ image; set occlusion.patch ≤"),
    ("evidence.region=[1,2,3]", r"evidence.region=\[1, 2, 3\] must be mask, a pixel \[y, x\] or a box"),
    ("evidence.region=[0,0,999,5]", r"evidence.region=\[0, 0, 999, 5\] is empty or outside"),
])
def test_bad_class_map_values_name_the_key_before_any_work(tiny_ckpt, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        visualize(cfg_of(tiny_ckpt, tmp_path, "evidence.enabled=true", "occlusion.enabled=true",
                         "occlusion.stride=16" if "stride" not in override else "occlusion.patch=16", override))
    assert not list(tmp_path.rglob("*.png"))


@pytest.mark.parametrize("override, message", [
    ("occlusion.patch=0", "occlusion.patch=0 must be an integer ≥ 1"),
    ("evidence.method=saliency", "evidence.method='saliency' must be one of deconvnet, guided_backprop, gradient"),
    ("evidence.grid=0", "evidence.grid=0 must be an integer ≥ 1 and ≤ 32"),
    ("mc_samples=0", "mc_samples=0 must be an integer ≥ 1"),
])
def test_out_of_range_values_are_refused_by_the_schema(tiny_ckpt, tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(cfg_of(tiny_ckpt, tmp_path, override))


def test_nothing_to_do_and_mc_samples_without_dropout(tiny_ckpt, tmp_path):
    with pytest.raises(ConfigError, match=r"layers=\[\] leaves nothing to do"):
        visualize(cfg_of(tiny_ckpt, tmp_path))
    with pytest.raises(ConfigError, match="mc_samples=4 needs a model with dropout"):
        visualize(cfg_of(tiny_ckpt, tmp_path, "explorer=true", "mc_samples=4"))


@pytest.mark.parametrize("region", [None, (3, 5, 30, 40)])
def test_one_sweep_occlusion_equals_occlusion_map_per_class(region):
    import torch

    from segdeconv.models import SegNet, VGGEncoder

    torch.manual_seed(0)
    model = SegNet(4, encoder=VGGEncoder("vgg11", width=0.125, num_stages=3)).eval()
    image = torch.randn(3, 37, 50)
    label = model(image[None])[0].argmax(0)
    classes = [int(c) for c in label.unique()] if region is None else [0, 1, 2, 3]
    maps = occlusion_maps(model, image, classes, region, patch=12, stride=5, batch_size=7)
    for k, c in enumerate(classes):
        ref = occlusion_map(model, image, c, region, patch=12, stride=5, batch_size=3)
        torch.testing.assert_close(maps[k], ref, rtol=0, atol=1e-6)
    small = occlusion_maps(model, image, classes, region, patch=12, stride=5, batch_size=7, input_size=(18, 25))
    for k, c in enumerate(classes):  # at the training size too: each class as its own sweep would give
        ref = occlusion_map(model, image, c, region, patch=12, stride=5, batch_size=3, input_size=(18, 25))
        torch.testing.assert_close(small[k], ref, rtol=0, atol=1e-6)
