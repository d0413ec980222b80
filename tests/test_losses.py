"""segdeconv.losses: hand-computed values, smp oracles, zero-safe empty batches, configs, bad args."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segdeconv.errors import ConfigError
from segdeconv.losses import CrossEntropy, Dice, Focal, LovaszSoftmax, OHEMCrossEntropy, WeightedSum, lovasz_grad, lovasz_softmax_flat

CONF_LOSS = Path(__file__).resolve().parents[1] / "conf" / "loss"
LN2 = math.log(2.0)
W = torch.tensor([1.0, 2.0, 4.0])

# 1x3x2x2 logits = log of known probabilities; pixel (1,1) is ignored.
#   a=(0,0): p=[.5,.25,.25] y=0 -> nll ln2     b=(0,1): p=[.25,.5,.25] y=1 -> nll ln2
#   c=(1,0): p=[.25,.25,.5] y=0 -> nll 2 ln2   d=(1,1): ignored
HAND_P = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5], [0.2, 0.3, 0.5]])
HAND_T = torch.tensor([[[0, 1], [0, 255]]])


def hand_logits() -> torch.Tensor:
    return HAND_P.log().T.reshape(1, 3, 2, 2).clone().requires_grad_(True)


def rand_batch(b: int = 2, c: int = 4, h: int = 5, w: int = 6, seed: int = 0, ignore_frac: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g)
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits.requires_grad_(True), target


ALL_LOSSES = {
    "ce_weight": lambda **kw: CrossEntropy(normalize="weight", **kw),
    "ce_valid": lambda **kw: CrossEntropy(normalize="valid", **kw),
    "dice": lambda **kw: Dice(**kw),
    "focal": lambda **kw: Focal(**kw),
    "lovasz": lambda **kw: LovaszSoftmax(**kw),
    "lovasz_per_image": lambda **kw: LovaszSoftmax(per_image=True, **kw),
    "lovasz_binned": lambda **kw: LovaszSoftmax(bins=256, **kw),
    "ohem_thresh": lambda **kw: OHEMCrossEntropy(thresh=0.7, min_kept=5, **kw),
    "ohem_topk": lambda **kw: OHEMCrossEntropy(thresh=None, min_kept=5, top_k_ratio=0.3, **kw),
    "ce_plus_lovasz": lambda **kw: WeightedSum([CrossEntropy, LovaszSoftmax], [1.0, 0.5], **kw),
}


# ----------------------------------------------------------------------------- cross-entropy


def test_ce_hand_values_valid_weight_and_unweighted():
    x = hand_logits()
    assert CrossEntropy(W, normalize="valid")(x, HAND_T).item() == pytest.approx(5 * LN2 / 3, rel=1e-6)
    assert CrossEntropy(W, normalize="weight")(x, HAND_T).item() == pytest.approx(5 * LN2 / 4, rel=1e-6)
    for norm in ("valid", "weight"):
        assert CrossEntropy(normalize=norm)(x, HAND_T).item() == pytest.approx(4 * LN2 / 3, rel=1e-6)


def test_ce_weight_mode_equals_torch_cross_entropy_loss():
    x, t = rand_batch()
    w = torch.tensor([0.5, 1.0, 3.0, 0.2])
    ours = CrossEntropy(w, normalize="weight")(x, t)
    ref = nn.CrossEntropyLoss(weight=w, ignore_index=255)(x, t)
    torch.testing.assert_close(ours, ref)


def test_ce_valid_mode_equals_caffe_segnet_loop():
    x, t = rand_batch(seed=1)
    w = torch.tensor([0.5, 1.0, 3.0, 0.2])
    prob = x.detach().softmax(1)
    loss, count = 0.0, 0  # softmax_loss_layer.cpp Forward_cpu, class_weighting + normalize: true
    for i, yy, xx in torch.nonzero(t != 255).tolist():
        y = int(t[i, yy, xx])
        loss -= math.log(max(float(prob[i, y, yy, xx]), 1.1754944e-38)) * float(w[y])
        count += 1
    assert CrossEntropy(w, normalize="valid")(x, t).item() == pytest.approx(loss / count, rel=1e-5)


def test_ce_valid_and_weight_gradients_differ_by_the_normaliser_ratio():
    x, t = rand_batch(seed=2)
    w = torch.tensor([0.5, 1.0, 3.0, 0.2])
    valid = t != 255
    ratio = float(w[t[valid]].sum()) / int(valid.sum())  # sum w[y] / count
    gv = torch.autograd.grad(CrossEntropy(w, normalize="valid")(x, t), x)[0]
    gw = torch.autograd.grad(CrossEntropy(w, normalize="weight")(x, t), x)[0]
    torch.testing.assert_close(gv, gw * ratio)


# ----------------------------------------------------------------------------- empty batches


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_all_ignored_batch_gives_zero_loss_zero_grad_and_is_connected(name):
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.full((2, 4, 4), 255)
    loss = ALL_LOSSES[name](class_weights=torch.tensor([1.0, 2.0, 0.5]))(x, t)
    assert loss.dim() == 0 and loss.requires_grad
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("name", ["ce_weight", "ohem_thresh", "ohem_topk"])
def test_weight_normalised_batch_of_only_zero_weight_classes_gives_zero_not_nan(name):
    x = torch.randn(1, 3, 2, 3, requires_grad=True)
    t = torch.tensor([[[1, 1, 255], [1, 255, 1]]])  # only class 1, whose weight is 0
    loss = ALL_LOSSES[name](class_weights=torch.tensor([1.0, 0.0, 2.0]))(x, t)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_ce_valid_with_only_zero_weight_classes_is_zero_but_counts_pixels():
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    t = torch.tensor([[[1, 1], [1, 255]]])
    loss = CrossEntropy(torch.tensor([1.0, 0.0, 2.0]), normalize="valid")(x, t)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_all_ignored_micro_batch_leaves_accumulated_gradients_unchanged(name):
    torch.manual_seed(0)
    model = nn.Conv2d(2, 3, 1)
    crit = ALL_LOSSES[name](class_weights=torch.tensor([1.0, 2.0, 0.5]))
    batches = [(torch.randn(1, 2, 4, 4), torch.randint(0, 3, (1, 4, 4))) for _ in range(2)]
    empty = (torch.randn(1, 2, 4, 4), torch.full((1, 4, 4), 255))

    def accumulate(micro):
        model.zero_grad()
        for img, tgt in micro:
            (crit(model(img), tgt) / len(micro)).backward()
        return [p.grad.clone() * len(micro) for p in model.parameters()]

    clean = accumulate(batches)
    mixed = accumulate([batches[0], empty, batches[1]])
    for gc, gm in zip(clean, mixed):
        assert torch.isfinite(gm).all()
        torch.testing.assert_close(gm, gc)


# ----------------------------------------------------------------------------- every loss


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradients_are_finite_and_nonzero(name):
    x, t = rand_batch(c=3, seed=3)
    loss = ALL_LOSSES[name](class_weights=torch.tensor([1.0, 2.0, 0.5]))(x, t)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    ignored = (t == 255).unsqueeze(1).expand_as(x)
    assert torch.equal(x.grad[ignored], torch.zeros_like(x.grad[ignored]))  # ignored pixels get no grad


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_class_weights_length_mismatch_names_loss_class_weights(name):
    x, t = rand_batch(c=4)
    with pytest.raises(ConfigError, match=r"loss\.class_weights has 3 values .* 4 classes"):
        ALL_LOSSES[name](class_weights=torch.ones(3))(x, t)


def test_mismatched_logits_and_target_shapes_raise_value_error():
    with pytest.raises(ValueError, match="do not match"):
        CrossEntropy()(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


# ----------------------------------------------------------------------------- dice


def test_dice_hand_value_two_classes():
    x = torch.tensor([[0.75, 0.25], [0.25, 0.75]]).log().T.reshape(1, 2, 1, 2)
    t = torch.tensor([[[0, 1]]])  # per class: I = .75, P = 1, T = 1 -> dice .75 -> loss .25
    assert Dice()(x, t).item() == pytest.approx(0.25, rel=1e-6)


def test_dice_absent_class_counts_zero_in_the_mean():
    x = torch.tensor([[0.75, 0.25, 0.0], [0.25, 0.75, 0.0]]).clamp_min(1e-30).log().T.reshape(1, 3, 1, 2)
    t = torch.tensor([[[0, 1]]])  # class 2 absent: (0.25 + 0.25 + 0) / 3
    assert Dice()(x, t).item() == pytest.approx(0.5 / 3, rel=1e-5)


@pytest.mark.parametrize("smooth,weights", [(0.0, None), (1.0, None), (0.0, [1.0, 3.0, 0.5, 2.0])])
def test_dice_matches_smp_dice_loss_multiclass(smooth, weights):
    losses = pytest.importorskip("segmentation_models_pytorch.losses")
    x, t = rand_batch(seed=4)
    t[t == 2] = 0  # class 2 absent from the target
    ref = losses.DiceLoss("multiclass", smooth=smooth, ignore_index=255, class_weights=weights)(x, t)
    ours = Dice(weights, smooth=smooth)(x, t)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(ref, x)[0])


# ----------------------------------------------------------------------------- focal


def test_focal_hand_values_with_and_without_alpha():
    x = hand_logits()  # (1-pt)^2 * nll: a .25 ln2, b .25 ln2, c .5625 * 2 ln2
    assert Focal()(x, HAND_T).item() == pytest.approx(1.625 * LN2 / 3, rel=1e-6)
    assert Focal(W)(x, HAND_T).item() == pytest.approx((0.25 + 0.5 + 1.125) * LN2 / 3, rel=1e-6)


def test_focal_gamma_zero_equals_ce_valid():
    x, t = rand_batch(seed=5)
    w = torch.tensor([0.5, 1.0, 3.0, 0.2])
    torch.testing.assert_close(Focal(w, gamma=0.0)(x, t), CrossEntropy(w, normalize="valid")(x, t))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_matches_smp_softmax_focal_on_valid_pixels(gamma):
    fn = pytest.importorskip("segmentation_models_pytorch.losses._functional")
    x, t = rand_batch(seed=6)
    valid = t != 255
    flat_x = x.permute(0, 2, 3, 1)[valid]  # (P, C)
    ref = fn.softmax_focal_loss_with_logits(flat_x, t[valid], gamma=gamma, reduction="mean")
    torch.testing.assert_close(Focal(gamma=gamma)(x, t), ref)


def test_focal_gradient_is_finite_for_fractional_gamma_at_saturated_probability():
    x = torch.tensor([[200.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2).requires_grad_(True)
    t = torch.tensor([[[0, 1]]])  # pixel 0: p_t == 1 exactly in float32
    Focal(gamma=0.3)(x, t).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- lovasz


def test_lovasz_hand_value_single_pixel():
    x = torch.tensor([0.6, 0.4]).log().reshape(1, 2, 1, 1)
    t = torch.tensor([[[0]]])  # present {0}: error |1 - .6| = .4, lovasz_grad([1]) = [1]
    assert LovaszSoftmax()(x, t).item() == pytest.approx(0.4, rel=1e-6)
    assert LovaszSoftmax(classes="all")(x, t).item() == pytest.approx(0.4, rel=1e-6)  # class 1: .4 too


def test_lovasz_perfect_prediction_is_zero():
    t = torch.tensor([[[0, 1], [2, 1]]])
    x = F.one_hot(t, 3).permute(0, 3, 1, 2).float() * 50.0
    assert LovaszSoftmax()(x, t).item() == pytest.approx(0.0, abs=1e-6)


def test_lovasz_grad_matches_smp_reference():
    losses = pytest.importorskip("segmentation_models_pytorch.losses.lovasz")
    gt = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(lovasz_grad(gt), losses._lovasz_grad(gt))
    both = torch.stack([gt, gt.flip(0)], dim=1)  # column-wise = per class
    torch.testing.assert_close(lovasz_grad(both)[:, 1], losses._lovasz_grad(gt.flip(0)))


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_matches_smp_lovasz_loss_multiclass(per_image):
    losses = pytest.importorskip("segmentation_models_pytorch.losses")
    x, t = rand_batch(seed=7)
    ref = losses.LovaszLoss("multiclass", per_image=per_image, ignore_index=255)(x, t)
    ours = LovaszSoftmax(per_image=per_image)(x, t)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(ref, x)[0])


@pytest.mark.parametrize("classes", ["all", [0, 2]])
def test_lovasz_softmax_flat_matches_smp_for_class_subsets(classes):
    lov = pytest.importorskip("segmentation_models_pytorch.losses.lovasz")
    g = torch.Generator().manual_seed(8)
    probas = torch.randn(30, 4, generator=g).softmax(1)
    labels = torch.randint(0, 3, (30,), generator=g)  # class 3 absent
    torch.testing.assert_close(lovasz_softmax_flat(probas, labels, classes),
                               lov._lovasz_softmax_flat(probas, labels, classes=classes))


def test_lovasz_class_weights_give_weighted_mean_of_present_classes():
    x, t = rand_batch(c=3, seed=9)
    w = torch.tensor([1.0, 3.0, 0.5])
    per = [LovaszSoftmax(classes=[c])(x, t).item() for c in range(3)]
    expect = sum(wi * li for wi, li in zip(w.tolist(), per)) / float(w.sum())
    assert LovaszSoftmax(w)(x, t).item() == pytest.approx(expect, rel=1e-5)


def test_lovasz_per_image_skips_all_ignored_images():
    x, t = rand_batch(b=2, c=3, seed=10)
    t[1] = 255
    torch.testing.assert_close(LovaszSoftmax(per_image=True)(x, t), LovaszSoftmax()(x[:1], t[:1]))


def test_lovasz_binned_equals_the_sort_when_errors_tie_within_bins():
    """Probabilities from a 5-value set: every error is one of 0, .25, …, 1, so bins hold exact ties and the
    binned loss is the sorted one (any order of a tie sums the same)."""
    g = torch.Generator().manual_seed(3)
    probas = torch.randint(0, 5, (400, 4), generator=g).float() / 4
    labels = torch.randint(0, 4, (400,), generator=g)
    for bins in (8, 4096):
        torch.testing.assert_close(lovasz_softmax_flat(probas, labels, "all", bins=bins),
                                   lovasz_softmax_flat(probas, labels, "all"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bins", [256, 4096])
def test_lovasz_binned_loss_within_one_bin_and_gradient_within_two_percent(bins):
    """Continuous errors at a CamVid-like size (one 11-class 96×128 image, confident logits): each class's loss
    moves by < 1/bins (the stated bound) and the gradient by < 2 % (relative L2) from the exact sort."""
    g = torch.Generator().manual_seed(4)
    x = (4 * torch.randn(1, 11, 96, 128, generator=g)).requires_grad_(True)
    t = torch.randint(0, 11, (1, 96, 128), generator=g)
    for c in range(11):
        exact, binned = LovaszSoftmax(classes=[c])(x, t), LovaszSoftmax(classes=[c], bins=bins)(x, t)
        assert abs(binned.item() - exact.item()) < 1.0 / bins
    exact, binned = LovaszSoftmax()(x, t), LovaszSoftmax(bins=bins)(x, t)
    g_exact, g_binned = torch.autograd.grad(exact, x)[0], torch.autograd.grad(binned, x)[0]
    assert float((g_binned - g_exact).norm() / g_exact.norm()) < 0.02


@pytest.mark.parametrize("bins", [1, -4, 2.5, True])
def test_lovasz_bins_must_be_zero_or_at_least_two(bins):
    with pytest.raises(ConfigError, match="loss.criterion.bins must be 0"):
        LovaszSoftmax(bins=bins)


# ----------------------------------------------------------------------------- OHEM


def ohem_case():
    """1x2x2x5 logits whose true-class probabilities are 0.05, 0.15, …, 0.95; one pixel ignored."""
    p = torch.arange(10, dtype=torch.float64) / 10 + 0.05
    logits = torch.stack([p.log(), (1 - p).log()]).float().reshape(1, 2, 2, 5).requires_grad_(True)
    target = torch.zeros(1, 2, 5, dtype=torch.long)
    target[0, 1, 4] = 255  # the p = .95 pixel
    return logits, target, p.float().reshape(2, 5)


@pytest.mark.parametrize("min_kept,expected", [(1, 7), (7, 7), (8, 8), (50, 9)])
def test_ohem_keeps_pixels_below_thresh_but_at_least_min_kept(min_kept, expected):
    x, t, p = ohem_case()  # 7 valid pixels have p < .7; 9 are valid
    kept = OHEMCrossEntropy(thresh=0.7, min_kept=min_kept).kept_mask(x, t)[0]
    assert int(kept.sum()) == expected
    assert not bool(kept[1, 4])  # the ignored pixel is never kept
    assert float(p[kept].max()) <= float(torch.sort(p.flatten()[:9]).values[expected - 1]) + 1e-6


def test_ohem_min_kept_is_per_image():
    x, t, _ = ohem_case()
    x2, t2 = torch.cat([x, x]).detach(), torch.cat([t, t])
    assert int(OHEMCrossEntropy(thresh=0.1, min_kept=3).kept_mask(x2, t2).sum()) == 6


@pytest.mark.parametrize("min_kept,ratio,expected", [(3, None, 3), (2, 0.5, 5), (6, 0.5, 6), (40, None, 9)])
def test_ohem_top_k_mode_keeps_the_k_largest_losses(min_kept, ratio, expected):
    x, t, p = ohem_case()
    kept = OHEMCrossEntropy(thresh=None, min_kept=min_kept, top_k_ratio=ratio).kept_mask(x, t)[0]
    assert int(kept.sum()) == expected
    hardest = torch.sort(p.flatten()[:9]).values[:expected]  # smallest p = largest nll
    torch.testing.assert_close(torch.sort(p[kept]).values, hardest)


@pytest.mark.parametrize("normalize", ["valid", "weight"])
def test_ohem_loss_is_cross_entropy_on_kept_pixels(normalize):
    x, t = rand_batch(c=3, seed=11)
    w = torch.tensor([1.0, 2.0, 0.5])
    ohem = OHEMCrossEntropy(w, thresh=0.4, min_kept=4, normalize=normalize)
    kept = ohem.kept_mask(x, t)
    assert 0 < int(kept.sum()) < int((t != 255).sum())
    expect = CrossEntropy(w, normalize=normalize)(x, t.masked_fill(~kept, 255))
    torch.testing.assert_close(ohem(x, t), expect)


def test_ohem_mining_runs_without_grad():
    x, t = rand_batch(c=3)
    kept = OHEMCrossEntropy(min_kept=2).kept_mask(x, t)
    assert kept.dtype == torch.bool and not kept.requires_grad and x.grad is None


# ----------------------------------------------------------------------------- weighted sum


def test_weighted_sum_equals_manual_sum_and_forwards_weights_and_ignore_index():
    x, t = rand_batch(c=3, seed=12)
    t[t == 255] = 7
    w = torch.tensor([1.0, 2.0, 0.5])
    combo = WeightedSum([functools.partial(CrossEntropy, normalize="valid"), Dice], [0.3, 2.0],
                        class_weights=w, ignore_index=7)
    manual = 0.3 * CrossEntropy(w, 7, normalize="valid")(x, t) + 2.0 * Dice(w, 7)(x, t)
    torch.testing.assert_close(combo(x, t), manual)
    assert all(torch.equal(m.class_weights, w) and m.ignore_index == 7 for m in combo.terms)


@pytest.mark.parametrize("terms,weights,match", [
    ([CrossEntropy, Dice], [1.0], r"terms \(2\) and loss\.criterion\.weights \(1\)"),
    ([], [], "non-zero"),
    ([CrossEntropy], [-0.5], r"weights\[0\] must be a finite number >= 0"),
    ([CrossEntropy], [float("nan")], r"weights\[0\]"),
    ([CrossEntropy()], [1.0], r"terms\[0\] must be a loss constructor"),
    (["ce"], [1.0], r"terms\[0\]"),
])
def test_weighted_sum_bad_arguments_raise_config_error(terms, weights, match):
    with pytest.raises(ConfigError, match=match):
        WeightedSum(terms, weights)


# ----------------------------------------------------------------------------- bad arguments


BAD = [
    (CrossEntropy, {"normalize": "mean"}, r"loss\.criterion\.normalize"),
    (OHEMCrossEntropy, {"normalize": "sum"}, r"loss\.criterion\.normalize"),
    (CrossEntropy, {"class_weights": [1.0, -1.0]}, r"loss\.class_weights must be finite and >= 0"),
    (CrossEntropy, {"class_weights": [1.0, float("inf")]}, r"loss\.class_weights"),
    (CrossEntropy, {"class_weights": [0.0, 0.0]}, r"loss\.class_weights are all zero"),
    (CrossEntropy, {"class_weights": "median_freq"}, r"loss\.class_weights: .* not a list"),
    (CrossEntropy, {"class_weights": [[1.0, 2.0]]}, r"loss\.class_weights"),
    (Dice, {"class_weights": [-1.0, 1.0]}, r"loss\.class_weights"),
    (CrossEntropy, {"ignore_index": 2.5}, r"loss\.ignore_index must be an integer"),
    (Focal, {"gamma": -1.0}, r"loss\.criterion\.gamma must be in \[0, inf\)"),
    (Focal, {"gamma": "2"}, r"loss\.criterion\.gamma must be a number"),
    (Dice, {"smooth": -0.1}, r"loss\.criterion\.smooth"),
    (Dice, {"eps": 0.0}, r"loss\.criterion\.eps must be in \(0, inf\)"),
    (OHEMCrossEntropy, {"thresh": 0.0}, r"loss\.criterion\.thresh must be in \(0, 1\]"),
    (OHEMCrossEntropy, {"thresh": 1.5}, r"loss\.criterion\.thresh"),
    (OHEMCrossEntropy, {"min_kept": 0}, r"loss\.criterion\.min_kept must be >= 1"),
    (OHEMCrossEntropy, {"min_kept": 10.0}, r"loss\.criterion\.min_kept must be an integer"),
    (OHEMCrossEntropy, {"thresh": None, "top_k_ratio": 0.0}, r"loss\.criterion\.top_k_ratio must be in"),
    (OHEMCrossEntropy, {"thresh": 0.7, "top_k_ratio": 0.5}, r"top_k_ratio only applies with"),
    (LovaszSoftmax, {"classes": "some"}, r"loss\.criterion\.classes"),
    (LovaszSoftmax, {"classes": []}, r"loss\.criterion\.classes"),
    (LovaszSoftmax, {"classes": [0, -1]}, r"loss\.criterion\.classes"),
    (LovaszSoftmax, {"per_image": "yes"}, r"loss\.criterion\.per_image"),
]


@pytest.mark.parametrize("cls,kwargs,match", BAD, ids=[f"{c.__name__}-{k}" for c, k, _ in BAD])
def test_bad_constructor_argument_raises_config_error_naming_the_key(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_lovasz_class_id_beyond_num_classes_raises_at_forward():
    x, t = rand_batch(c=3)
    with pytest.raises(ConfigError, match=r"loss\.criterion\.classes \[0, 5\]"):
        LovaszSoftmax(classes=[0, 5])(x, t)


def test_class_weights_buffer_follows_module_dtype_and_is_not_in_state_dict():
    ce = CrossEntropy([1, 2, 3])
    assert ce.class_weights.dtype == torch.float32 and ce.state_dict() == {}
    assert ce.double().class_weights.dtype == torch.float64


# ----------------------------------------------------------------------------- configs


YAMLS = ["ce", "ce_caffe", "ce_lovasz", "dice", "focal", "lovasz", "ohem"]


def test_conf_loss_group_holds_exactly_the_documented_files():
    assert sorted(p.stem for p in CONF_LOSS.glob("*.yaml")) == YAMLS


@pytest.mark.parametrize("name", YAMLS)
def test_conf_loss_criterion_instantiates_and_trains(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    loss_node = OmegaConf.load(CONF_LOSS / f"{name}.yaml")
    cfg = OmegaConf.create({"dataset": {"ignore_index": 255}, "loss": loss_node})
    assert cfg.loss.ignore_index == 255 and cfg.loss.class_weights is None
    assert cfg.loss.class_weight_power == 1.0
    make = instantiate(cfg.loss.criterion)
    assert isinstance(make, functools.partial)
    crit = make(class_weights=torch.ones(3), ignore_index=cfg.loss.ignore_index)
    x, t = rand_batch(c=3, seed=13)
    loss = crit(x, t)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0 and x.grad.abs().sum() > 0


def test_conf_ce_caffe_is_valid_normalised_and_ce_lovasz_is_unit_weighted_sum():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    caffe = instantiate(OmegaConf.load(CONF_LOSS / "ce_caffe.yaml").criterion)(class_weights=None)
    assert isinstance(caffe, CrossEntropy) and caffe.normalize == "valid"
    combo = instantiate(OmegaConf.load(CONF_LOSS / "ce_lovasz.yaml").criterion)(class_weights=None)
    assert [type(m) for m in combo.terms] == [CrossEntropy, LovaszSoftmax] and combo.weights == [1.0, 1.0]
