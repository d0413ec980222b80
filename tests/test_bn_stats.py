"""BatchNorm statistics recomputation (engine/bn_stats.py) and the recompute_bn.py task."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli, tree_digest
from conftest import compose_cfg
from torch import nn

from segdeconv.engine.bn_stats import PROTOCOLS, Windows, bn_loader, bn_protocol, full_batch_order, recompute_bn_statistics, stack_same_size, window_loader
from segdeconv.errors import DataError, UserError

CPU = torch.device("cpu")


def hand_bn_statistics(model: nn.Module, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The SegNet-Tutorial formula, computed from each BN layer's inputs: (mean over batches of the
    batch mean, mean over batches of the biased batch variance × m/(m−1)), BN in training mode and
    every other layer in eval mode, on a copy of ``model``."""
    net = copy.deepcopy(model).eval()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    seen: list[list[torch.Tensor]] = [[] for _ in bns]
    for i, bn in enumerate(bns):
        bn.train()
        bn.register_forward_pre_hook(lambda _m, args, i=i: seen[i].append(args[0].detach().double()))
    with torch.no_grad():
        for x in batches:
            net(x)
    out = []
    for xs in seen:
        means = torch.stack([x.mean((0, 2, 3)) for x in xs])
        biased = torch.stack([(x * x).mean((0, 2, 3)) - x.mean((0, 2, 3)) ** 2 for x in xs])
        m = xs[0].numel() / xs[0].shape[1]
        out.append((means.mean(0).float(), (biased.mean(0) * m / (m - 1)).float()))
    return out


def running_stats(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.running_mean.clone(), m.running_var.clone()) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def small_net() -> nn.Module:
    """Conv-BN-ReLU, dropout, conv-BN: the dropout must be off while the second BN is measured."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5))


def assert_stats_close(got: list, want: list) -> None:
    assert len(got) == len(want)
    for (gm, gv), (wm, wv) in zip(got, want):
        torch.testing.assert_close(gm, wm, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gv, wv, rtol=1e-4, atol=1e-5)


def test_recomputed_stats_equal_the_segnet_average_of_per_batch_statistics():
    model = small_net()
    model.eval()[3].train()  # a mixed mode (MC dropout) that must come back unchanged
    batches = [torch.randn(3, 3, 5, 6) * (k + 1) + k for k in range(4)]
    want = hand_bn_statistics(model, batches)
    weights = [p.clone() for p in model.parameters()]
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    recompute_bn_statistics(model, [(x, torch.zeros(1)) for x in batches], CPU)
    assert_stats_close(running_stats(model), want)
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == momenta == [0.1, 0.1]
    assert [m.training for m in model] == [False, False, False, True, False, False]
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))


def test_bn_loader_fills_the_last_batch_with_the_first_images():
    assert full_batch_order(10, 4) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert full_batch_order(3, 8) == [0, 1, 2, 0, 1, 2, 0, 1]
    data = [(torch.full((3, 2, 2), float(i)), torch.zeros(2, 2, dtype=torch.long)) for i in range(5)]
    sizes = [len(x) for x, _ in bn_loader(data, 2, 0, CPU)]
    assert sizes == [2, 2, 2]


def test_images_of_different_sizes_in_one_batch_are_refused():
    batch = [(torch.zeros(3, 4, 4), torch.zeros(4, 4)), (torch.zeros(3, 4, 6), torch.zeros(4, 6))]
    with pytest.raises(DataError, match="batch_size=1"):
        stack_same_size(batch)


def test_a_model_without_batchnorm_is_refused():
    with pytest.raises(UserError, match="no BatchNorm layer"):
        recompute_bn_statistics(nn.Conv2d(3, 3, 1), [torch.zeros(1, 3, 2, 2)], CPU)


def test_a_failed_pass_leaves_every_statistic_unchanged():
    model = small_net()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(0.5)
    before = running_stats(model)

    def batches():
        yield torch.randn(2, 3, 4, 4)
        raise DataError("x.png: unreadable")

    with pytest.raises(DataError):
        recompute_bn_statistics(model, batches(), CPU)
    assert_stats_close(running_stats(model), before)


# ----------------------------------------------------------------------------- the task
def test_recompute_bn_task_writes_hand_computed_stats_and_the_result_evaluates(tiny_ckpt, tmp_path):
    from segdeconv.config import split_dataset
    from segdeconv.engine.checkpoint import load_checkpoint
    from segdeconv.tasks.evaluate import evaluate_checkpoint
    from segdeconv.tasks.recompute_bn import recompute_bn
    from segdeconv.trained import load_trained

    out = tmp_path / "bn.pt"
    res = recompute_bn(compose_cfg([f"ckpt_path={tiny_ckpt}", f"output={out}", "limit=6", "batch_size=4",
                                    "precision=fp32", "num_workers=0", "windows=eval"], "recompute_bn"))
    old, new = load_checkpoint(tiny_ckpt), load_checkpoint(out)
    assert res["images"] == 6 and new["bn_recomputed"] == {"split": "train", "windows": "eval", "images": 6,
                                                           "batch_size": 4, "batches": 2, "seed": 0}
    assert {k: v for k, v in new.items() if k not in ("model", "bn_recomputed")}.keys() == old.keys() - {"model"}
    assert new["config"] == old["config"] and new["step"] == old["step"]
    trained = load_trained(tiny_ckpt)
    data = split_dataset(trained.dataset_cfg, None, "train")
    images = [data[i % 6][0] for i in range(8)]  # 6 images, the last batch filled with the first two
    want = hand_bn_statistics(trained.model, [torch.stack(images[:4]), torch.stack(images[4:])])
    assert_stats_close(running_stats(load_trained(out).model), want)
    assert any(not torch.allclose(a[1], b[1]) for a, b in zip(running_stats(trained.model), want))
    m = evaluate_checkpoint(compose_cfg([f"ckpt_path={out}", f"output_dir={tmp_path / 'eval'}", "precision=fp32",
                                         "report.figures=false"], "evaluate"))
    assert 0.0 <= m["mIoU"] <= 1.0 and m["num_images"] == len(split_dataset(trained.dataset_cfg, None, "val"))


@pytest.mark.parametrize("target,message", [("input", "is the input checkpoint"), ("other", "already exists")])
def test_recompute_bn_never_overwrites_a_file(tiny_ckpt, tmp_path, target, message):
    other = tmp_path / "keep" / "other.pt"
    other.parent.mkdir()
    other.write_bytes(b"precious")
    dst = tiny_ckpt if target == "input" else other
    before = tree_digest(tiny_ckpt.parent), tree_digest(other.parent)
    r = run_cli("recompute_bn.py", [f"ckpt_path={tiny_ckpt}", f"output={dst}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("error: output=") and message in r.stderr and "never overwrites" in r.stderr
    assert (tree_digest(tiny_ckpt.parent), tree_digest(other.parent)) == before


@pytest.mark.parametrize("bad", ["batch_size=0", "num_workers=-1", "limit=0"])
def test_recompute_bn_knobs_are_range_checked(bad, tiny_ckpt, tmp_path):
    from conftest import compose_cfg

    from segdeconv.config import check_config
    from segdeconv.errors import ConfigError

    cfg = compose_cfg([f"ckpt_path={tiny_ckpt}", f"output={tmp_path / 'new.pt'}", bad], "recompute_bn")
    with pytest.raises(ConfigError, match=bad.split("=")[0] + "="):
        check_config(cfg)


# ----------------------------------------------------------------------------- each original's protocol (issue #29)
def test_protocols_are_the_originals():
    assert (PROTOCOLS["deconvnet"].windows, PROTOCOLS["deconvnet"].batch_size, PROTOCOLS["deconvnet"].batches) == \
        ("train", 28, 501)  # DeconvNet_make_bn_layer_testable.prototxt batch 28, 501 iterations
    for family in ("segnet", "segnet_basic", "someone:Else"):  # the training batch, one pass
        assert (bn_protocol(family).windows, bn_protocol(family).batch_size, bn_protocol(family).batches) == \
            ("train", None, None)


@pytest.mark.parametrize("kv,plan", [
    ({"family": "deconvnet"}, ("train", 28, 501)),
    ({"family": "deconvnet", "batch_size": 4, "batches": 3}, ("train", 4, 3)),
    ({"family": "deconvnet", "windows": "eval"}, ("eval", 8, None)),
    ({"family": "segnet"}, ("train", 8, None)),
])
def test_the_plan_is_the_originals_unless_told_otherwise(kv, plan):
    from omegaconf import OmegaConf

    from segdeconv.tasks.recompute_bn import bn_plan

    cfg = OmegaConf.create({k: v for k, v in kv.items() if k != "family"})
    assert bn_plan(cfg, kv["family"], training_batch=8)[:3] == plan


def test_windows_are_seeded_shuffled_passes_with_fresh_augmentation():
    class Noisy:  # item i: a random value drawn per visit (the augmentation), tagged with i
        transform = None

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.tensor([float(i), float(torch.rand(()))]), torch.zeros(1)

    w = Windows(Noisy(), 12, seed=3)
    items = [w[v] for v in range(12)]
    assert sorted(int(x[0]) for x, _ in items[:5]) == [0, 1, 2, 3, 4]  # a pass visits every item once
    assert [int(x[0]) for x, _ in items[:5]] != [0, 1, 2, 3, 4] or [int(x[0]) for x, _ in items[5:10]] != \
        [0, 1, 2, 3, 4]  # shuffled
    again = Windows(Noisy(), 12, seed=3)
    assert all(torch.equal(a[0], again[v][0]) for v, a in enumerate(items))  # reproducible, any order
    first = {int(x[0]): x[1] for x, _ in items[:5]}
    assert all(first[int(x[0])] != x[1] for x, _ in items[5:10])  # a new pass, a new window of each item
    assert [int(x[0]) for x, _ in Windows(Noisy(), 7, shuffle=False)] == [0, 1, 2, 3, 4, 0, 1]


@pytest.fixture(scope="module")
def voc_deconvnet_ckpt(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny DeconvNet trained one step on generated VOC (500×375 images, as VOC's), and the data root."""
    from data_helpers import make_voc

    from segdeconv.tasks.train import fit

    base = tmp_path_factory.mktemp("bn_voc")
    root = make_voc(base / "voc", n=6, size=(375, 500))
    fit(compose_cfg(["experiment=voc_deconvnet_stage2", "model.init_from=null", f"dataset.root={root}",
                     "model.encoder.width=0.0625", "model.fc_channels=64", "dataset.batch_size=2",
                     "dataset.num_workers=0", "trainer.accumulate_grad_batches=1", "trainer.max_steps=1",
                     "trainer.progress=false", "trainer.limit_val_images=1", f"output_dir={base / 'run'}"]))
    return base / "run" / "checkpoints" / "last.pt", root


def test_deconvnet_statistics_come_from_unpadded_training_windows_and_equal_a_direct_computation(
        voc_deconvnet_ckpt, tmp_path):
    """DeconvNet's protocol on a tiny model: training windows (224² random crops of the 250² resize, no
    512² padding), shuffled, batch 3 × 2 batches here (28 × 501 in full); the statistics equal the
    per-batch average computed by hand from the very windows."""
    from segdeconv.engine.checkpoint import load_checkpoint
    from segdeconv.tasks.recompute_bn import recompute_bn, windows_dataset
    from segdeconv.trained import load_trained

    ckpt, root = voc_deconvnet_ckpt
    args = [f"ckpt_path={ckpt}", f"dataset.root={root}", "batch_size=3", "batches=2", "precision=fp32",
            "num_workers=0"]
    res = recompute_bn(compose_cfg([*args, f"output={tmp_path / 'bn.pt'}"], "recompute_bn"))
    assert (res["windows"], res["batch_size"], res["batches"], res["images"]) == ("train", 3, 2, 6)
    cfg = compose_cfg([*args, "output=unused"], "recompute_bn")
    trained = load_trained(ckpt)
    batches = [x for x, _ in window_loader(windows_dataset(cfg, trained, "train"), 3, 2, 0, CPU)]
    assert [tuple(x.shape) for x in batches] == [(3, 3, 224, 224)] * 2  # VOC's val transform: 512² padded
    assert_stats_close(running_stats(load_trained(tmp_path / "bn.pt").model), hand_bn_statistics(trained.model, batches))
    assert load_checkpoint(tmp_path / "bn.pt")["bn_recomputed"]["windows"] == "train"


def test_segnet_statistics_default_to_shuffled_training_windows_at_the_training_batch(tiny_ckpt, tmp_path):
    """SegNet's protocol (compute_bn_statistics.py): the training data layer at the training batch (4 here),
    one shuffled pass (6 images: the last batch filled from the next pass), against a direct computation."""
    from segdeconv.config import split_dataset
    from segdeconv.tasks.recompute_bn import recompute_bn
    from segdeconv.trained import load_trained

    out = tmp_path / "bn.pt"
    res = recompute_bn(compose_cfg([f"ckpt_path={tiny_ckpt}", f"output={out}", "limit=6", "precision=fp32",
                                    "num_workers=0"], "recompute_bn"))
    assert (res["windows"], res["batch_size"], res["batches"]) == ("train", 4, 2)
    trained = load_trained(tiny_ckpt)
    data = split_dataset({**trained.dataset_cfg, "val": trained.dataset_cfg["train"]}, None, "train")
    perm = [torch.randperm(6, generator=torch.Generator().manual_seed(k)).tolist() for k in (0, 1)]
    images = [data[i][0] for i in perm[0] + perm[1][:2]]  # synthetic items: no random transform
    want = hand_bn_statistics(trained.model, [torch.stack(images[:4]), torch.stack(images[4:])])
    assert_stats_close(running_stats(load_trained(out).model), want)


@pytest.mark.parametrize("bad,match", [("windows=val", "windows=val is unknown"),
                                       ("batches=0", "batches=0 must be auto or an integer ≥ 1")])
def test_bad_windows_and_batches_are_one_line_errors(bad, match, tiny_ckpt, tmp_path):
    from segdeconv.errors import ConfigError
    from segdeconv.tasks.recompute_bn import recompute_bn

    with pytest.raises(ConfigError, match=match):
        recompute_bn(compose_cfg([f"ckpt_path={tiny_ckpt}", f"output={tmp_path / 'x.pt'}", bad], "recompute_bn"))
