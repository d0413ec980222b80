"""Every config composes, and every model×dataset pair instantiates with matching class counts."""

import os

import pytest
import torch
from conftest import CONF, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segdeconv.config import model_from_config

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
# what a user must pass for datasets with mandatory (???) keys
REQUIRED = {"folder": ["dataset.num_classes=3", "dataset.class_names=[a,b,c]"]}
GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in ("optimizer", "scheduler", "trainer")}


def test_expected_options_exist():
    assert {"deconvnet", "segnet", "segnet_basic"} <= set(MODELS)
    assert "synthetic" in DATASETS
    assert {"sgd", "adamw"} <= set(GROUPS["optimizer"])
    assert {"poly", "step", "cosine"} <= set(GROUPS["scheduler"])


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", MODELS)
def test_model_dataset_combination_composes(model, dataset):
    cfg = compose_cfg([f"model={model}", f"dataset={dataset}", "output_dir=/tmp/x", "dataset.root=/data"]
                      + REQUIRED.get(dataset, []))
    assert cfg.dataset.train.root == "/data" or dataset == "synthetic"
    assert cfg.model.num_classes == cfg.dataset.num_classes
    for key in ("batch_size", "num_workers", "train", "val"):
        assert key in cfg.dataset, key
    assert cfg.dataset.train._target_ and cfg.dataset.val._target_


@pytest.mark.parametrize("model", MODELS)
def test_model_instantiates_and_follows_dataset_classes(model):
    cfg = compose_cfg([f"model={model}", "dataset=synthetic", "output_dir=/tmp/x"])
    if model == "deconvnet":  # keep it small: the 251.8M-param count is tested in test_models
        cfg.model.fc_channels = 64
        cfg.model.encoder.width = 0.125
    m = model_from_config(cfg.model)
    assert isinstance(m, torch.nn.Module) and m.num_classes == cfg.dataset.num_classes


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_option_of_each_group_composes(group):
    for option in GROUPS[group]:
        cfg = compose_cfg([f"{group}={option}", "output_dir=/tmp/x"])
        assert OmegaConf.to_container(cfg[group], resolve=True)


def test_optimizer_and_scheduler_are_partials():
    import torch

    cfg = compose_cfg(["output_dir=/tmp/x"])
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = instantiate(cfg.optimizer)(p)
    for option in GROUPS["scheduler"]:
        sched = instantiate(compose_cfg([f"scheduler={option}", "output_dir=/tmp/x"]).scheduler)(opt, total_steps=10)
        assert sched.get_last_lr()[0] > 0


def test_channels_last_auto_follows_the_hardware(monkeypatch):
    import torch

    from segdeconv.engine import runtime
    from segdeconv.errors import ConfigError

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.resolve_channels_last("auto", cpu, torch.bfloat16) is True
    assert runtime.resolve_channels_last("auto", cpu, None) is False  # fp32 CPU: NCHW
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert runtime.resolve_channels_last("auto", cpu, torch.bfloat16) is False  # emulated bf16
    assert runtime.resolve_channels_last("auto", cpu, torch.bfloat16, inference=True) is False
    assert runtime.resolve_channels_last("auto", cpu, None, inference=True) is True  # fp32 CPU inference: NHWC
    assert runtime.resolve_channels_last(False, cpu, None, inference=True) is False
    assert runtime.resolve_channels_last("auto", torch.device("cuda"), torch.float16) is True
    assert runtime.resolve_channels_last(True, cpu, None) is True
    with pytest.raises(ConfigError, match="trainer.channels_last"):
        runtime.resolve_channels_last("yes", cpu, None)


@pytest.mark.parametrize("env", [{"ATEN_CPU_CAPABILITY": "avx2"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}])
def test_an_instruction_set_capped_below_bf16_is_not_native_bf16(env):
    """Capping the kernels' ISA (as users and our AVX2 emulation do) makes bf16 emulated: auto must not pick it."""
    import subprocess
    import sys

    code = ("from segdeconv.engine.runtime import cpu_has_native_bf16, resolve_precision; import torch; "
            "print(cpu_has_native_bf16(), resolve_precision('auto', torch.device('cpu')))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "None"]
