"""Median-frequency class weights (SegNet)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import CAMVID, make_folder, needs, write_png
from segdeconv.data import balance
from segdeconv.data.balance import (compute_median_frequency, median_frequency_weights,
                                    resolve_class_weights)
from segdeconv.data.camvid import CamVid
from segdeconv.data.folder import SegmentationFolder
from segdeconv.errors import ConfigError

# Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist
CAMVID_TRAIN_WEIGHTS = [0.2793, 0.2017, 4.7865, 0.1490, 1.0000, 0.4217, 3.8467, 1.9736, 0.7889,
                        6.3747, 8.8587]


@needs(CAMVID)
def test_camvid_train_weights(capsys: pytest.CaptureFixture) -> None:
    ds = CamVid(CAMVID, "train")
    weights = median_frequency_weights(ds)
    assert weights.dtype == torch.float32 and weights.shape == (11,)
    assert np.allclose(weights.numpy(), CAMVID_TRAIN_WEIGHTS, atol=6e-5)
    assert "| Bicyclist | 0.0053 | 8.8587 |" in capsys.readouterr().out
    # straight from the label PNGs: raw void (11) is not a class either
    assert np.allclose(compute_median_frequency(ds.mask_paths, 11), CAMVID_TRAIN_WEIGHTS, atol=6e-5)


def _two_masks(tmp_path: Path) -> SegmentationFolder:
    """Two 4x4 masks. Image 0: 8 px class 0, 4 px class 1, 4 px ignore. Image 1: 16 px class 1."""
    make_folder(tmp_path, n=2, size=(4, 4))
    write_png(tmp_path / "masks" / "img0.png", np.array([[0, 0, 0, 0], [0, 0, 0, 0],
                                                          [1, 1, 1, 1], [255] * 4]))
    write_png(tmp_path / "masks" / "img1.png", np.ones((4, 4)))
    return SegmentationFolder(tmp_path, class_names=["a", "b", "never"])


def test_formula_by_hand(tmp_path: Path) -> None:
    ds = _two_masks(tmp_path)
    # freq(a) = 8/16 (ignore pixels count in the image total), freq(b) = (4+16)/(16+16);
    # median over present classes = (0.5 + 0.625) / 2; absent class -> weight 0
    median = (0.5 + 0.625) / 2
    with pytest.warns(UserWarning, match="never"):
        weights = median_frequency_weights(ds, verbose=False)
    assert np.allclose(weights.numpy(), [median / 0.5, median / 0.625, 0.0])


def test_cache_is_reused_until_masks_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    ds = _two_masks(tmp_path / "data")
    cache = tmp_path / "run" / balance.CACHE_NAME
    with pytest.warns(UserWarning):
        first = resolve_class_weights("median_freq", ds, cache_dir=tmp_path / "run", verbose=False)
    assert json.loads(cache.read_text())["class_names"] == ["a", "b", "never"]

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("recomputed although the cache is valid")

    with monkeypatch.context() as m, pytest.warns(UserWarning):
        m.setattr(balance, "class_pixel_stats", boom)
        assert torch.equal(median_frequency_weights(ds, cache, verbose=False), first)
    write_png(tmp_path / "data" / "masks" / "img1.png", np.full((4, 4), 2))  # masks changed
    assert median_frequency_weights(ds, cache, verbose=False)[2] > 0


def test_resolve_specs(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    ds = _two_masks(tmp_path)
    assert resolve_class_weights(None, ds) is None
    assert resolve_class_weights(OmegaConf.create([1, 2, 0.5]), ds).tolist() == [1, 2, 0.5]
    with pytest.raises(ConfigError, match="list of 3 floats"):
        resolve_class_weights([1.0, 2.0], ds)
    with pytest.raises(ConfigError, match="'median' is unknown"):
        resolve_class_weights("median", ds)
