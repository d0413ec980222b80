"""Confusion-matrix metrics against hand-computed values."""
import math

import pytest
import torch

from segdeconv.engine.metrics import ConfusionMatrix, format_table


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


def test_dice_per_class_and_mean_from_the_hand_computed_matrix_with_absent_class_nan_and_excluded():
    # same matrix as above: rows GT [[1,1,0,0],[0,2,0,0],[1,0,1,0],[0,0,0,0]]; Dice = 2TP / (GT + pred)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    m = cm.compute(["a", "b", "c", "d"])
    dice = {"a": 2 * 1 / (2 + 2), "b": 2 * 2 / (2 + 3), "c": 2 * 1 / (2 + 1)}
    for name, v in dice.items():
        assert m["per_class_dice"][name] == pytest.approx(v)
    assert math.isnan(m["per_class_dice"]["d"])
    assert m["mean_dice"] == pytest.approx(sum(dice.values()) / 3)


def test_dice_is_zero_for_a_class_only_in_gt_or_only_in_prediction_and_counts_in_the_mean():
    cm = ConfusionMatrix(3)
    cm.mat = torch.tensor([[4, 0, 2], [3, 0, 0], [0, 0, 0]])  # class 1: GT only; class 2: prediction only
    m = cm.compute()
    assert m["per_class_dice"] == {"0": pytest.approx(8 / 13), "1": 0.0, "2": 0.0}
    assert m["mean_dice"] == pytest.approx(8 / 13 / 3)
    assert m["mIoU"] == pytest.approx(4 / 9 / 3)  # IoU treats these classes alike


def test_dice_equals_2iou_over_1_plus_iou_and_existing_keys_keep_their_values():
    cm = ConfusionMatrix(5)
    cm.mat = torch.randint(0, 50, (5, 5), generator=torch.Generator().manual_seed(0))
    m = cm.compute()
    for k, iou in m["per_class_iou"].items():
        assert m["per_class_dice"][k] == pytest.approx(2 * iou / (1 + iou))
    h = cm.mat.double()
    tp, gt, pr = h.diag(), h.sum(1), h.sum(0)
    assert m["mIoU"] == pytest.approx(float((tp / (gt + pr - tp)).mean()))
    assert m["pixel_acc"] == pytest.approx(float(tp.sum() / h.sum()))
    assert set(m) == {"mIoU", "pixel_acc", "mean_acc", "fw_iou", "per_class_iou", "num_pixels", "mean_dice",
                      "per_class_dice"}


def test_format_table_shows_a_dice_column_and_the_mean_dice_row():
    cm = ConfusionMatrix(2)
    cm.mat = torch.tensor([[3, 1], [0, 0]])  # class 1: prediction only -> IoU 0, Dice 0
    rows = format_table(cm.compute(["road", "sky"])).splitlines()
    assert rows[0].split() == ["class", "IoU", "Dice"]
    assert rows[1].split() == ["road", "75.00", f"{100 * 6 / 7:.2f}"]
    assert rows[2].split() == ["sky", "0.00", "0.00"]
    assert ["mean_dice", f"{100 * 3 / 7:.2f}"] in [r.split() for r in rows]


def test_format_table_marks_an_undefined_class_n_a_in_both_columns():
    cm = ConfusionMatrix(2)
    cm.mat = torch.tensor([[3, 0], [0, 0]])
    assert format_table(cm.compute(["road", "sky"])).splitlines()[2].split() == ["sky", "n/a", "n/a"]


def test_logged_scalars_include_dice_beside_miou():
    from segdeconv.engine.logger import metric_scalars

    cm = ConfusionMatrix(2, 255)
    cm.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
    scalars = metric_scalars(cm.compute(["bg", "fg"]))
    assert scalars["val/mean_dice"] == pytest.approx((2 / 3 + 2 / 3) / 2)  # bg: 2·1/(1+2), fg: 2·1/(2+1)
    assert set(scalars) >= {"val/mIoU", "val_iou/bg", "val_dice/fg"} and "val/bf_score" not in scalars
