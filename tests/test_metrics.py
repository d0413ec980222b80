"""Confusion-matrix metrics against hand-computed values."""
import math

import pytest
import torch

from segdeconv.engine.metrics import ConfusionMatrix


def test_hand_computed_confusion_matrix_with_ignore_and_absent_class():
    # 4 classes; class 3 absent from GT and prediction -> excluded from the means
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3 - 1, 0]])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    expected = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.mat, expected)
    m = cm.compute(["a", "b", "c", "d"])
    iou = [1 / 3, 2 / 3, 1 / 2]
    assert m["mIoU"] == pytest.approx(sum(iou) / 3)
    assert math.isnan(m["per_class_iou"]["d"])
    assert m["pixel_acc"] == pytest.approx(4 / 6)
    assert m["mean_acc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["fw_iou"] == pytest.approx(2 / 6 * 1 / 3 + 2 / 6 * 2 / 3 + 2 / 6 * 1 / 2)


def test_out_of_range_label_is_rejected():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))


def test_accumulates_over_batches():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    t, p = torch.randint(0, 3, (4, 5, 5)), torch.randint(0, 3, (4, 5, 5))
    a.update(p, t)
    for i in range(4):
        b.update(p[i], t[i])
    assert torch.equal(a.mat, b.mat)
