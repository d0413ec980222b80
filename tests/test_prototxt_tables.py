"""The built models, layer by layer, against tables transcribed from the original Caffe prototxts.

Sources (read through the code search; each row names its prototxt layer):
  alexgkendall/SegNet-Tutorial Models/segnet_train.prototxt, segnet_basic_train.prototxt,
  bayesian_segnet_train.prototxt, bayesian_segnet_basic_train.prototxt;
  HyeonwooNoh/DeconvNet training/001_stage_1/stage_1_train.prototxt and
  training/002_stage_2/stage_2_train.prototxt (same layers; only the data layer differs).
A row is (prototxt layer, kind, in_ch, out_ch, kernel, pad, BN, ReLU, dropout p), in forward order;
BN/ReLU/dropout are the in-place layers on that layer's top blob (``conv1_1_bn``/``bn1_1``, ``relu1_1``,
``encdrop3``…). Full-size models are built on the meta device: shapes only, no memory, nothing run.
"""
import pytest
import torch
from torch import nn

from segdeconv.models import DeconvNet, SegNet, VGGEncoder, segnet_basic
from segdeconv.models.inputs import InputAdapter
from segdeconv.models.layers import Pool, Unpool

T, F = True, False

# conv1_1 … pool5: identical layer names and shapes in segnet_train.prototxt, bayesian_segnet_train.prototxt
# and DeconvNet's stage_{1,2}_train.prototxt (conv, BN, ReLU; pool 2×2/2 with a mask top).
VGG16_ENCODER = [
    ("conv1_1", "conv", 3, 64, 3, 1, T, T, 0), ("conv1_2", "conv", 64, 64, 3, 1, T, T, 0),
    ("pool1", "pool", 64, 64, 2, 0, F, F, 0),
    ("conv2_1", "conv", 64, 128, 3, 1, T, T, 0), ("conv2_2", "conv", 128, 128, 3, 1, T, T, 0),
    ("pool2", "pool", 128, 128, 2, 0, F, F, 0),
    ("conv3_1", "conv", 128, 256, 3, 1, T, T, 0), ("conv3_2", "conv", 256, 256, 3, 1, T, T, 0),
    ("conv3_3", "conv", 256, 256, 3, 1, T, T, 0),
    ("pool3", "pool", 256, 256, 2, 0, F, F, 0),
    ("conv4_1", "conv", 256, 512, 3, 1, T, T, 0), ("conv4_2", "conv", 512, 512, 3, 1, T, T, 0),
    ("conv4_3", "conv", 512, 512, 3, 1, T, T, 0),
    ("pool4", "pool", 512, 512, 2, 0, F, F, 0),
    ("conv5_1", "conv", 512, 512, 3, 1, T, T, 0), ("conv5_2", "conv", 512, 512, 3, 1, T, T, 0),
    ("conv5_3", "conv", 512, 512, 3, 1, T, T, 0),
    ("pool5", "pool", 512, 512, 2, 0, F, F, 0),
]

SEGNET = VGG16_ENCODER + [  # segnet_train.prototxt, decoder (Upsample with the pool masks)
    ("upsample5", "unpool", 512, 512, 2, 0, F, F, 0),
    ("conv5_3_D", "conv", 512, 512, 3, 1, T, T, 0), ("conv5_2_D", "conv", 512, 512, 3, 1, T, T, 0),
    ("conv5_1_D", "conv", 512, 512, 3, 1, T, T, 0),
    ("upsample4", "unpool", 512, 512, 2, 0, F, F, 0),
    ("conv4_3_D", "conv", 512, 512, 3, 1, T, T, 0), ("conv4_2_D", "conv", 512, 512, 3, 1, T, T, 0),
    ("conv4_1_D", "conv", 512, 256, 3, 1, T, T, 0),
    ("upsample3", "unpool", 256, 256, 2, 0, F, F, 0),
    ("conv3_3_D", "conv", 256, 256, 3, 1, T, T, 0), ("conv3_2_D", "conv", 256, 256, 3, 1, T, T, 0),
    ("conv3_1_D", "conv", 256, 128, 3, 1, T, T, 0),
    ("upsample2", "unpool", 128, 128, 2, 0, F, F, 0),
    ("conv2_2_D", "conv", 128, 128, 3, 1, T, T, 0), ("conv2_1_D", "conv", 128, 64, 3, 1, T, T, 0),
    ("upsample1", "unpool", 64, 64, 2, 0, F, F, 0),
    ("conv1_2_D", "conv", 64, 64, 3, 1, T, T, 0),
    ("conv1_1_D", "conv", 64, 11, 3, 1, F, F, 0),  # the classifier: raw scores into SoftmaxWithLoss
]

SEGNET_BASIC = [  # segnet_basic_train.prototxt: decoder convs have BN but no ReLU
    ("norm", "lrn", 3, 3, 5, 0, F, F, 0),  # LRN local_size 5, alpha 1e-4, beta 0.75
    ("conv1", "conv", 3, 64, 7, 3, T, T, 0), ("pool1", "pool", 64, 64, 2, 0, F, F, 0),
    ("conv2", "conv", 64, 64, 7, 3, T, T, 0), ("pool2", "pool", 64, 64, 2, 0, F, F, 0),
    ("conv3", "conv", 64, 64, 7, 3, T, T, 0), ("pool3", "pool", 64, 64, 2, 0, F, F, 0),
    ("conv4", "conv", 64, 64, 7, 3, T, T, 0), ("pool4", "pool", 64, 64, 2, 0, F, F, 0),
    ("upsample4", "unpool", 64, 64, 2, 0, F, F, 0), ("conv_decode4", "conv", 64, 64, 7, 3, T, F, 0),
    ("upsample3", "unpool", 64, 64, 2, 0, F, F, 0), ("conv_decode3", "conv", 64, 64, 7, 3, T, F, 0),
    ("upsample2", "unpool", 64, 64, 2, 0, F, F, 0), ("conv_decode2", "conv", 64, 64, 7, 3, T, F, 0),
    ("upsample1", "unpool", 64, 64, 2, 0, F, F, 0), ("conv_decode1", "conv", 64, 64, 7, 3, T, F, 0),
    ("conv_classifier", "conv", 64, 11, 1, 0, F, F, 0),
]

DECONVNET = VGG16_ENCODER + [  # stage_2_train.prototxt (= stage_1_train.prototxt)
    ("fc6", "conv", 512, 4096, 7, 0, T, T, 0),  # bnfc6, relu6; valid 7×7 → 1×1 at 224 px
    ("fc7", "conv", 4096, 4096, 1, 0, T, T, 0),  # bnfc7, relu7
    ("fc6-deconv", "deconv", 4096, 512, 7, 0, T, T, 0),  # fc6-deconv-bn, fc6-deconv-relu
    ("unpool5", "unpool", 512, 512, 2, 0, F, F, 0),
    ("deconv5_1", "deconv", 512, 512, 3, 1, T, T, 0), ("deconv5_2", "deconv", 512, 512, 3, 1, T, T, 0),
    ("deconv5_3", "deconv", 512, 512, 3, 1, T, T, 0),
    ("unpool4", "unpool", 512, 512, 2, 0, F, F, 0),
    ("deconv4_1", "deconv", 512, 512, 3, 1, T, T, 0), ("deconv4_2", "deconv", 512, 512, 3, 1, T, T, 0),
    ("deconv4_3", "deconv", 512, 256, 3, 1, T, T, 0),
    ("unpool3", "unpool", 256, 256, 2, 0, F, F, 0),
    ("deconv3_1", "deconv", 256, 256, 3, 1, T, T, 0), ("deconv3_2", "deconv", 256, 256, 3, 1, T, T, 0),
    ("deconv3_3", "deconv", 256, 128, 3, 1, T, T, 0),
    ("unpool2", "unpool", 128, 128, 2, 0, F, F, 0),
    ("deconv2_1", "deconv", 128, 128, 3, 1, T, T, 0), ("deconv2_2", "deconv", 128, 64, 3, 1, T, T, 0),
    ("unpool1", "unpool", 64, 64, 2, 0, F, F, 0),
    ("deconv1_1", "deconv", 64, 64, 3, 1, T, T, 0), ("deconv1_2", "deconv", 64, 64, 3, 1, T, T, 0),
    ("seg-score-voc", "conv", 64, 21, 1, 0, F, F, 0),
]


def with_dropout(table, drops, renames=None):
    """A table with ``Dropout`` layers (name → bottom blob) applied in place on their bottoms."""
    dropped, renames = set(drops.values()), renames or {}
    return [(renames.get(r[0], r[0]), *r[1:-1], 0.5 if r[0] in dropped else 0) for r in table]


# bayesian_segnet_train.prototxt: dropout_ratio 0.5 on pool3–5 and after conv5_1_D/conv4_1_D/conv3_1_D
# (the last conv of decoder stages 5–3, before upsample4/3/2); every other layer as segnet_train.
BAYESIAN_SEGNET = with_dropout(SEGNET, {"encdrop3": "pool3", "encdrop4": "pool4", "encdrop5": "pool5",
                                        "decdrop5": "conv5_1_D", "decdrop4": "conv4_1_D", "decdrop3": "conv3_1_D"})
# bayesian_segnet_basic_train.prototxt: dropout on pool3, pool4, conv_decode4, conv_decode3.
BAYESIAN_SEGNET_BASIC = with_dropout(
    SEGNET_BASIC, {"encdrop3": "pool3", "encdrop4": "pool4", "decdrop4": "conv_decode4", "decdrop3": "conv_decode3"},
    renames={"conv_classifier": "dense_softmax_inner_prod"})


def meta(build):
    with torch.device("meta"):
        return build()


def _atoms(module):
    """Layers in registration order, a :class:`Pool` (with its dropout) or a leaf being one layer."""
    if isinstance(module, InputAdapter):
        yield from ([module.lrn] if module.lrn is not None else [])
    elif isinstance(module, Pool):
        yield module
        if module.dropout is not None:
            yield module.dropout
    elif isinstance(module, Unpool) or not list(module.children()):
        yield module
    else:
        for child in module.children():
            yield from _atoms(child)


def _add(rows, m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        kind = "deconv" if isinstance(m, nn.ConvTranspose2d) else "conv"
        rows.append([kind, m.in_channels, m.out_channels, m.kernel_size[0], m.padding[0], F, F, 0])
    elif isinstance(m, (Pool, Unpool)):
        c = rows[-1][2]
        rows.append(["pool" if isinstance(m, Pool) else "unpool", c, c, 2, 0, F, F, 0])
    elif isinstance(m, nn.LocalResponseNorm):
        rows.append(["lrn", 3, 3, m.size, 0, F, F, 0])
    elif isinstance(m, nn.BatchNorm2d):
        assert not rows[-1][6] and not rows[-1][7] and m.num_features == rows[-1][2], f"BN misplaced after {rows[-1]}"
        rows[-1][5] = T
    elif isinstance(m, nn.ReLU):
        assert not rows[-1][7], f"ReLU after dropout in {rows[-1]}"
        rows[-1][6] = T
    elif isinstance(m, nn.Dropout):
        rows[-1][7] = m.p
    else:
        raise AssertionError(f"no prototxt layer corresponds to {m!r}")


def flatten(model):
    """A built SegNet/DeconvNet as table rows (without names), in forward order."""
    parts = [model.input_adapter, model.encoder.features]
    if isinstance(model, DeconvNet):
        parts += [model.fc6, model.fc7, model.fc6_deconv]
    for stage in model.decoder.stages:  # each decoder stage starts by unpooling with its switches
        parts += [model.decoder.unpool, stage]
    rows = []
    for m in (a for part in parts + [model.classifier] for a in _atoms(part)):
        _add(rows, m)
    return [tuple(r) for r in rows]


def mismatches(model, table):
    got, want = flatten(model), [r[1:] for r in table]
    bad = [f"{r[0]}: prototxt {w} vs model {g}" for r, w, g in zip(table, want, got) if w != g]
    if len(got) != len(want):
        bad.append(f"{len(want)} prototxt layers vs {len(got)} in the model")
    return bad


def table_params(table):
    """Parameters the prototxt layers hold: conv/deconv weights + biases, BN scale + shift."""
    return sum(i * o * k * k + o + (2 * o if bn else 0) for _, kind, i, o, k, _, bn, _, _ in table
               if kind in ("conv", "deconv"))


FAITHFUL = {  # model as the prototxt, table, parameter count in the papers
    "segnet": (lambda: SegNet(11), SEGNET, 29.45e6),
    "segnet_basic": (lambda: segnet_basic(11, input="caffe_bgr", input_lrn=True), SEGNET_BASIC, 1.42e6),
    "deconvnet": (lambda: DeconvNet(21), DECONVNET, 251.8e6),
    "bayesian_segnet": (lambda: SegNet(11, dropout=0.5), BAYESIAN_SEGNET, 29.45e6),
    "bayesian_segnet_basic": (lambda: segnet_basic(11, dropout=0.5, input_lrn=True), BAYESIAN_SEGNET_BASIC, 1.42e6),
}


@pytest.mark.parametrize("name", sorted(FAITHFUL))
def test_model_matches_its_prototxt_layer_by_layer(name):
    build, table, _ = FAITHFUL[name]
    assert mismatches(meta(build), table) == []


@pytest.mark.parametrize("name", sorted(FAITHFUL))
def test_parameter_counts_match_the_prototxt_and_the_paper(name):
    build, table, paper = FAITHFUL[name]
    n = sum(p.numel() for p in meta(build).parameters())
    assert n == table_params(table)
    assert abs(n / paper - 1) < 0.005, n  # the papers round to 3–4 digits


def test_segnet_basic_default_only_lacks_the_input_lrn():
    """The default (ImageNet-normalised input) has every prototxt layer except ``norm``."""
    assert mismatches(meta(lambda: segnet_basic(11)), SEGNET_BASIC[1:]) == []


def _relu_in_basic_decoder():
    return SegNet(11, VGGEncoder("basic"), classifier_kernel=1, decoder_relu=True, input_lrn=True)


def _bn_on_classifier():
    m = SegNet(11)
    m.classifier = nn.Sequential(m.classifier, nn.BatchNorm2d(11))
    return m


def _wrong_kernel():
    m = DeconvNet(21)
    m.decoder.stages[1][0] = nn.ConvTranspose2d(512, 512, 5, padding=2)  # deconv4_1 as 5×5
    return m


MUTANTS = {  # (broken model, the table it must fail, the rows that must be reported)
    "relu_in_basic_decoder": (_relu_in_basic_decoder, SEGNET_BASIC, ["conv_decode4", "conv_decode1"]),
    "bn_on_classifier": (_bn_on_classifier, SEGNET, ["conv1_1_D"]),
    "wrong_kernel": (_wrong_kernel, DECONVNET, ["deconv4_1"]),
    "missing_dropout": (lambda: SegNet(11, dropout=0.5, dropout_stages=2), BAYESIAN_SEGNET, ["pool3", "conv3_1_D"]),
    "no_dropout": (lambda: segnet_basic(11, input_lrn=True), BAYESIAN_SEGNET_BASIC, ["pool3", "conv_decode4"]),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_tables_catch_a_deviation(name):
    build, table, rows = MUTANTS[name]
    bad = mismatches(meta(build), table)
    for row in rows:
        assert any(b.startswith(row + ":") for b in bad), (row, bad)
