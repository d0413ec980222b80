"""Scoring at the labels' native size (#31): the model predicts at its own resolution, its logits are
upsampled bilinearly to the labels' size, and the confusion matrix counts every native label pixel."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segdeconv.data.sampler import pad_collate
from segdeconv.data.transforms import segnet_eval
from segdeconv.engine.eval_loop import evaluate, to_label_size
from segdeconv.errors import ConfigError


class Halves(nn.Module):
    """Class 1 on the left half of the input, class 0 on the right: at any input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        logits = torch.zeros(n, 2, h, w)
        logits[:, 1, :, : w // 2] = 1.0
        logits[:, 0, :, w // 2:] = 1.0
        return logits


def test_logits_upsampled_to_native_labels() -> None:
    images = torch.zeros(2, 3, 9, 12)  # the model's input size
    masks = torch.zeros(2, 36, 48, dtype=torch.long)
    masks[:, :, :24] = 1  # the same halves, drawn at 4× the size
    cm = evaluate(Halves(), [(images, masks)], 2, torch.device("cpu"))
    assert int(cm.mat.sum()) == 2 * 36 * 48  # every native pixel counted, none resampled away
    assert cm.compute()["mIoU"] == pytest.approx(1.0)


def test_to_label_size_is_bilinear_and_identity_at_equal_size() -> None:
    x = torch.randn(1, 3, 5, 7)
    assert to_label_size(x, torch.zeros(1, 5, 7)) is x
    want = F.interpolate(x, size=(10, 14), mode="bilinear", align_corners=False)
    assert torch.equal(to_label_size(x, torch.zeros(1, 10, 14)), want)


def _item(h: int, w: int, mh: int, mw: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(3, h, w), torch.zeros(mh, mw, dtype=torch.long)


def test_pad_collate_pads_images_and_native_masks_each_to_their_own_size() -> None:
    images, masks = pad_collate([_item(9, 12, 36, 48), _item(9, 12, 36, 48)])
    assert images.shape == (2, 3, 9, 12) and masks.shape == (2, 36, 48)
    images, masks = pad_collate([_item(8, 10, 8, 10), _item(9, 12, 9, 12)])  # whole images of two sizes
    assert images.shape == (2, 3, 9, 12) and masks.shape == (2, 9, 12)
    assert (masks[0, 8:] == 255).all() and (images[0, :, 8:] == 0).all()


def test_native_masks_of_two_sizes_in_one_batch_are_refused() -> None:
    with pytest.raises(ConfigError, match="dataset.val.transform.labels=resized, or score with batch_size=1"):
        pad_collate([_item(9, 12, 36, 48), _item(9, 12, 30, 40)])


def test_half_resolution_scoring_loses_thin_structures_native_keeps_them() -> None:
    """A 1-px pole in a 360×480 label: resizing the mask to 180×240 keeps half of its columns or none;
    native scoring counts all of it."""
    image = np.zeros((360, 480, 3), np.uint8)
    mask = np.zeros((360, 480), np.uint8)
    mask[:, 101] = 1
    native = segnet_eval((180, 240))(image=image, mask=mask)["mask"]
    resized = segnet_eval((180, 240), labels="resized")(image=image, mask=mask)["mask"]
    assert (native == 1).sum() == 360 and (resized == 1).sum() < 360
