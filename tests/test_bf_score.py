"""BF score (boundary F1; Csurka et al. BMVC 2013, SegNet-Tutorial computeBFmeasure.m) on masks worked out
by hand, and against a slow pixel-loop reference on random masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from segdeconv.engine.bf_score import BoundaryF1, boundary_f1, boundary_maps, tolerance_px

IGN = 255


def square(h: int, w: int, top: int, left: int, n: int, cls: int = 1, bg: int = 0) -> np.ndarray:
    m = np.full((h, w), bg, dtype=np.int64)
    m[top:top + n, left:left + n] = cls
    return m


def stripe(h: int, w: int, col: int) -> np.ndarray:
    """Class 0 left of ``col``, class 1 from ``col`` on: one straight vertical boundary."""
    m = np.zeros((h, w), dtype=np.int64)
    m[:, col:] = 1
    return m


def thr(theta_px: float, h: int, w: int) -> float:
    """The diagonal fraction that gives a tolerance of ``theta_px`` pixels on an h×w image."""
    return theta_px / math.hypot(h, w)


def blobs(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """Random blocky label map with 10 % of the pixels flipped to a random class."""
    m = np.kron(rng.integers(0, c, (h // 4 + 1, w // 4 + 1)), np.ones((4, 4), dtype=np.int64))[:h, :w]
    flip = rng.random((h, w)) < 0.1
    m[flip] = rng.integers(0, c, int(flip.sum()))
    return m


# ----------------------------------------------------------------------------- slow references
def loop_seg2bmap(m: np.ndarray) -> np.ndarray:
    """BSDS seg2bmap, one pixel at a time."""
    h, w = m.shape
    b = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            if i == h - 1 and j == w - 1:
                continue
            if i == h - 1:
                b[i, j] = m[i, j] != m[i, j + 1]
            elif j == w - 1:
                b[i, j] = m[i, j] != m[i + 1, j]
            else:
                b[i, j] = m[i, j] != m[i, j + 1] or m[i, j] != m[i + 1, j] or m[i, j] != m[i + 1, j + 1]
    return b


def seg2bdry_image_size(seg: np.ndarray) -> np.ndarray:
    """BSDS seg2bdry(seg, 'imageSize'), the function computeBFmeasure.m calls, on its doubled grid."""
    tx, ty = seg.shape
    bdry = np.zeros((2 * tx + 1, 2 * ty + 1))
    ev = np.zeros((tx, ty), dtype=bool)
    ev[:-1] = seg[:-1] != seg[1:]
    eh = np.zeros((tx, ty), dtype=bool)
    eh[:, :-1] = seg[:, :-1] != seg[:, 1:]
    bdry[2::2, 1::2] = ev  # MATLAB bdry(3:2:end, 2:2:end)
    bdry[1::2, 2::2] = eh  # bdry(2:2:end, 3:2:end)
    bdry[2:-1:2, 2:-1:2] = np.maximum(np.maximum(eh[:-1, :-1], eh[1:, :-1]), np.maximum(ev[:-1, :-1], ev[:-1, 1:]))
    bdry[0, :] = bdry[1, :]
    bdry[:, 0] = bdry[:, 1]
    bdry[-1, :] = bdry[-2, :]
    bdry[:, -1] = bdry[:, -2]
    return bdry[2::2, 2::2].astype(bool)


def loop_boundary_f1(pred, gt, num_classes, ignore, threshold):
    """Pixel loops and brute-force nearest-pixel distances; the ignore rule stated in segdeconv.engine.bf_score."""
    h, w = gt.shape
    theta2 = tolerance_px(h, w, threshold) ** 2

    def counted(i, j):
        return all(gt[a, b] != ignore for a in range(i, min(i + 2, h)) for b in range(j, min(j + 2, w)))

    def n_matched(query, target):
        pts = np.argwhere(target)
        return sum(1 for i, j in query if len(pts) and ((pts - (i, j)) ** 2).sum(1).min() <= theta2)

    f, present = np.full(num_classes, np.nan), np.zeros(num_classes, dtype=bool)
    for c in range(num_classes):
        bp, bg = loop_seg2bmap(pred == c), loop_seg2bmap(gt == c)
        qp = [(i, j) for i, j in np.argwhere(bp) if counted(i, j)]
        qg = [(i, j) for i, j in np.argwhere(bg) if counted(i, j)]
        if not qg:
            continue
        present[c] = True
        r = n_matched(qg, bp) / len(qg)
        p = n_matched(qp, bg) / len(qp) if qp else 0.0
        f[c] = 2 * p * r / (p + r) if p + r else 0.0
    return f, present


# ----------------------------------------------------------------------------- boundary maps
def test_square_boundary_is_the_4n_pixel_ring_offset_towards_the_origin_for_both_classes():
    m = square(30, 30, 10, 8, 10)  # rows 10..19, cols 8..17
    ring = np.zeros((30, 30), dtype=bool)
    ring[9:20, 7:18] = True
    ring[10:19, 8:17] = False  # outline of rows 9..19 × cols 7..17
    b = boundary_maps(np.stack([m == 0, m == 1]))
    assert ring.sum() == 40 and np.array_equal(b[0], ring) and np.array_equal(b[1], ring)


def test_mask_touching_the_image_frame_has_no_boundary_along_the_frame():
    m = np.zeros((6, 7), dtype=bool)
    m[:, :3] = True  # cols 0..2 of every row: only the vertical edge at col 2 is a boundary
    expected = np.zeros((6, 7), dtype=bool)
    expected[:, 2] = True
    assert np.array_equal(boundary_maps(m), expected)


@pytest.mark.parametrize("seed", range(4))
def test_boundary_maps_equal_a_pixel_loop_seg2bmap_and_the_seg2bdry_port_on_random_masks(seed):
    m = blobs(np.random.default_rng(seed), 13, 17, 3)
    for c in range(3):
        got = boundary_maps(m == c)
        assert np.array_equal(got, loop_seg2bmap(m == c))
        assert np.array_equal(got, seg2bdry_image_size(m == c))


# ----------------------------------------------------------------------------- hand-worked scores
def test_identical_masks_score_one_for_every_class_present():
    gt = blobs(np.random.default_rng(0), 40, 50, 5)
    f, present = boundary_f1(gt, gt.copy(), 5, IGN, 0.0)
    assert present.all() and np.array_equal(f, np.ones(5))


@pytest.mark.parametrize("theta,expected", [(0.0, 0.4), (1.5, 0.5), (2.5, 0.6)])
def test_10px_square_shifted_3px_right_with_theta_below_3_gives_the_hand_counted_f(theta, expected):
    # GT ring: rows {9,19} × cols 7..17 and cols {7,17} × rows 9..19 (40 px); prediction: the same 3 px right.
    # Predicted pixels within θ of the GT ring: θ=0: top/bottom rows, cols 10..17 -> 16/40;
    # θ=1.5 (d² ≤ 2): + col 18 on both rows, + rows 10 and 18 of the left side col 10 -> 20/40;
    # θ=2.5 (d² ≤ 6): + col 19, + rows 11 and 17 of col 10 -> 24/40. Recall is the mirror image: P = R = F.
    gt, pred = square(30, 30, 10, 8, 10), square(30, 30, 10, 11, 10)
    f, present = boundary_f1(pred, gt, 2, IGN, thr(theta, 30, 30))
    assert present.all() and f == pytest.approx([expected, expected])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_square_shifted_k_px_scores_one_when_theta_is_at_least_k(k):
    gt, pred = square(30, 30, 10, 8, 10), square(30, 30, 10, 8 + k, 10)
    f, _ = boundary_f1(pred, gt, 2, IGN, thr(k + 0.25, 30, 30))
    assert np.array_equal(f, [1.0, 1.0])


def test_theta_is_0_75_percent_of_the_diagonal_unrounded_so_4_5px_at_360x480():
    assert tolerance_px(360, 480) == 4.5  # diagonal 600
    gt = stripe(360, 480, 240)
    f4, _ = boundary_f1(stripe(360, 480, 244), gt, 2)  # every boundary pixel 4 px off: 4 ≤ 4.5
    f5, _ = boundary_f1(stripe(360, 480, 245), gt, 2)  # 5 px off: 5 > 4.5 (a rounded θ of 5 would match)
    assert np.array_equal(f4, [1.0, 1.0]) and np.array_equal(f5, [0.0, 0.0])


def test_a_pixel_exactly_theta_away_matches():
    assert tolerance_px(360, 480, 0.005) == 3.0  # match.cc keeps u*u + v*v <= maxDist^2
    f, _ = boundary_f1(stripe(360, 480, 243), stripe(360, 480, 240), 2, IGN, 0.005)
    assert np.array_equal(f, [1.0, 1.0])


def test_class_in_gt_but_absent_from_the_prediction_scores_zero():
    gt = square(20, 20, 5, 5, 6, cls=2)
    f, present = boundary_f1(np.zeros_like(gt), gt, 3, IGN, 0.01)
    assert present.tolist() == [True, False, True] and f[2] == 0.0 and f[0] == 0.0


def test_class_only_in_the_prediction_is_not_scored():
    pred = square(20, 20, 5, 5, 6, cls=2)
    f, present = boundary_f1(pred, np.zeros_like(pred), 3, IGN, 0.01)
    assert not present.any() and np.isnan(f).all()


def test_class_filling_every_valid_pixel_has_no_gt_boundary_and_is_not_scored():
    gt = np.zeros((20, 20), dtype=np.int64)
    gt[:5] = IGN  # class 0 everywhere else: its only mask edge is against void
    f, present = boundary_f1(square(20, 20, 8, 8, 4), gt, 2, IGN, 0.01)
    assert not present.any()


# ----------------------------------------------------------------------------- ignored pixels
def test_predictions_inside_ignored_pixels_do_not_change_the_score():
    truth = stripe(20, 24, 12)
    gt = truth.copy()
    gt[:6] = IGN
    pred = truth.copy()
    pred[:6] = np.random.default_rng(0).integers(0, 2, (6, 24))  # noise where the GT is void
    f, present = boundary_f1(pred, gt, 2, IGN, 0.0)
    assert present.all() and np.array_equal(f, [1.0, 1.0])
    f_unignored, _ = boundary_f1(pred, truth, 2, IGN, 0.0)
    assert (f_unignored < 1).all()  # the same noise is penalised where the GT is labelled


def test_gt_boundary_against_ignored_pixels_is_not_counted():
    gt = stripe(20, 24, 8)
    gt[8:12, 14:18] = IGN  # a void hole inside class 1: class 1's mask has a ring around it
    f, _ = boundary_f1(stripe(20, 24, 8), gt, 2, IGN, 0.0)
    assert np.array_equal(f, [1.0, 1.0])
    hole = gt.copy()
    hole[8:12, 14:18] = 0  # the same hole labelled class 0: now a real, missed boundary
    f_hole, _ = boundary_f1(stripe(20, 24, 8), hole, 2, IGN, 0.0)
    assert (f_hole < 1).all()


def test_void_on_either_side_of_an_edge_drops_it_alike_despite_the_half_pixel_offset():
    # the boundary pixel of a vertical edge sits on its left; void to the left or right drops it all the same
    gt = stripe(10, 20, 10)
    left, right = gt.copy(), gt.copy()
    left[:, 9], right[:, 10] = IGN, IGN
    for g in (left, right):
        f, present = boundary_f1(gt, g, 2, IGN, 0.0)
        assert not present.any()


@pytest.mark.parametrize("seed,theta", [(0, 0.0), (1, 1.0), (2, 1.5), (3, 2.2), (4, 3.7), (5, 1.5)])
def test_boundary_f1_equals_a_pixel_loop_brute_force_reference_on_random_masks_with_ignore(seed, theta):
    rng = np.random.default_rng(seed)
    h, w, c = 16, 21, 4
    gt, pred = blobs(rng, h, w, c), blobs(rng, h, w, c)
    right = rng.random((h, w)) < 0.5
    pred[right] = gt[right]  # partly right, so P and R vary
    gt[rng.random((h, w)) < 0.08] = IGN
    gt[3:7, 5:11] = IGN
    f, present = boundary_f1(pred, gt, c, IGN, thr(theta, h, w))
    f_ref, present_ref = loop_boundary_f1(pred, gt, c, IGN, thr(theta, h, w))
    assert np.array_equal(present, present_ref) and present.any()
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- accumulation
def test_each_class_is_averaged_over_the_images_where_it_is_present_and_absent_classes_are_none():
    a = square(30, 30, 10, 8, 10)
    a[0:4, 0:4] = 2  # image A: classes 0, 1, 2, predicted exactly -> F = 1 each
    b_gt, b_pred = square(30, 30, 10, 8, 10), square(30, 30, 10, 11, 10)  # image B: classes 0, 1, F = 0.4
    m = BoundaryF1(4, threshold=0.0)
    m.update(torch.from_numpy(a)[None], torch.from_numpy(a)[None])
    m.update(torch.from_numpy(b_pred)[None], torch.from_numpy(b_gt)[None])
    r = m.compute(["bg", "sq", "corner", "never"])
    assert r["per_class_bf"]["bg"] == pytest.approx(0.7) and r["per_class_bf"]["sq"] == pytest.approx(0.7)
    assert r["per_class_bf"]["corner"] == 1.0 and r["per_class_bf"]["never"] is None
    assert r["bf_score"] == pytest.approx((0.7 + 0.7 + 1.0) / 3)  # "never" left out of the mean
    assert r["image_bf"] == pytest.approx((1.0 + 0.4) / 2) and r["num_images_scored"] == 2


def test_the_table_shows_the_image_mean_beside_the_class_mean_each_named():
    """Issue #29 item 4: the paper's figure (computeBFmeasure.m: mean over images) is printed, not only the
    class mean; the two differ when classes appear in different numbers of images (0.8 vs 0.7 here)."""
    from segdeconv.engine.metrics import ConfusionMatrix, format_table

    a = square(30, 30, 10, 8, 10)
    a[0:4, 0:4] = 2
    b_gt, b_pred = square(30, 30, 10, 8, 10), square(30, 30, 10, 11, 10)
    m, cm = BoundaryF1(3, threshold=0.0), ConfusionMatrix(3)
    for pred, gt in ((a, a), (b_pred, b_gt)):
        m.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
        cm.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    r = {**cm.compute(), **m.compute()}
    assert r["image_bf"] == pytest.approx(0.7) and r["bf_score"] == pytest.approx(0.8)
    rows = {line.split()[0]: line for line in format_table(r).splitlines()}
    assert rows["bf_score"].split()[1] == "80.00" and "mean over classes" in rows["bf_score"]
    assert rows["image_bf"].split()[1] == "70.00" and "computeBFmeasure.m" in rows["image_bf"]


def test_batched_update_equals_one_image_at_a_time():
    rng = np.random.default_rng(7)
    gt = torch.from_numpy(np.stack([blobs(rng, 24, 32, 3) for _ in range(3)]))
    pred = torch.from_numpy(np.stack([blobs(rng, 24, 32, 3) for _ in range(3)]))
    batched, single = BoundaryF1(3, threshold=0.05), BoundaryF1(3, threshold=0.05)
    batched.update(pred, gt)
    for i in range(3):
        single.update(pred[i:i + 1], gt[i:i + 1])
    assert torch.allclose(batched.totals, single.totals, rtol=0, atol=1e-12)


def test_no_image_scored_gives_nan_means_and_all_none():
    m = BoundaryF1(2)
    r = m.compute()
    assert math.isnan(r["bf_score"]) and math.isnan(r["image_bf"]) and r["per_class_bf"] == {"0": None, "1": None}


def test_out_of_range_label_and_shape_mismatch_are_rejected():
    m = BoundaryF1(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        m.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 7))
    with pytest.raises(ValueError, match="must be the same"):
        m.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long))


def test_all_reduce_without_a_process_group_leaves_the_totals_unchanged():
    assert not dist.is_initialized()
    m = BoundaryF1(2, threshold=0.0)
    m.update(torch.from_numpy(square(20, 20, 5, 5, 6))[None], torch.from_numpy(square(20, 20, 5, 6, 6))[None])
    before = m.totals.clone()
    m.all_reduce()
    assert torch.equal(m.totals, before)


def test_all_reduce_on_a_one_rank_gloo_group_keeps_the_scores(tmp_path):
    m = BoundaryF1(2, threshold=0.0)
    m.update(torch.from_numpy(square(20, 20, 5, 5, 6))[None], torch.from_numpy(square(20, 20, 5, 6, 6))[None])
    before = m.compute()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        m.all_reduce()
    finally:
        dist.destroy_process_group()
    assert m.compute() == before
