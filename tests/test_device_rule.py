"""Issue #30: one device rule for every task, checked on the CPU with a faked 2-GPU torchrun node, and the
GPU-only paths a CPU can check (autocast dtype, the fp16 GradScaler in checkpoints, the compact switches
off the CPU, no hard-coded GPU 0, pinned memory / async copies only for CUDA)."""
from __future__ import annotations

import inspect
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import yaml
from conftest import CONF, REPO, TINY, compose_cfg
from PIL import Image

from segdeconv.engine import distributed, runtime
from segdeconv.engine.distributed import DIST_TIMEOUT_S, DistInfo, init_distributed
from segdeconv.engine.runtime import Runtime, resolve_device, resolve_precision, resolve_runtime
from segdeconv.errors import ConfigError

CUDA1 = torch.device("cuda", 1)


class Stop(Exception):
    """Ends a task right after it resolved its device (no model, no data)."""


@pytest.fixture
def node(monkeypatch):
    """Rank 1 of 2 under torchrun on a node with 2 (fake) GPUs; returns the call log."""
    log: list[str] = []
    for k, v in {"LOCAL_RANK": "1", "WORLD_SIZE": "2", "RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: log.append(f"set_device({torch.device(d)})"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: log.append("is_bf16_supported()") or True)
    monkeypatch.setattr(dist, "is_initialized", lambda: log.append("is_initialized()") or False)

    def init_process_group(backend=None, **kw):
        log.append(f"init_process_group({backend!r}, {', '.join(f'{k}={v}' for k, v in kw.items())})")

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    return log


def _nccl(timeout="0:05:00"):
    extra = ", device_id=cuda:1" if distributed._HAS_DEVICE_ID else ""
    return f"init_process_group('nccl', timeout={timeout}{extra})"


# ----------------------------------------------------------------------------- the rule
def test_rank_gpu_is_current_before_the_process_group(node):
    rt = resolve_runtime("auto", "auto", "auto")
    print("\ncall log:\n" + "\n".join(node + [f"Runtime.device={rt.device}"]))
    first_nccl = next(i for i, c in enumerate(node) if c.startswith("init_process_group"))
    assert "set_device(cuda:1)" in node[:first_nccl] and "set_device(cuda:0)" not in node
    assert node == ["set_device(cuda:1)", "is_bf16_supported()", "is_initialized()", "set_device(cuda:1)", _nccl()]
    assert rt.device == CUDA1 and rt.amp_dtype == torch.bfloat16 and rt.channels_last
    assert rt.dist == DistInfo(rank=1, world_size=2, local_rank=1)


def test_device_id_is_passed_where_torch_has_it(node, monkeypatch):
    real = torch.distributed.distributed_c10d.init_process_group  # dist.init_process_group is the recorder here
    assert distributed._HAS_DEVICE_ID == ("device_id" in inspect.signature(real).parameters)
    monkeypatch.setattr(distributed, "_HAS_DEVICE_ID", False)  # an older torch: no device_id parameter
    init_distributed(CUDA1)
    assert node[-2:] == ["set_device(cuda:1)", "init_process_group('nccl', timeout=0:05:00)"]


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_cuda_and_auto_take_the_local_rank_gpu(node, name):
    assert resolve_device(name) == CUDA1
    assert node == ["set_device(cuda:1)"]


@pytest.mark.parametrize("name", ["cuda:0", "cuda:1"])
def test_explicit_index_under_torchrun_is_refused(node, name):
    with pytest.raises(ConfigError, match=rf"^trainer.device={name} under torchrun .*use trainer.device=cuda"):
        resolve_runtime(name, "auto", "auto")
    assert node == []  # refused before any GPU or process group is touched


def test_explicit_index_alone_picks_that_gpu(node, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("cuda:1") == CUDA1 and resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"^device=cuda:2 needs GPU cuda:2 but 2 CUDA GPU\(s\) .*; use device=cuda$"):
        resolve_device("cuda:2", key="device")
    with pytest.raises(ConfigError, match="device='cuda:x' is unknown"):
        resolve_device("cuda:x", key="device")


def test_more_ranks_than_gpus_is_refused(node, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ConfigError, match=r"needs GPU cuda:2 but 2 CUDA GPU\(s\) .*--nproc_per_node=2\)$"):
        resolve_runtime("cuda", "auto", "auto")
    assert not any(c.startswith("init_process_group") for c in node)


def test_process_group_refuses_another_ranks_gpu(node):
    with pytest.raises(ConfigError, match="rank 1 would use cuda:0 but its GPU is cuda:1"):
        init_distributed(torch.device("cuda", 0))
    assert not any(c.startswith(("set_device", "init_process_group")) for c in node)


def test_cpu_ranks_join_gloo(node):
    assert resolve_runtime("cpu", "fp32", False).device == torch.device("cpu")
    assert node == ["is_initialized()", "init_process_group('gloo', timeout=0:05:00)"]


def test_one_timeout_default():
    yaml_default = yaml.safe_load((CONF / "trainer" / "default.yaml").read_text())["dist_timeout_s"]
    assert DIST_TIMEOUT_S == yaml_default == 300
    assert inspect.signature(init_distributed).parameters["timeout_s"].default == DIST_TIMEOUT_S
    assert inspect.signature(resolve_runtime).parameters["dist_timeout_s"].default is None  # → DIST_TIMEOUT_S


def test_timeout_from_the_config(node):
    resolve_runtime("cuda", "auto", "auto", 42)
    assert node[-1] == _nccl("0:00:42")


# ----------------------------------------------------------------------------- every task uses the rule
@pytest.fixture
def spy(node, monkeypatch):
    """``resolve_device`` wrapped in a recorder, in runtime and in every task module that imports it."""
    from segdeconv.tasks import evaluate, predict, recompute_bn, visualize

    calls: list[tuple] = []
    real = runtime.resolve_device

    def recorder(name="auto", local_rank=None, key="trainer.device"):
        dev = real(name, local_rank, key)
        calls.append((str(name), local_rank, key, dev))
        node.append(f"resolve_device({name!r}) -> {dev}")
        return dev

    for mod in (runtime, evaluate, predict, recompute_bn, visualize):
        monkeypatch.setattr(mod, "resolve_device", recorder)
    return calls


def _stop_at(monkeypatch, module, name, node):
    """Replace ``module.name(path, device, …)`` by a recorder that ends the task."""
    def stop(path, device="cpu", *args, **kwargs):
        node.append(f"{name}(device={device})")
        raise Stop

    monkeypatch.setattr(module, name, stop)


def _raise_stop(*args, **kwargs):
    raise Stop


def _task(which, tmp_path, monkeypatch, node):
    """(function, config) for ``which``, stopped right after its device is resolved."""
    from segdeconv.tasks import evaluate, predict, recompute_bn, train, visualize

    ckpt = f"ckpt_path={tmp_path / 'missing.pt'}"
    if which == "train":
        monkeypatch.setattr(train, "seed_everything", _raise_stop)
        return train.build_trainer, compose_cfg(TINY + [f"output_dir={tmp_path / 'run'}"])
    if which == "predict":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
        holder = SimpleNamespace(from_checkpoint=None)
        _stop_at(monkeypatch, holder, "from_checkpoint", node)
        monkeypatch.setattr(predict, "Predictor", holder)
        over = [ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'p'}"]
        return predict.predict_files, compose_cfg(over, "predict")
    module = {"evaluate": evaluate, "recompute_bn": recompute_bn, "visualize": visualize}[which]
    _stop_at(monkeypatch, module, "load_trained", node)
    over = {"evaluate": [f"output_dir={tmp_path / 'e'}"], "recompute_bn": [f"output={tmp_path / 'o.pt'}"],
            "visualize": [f"output_dir={tmp_path / 'v'}"]}[which]
    return getattr(module, {"evaluate": "evaluate_checkpoint"}.get(which, which)), compose_cfg([ckpt, *over], which)


@pytest.mark.parametrize("which", ["train", "evaluate", "recompute_bn", "predict", "visualize"])
def test_every_task_resolves_its_device_through_the_rule(which, spy, node, tmp_path, monkeypatch):
    fn, cfg = _task(which, tmp_path, monkeypatch, node)
    with pytest.raises(Stop):
        fn(cfg)
    print(f"\n{which}:\n" + "\n".join(node))
    assert len(spy) == 1, spy
    name, local_rank, key, dev = spy[0]
    assert name == "auto" and local_rank in (None, 1) and dev == CUDA1  # None: LOCAL_RANK from the environment
    assert key == ("trainer.device" if which == "train" else "device")
    assert node[:2] == ["set_device(cuda:1)", "resolve_device('auto') -> cuda:1"]  # current at once
    assert "set_device(cuda:0)" not in node
    if which in ("train", "evaluate"):  # both join the process group, after making cuda:1 current
        nccl = node.index(_nccl())
        assert "set_device(cuda:1)" in node[:nccl]
    else:
        assert node[-1].endswith("(device=cuda:1)")  # the model is built on this rank's GPU


def test_task_device_errors_name_the_tasks_key(tmp_path, monkeypatch):
    from segdeconv.tasks.recompute_bn import recompute_bn

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_cfg([f"ckpt_path={tmp_path / 'x.pt'}", f"output={tmp_path / 'o.pt'}", "device=cuda"], "recompute_bn")
    with pytest.raises(ConfigError, match=r"^device=cuda but no CUDA GPU is visible; use device=cpu \(or auto\)$"):
        recompute_bn(cfg)


# ----------------------------------------------------------------------------- precision and the scaler
@pytest.mark.parametrize("bf16, want", [(True, torch.bfloat16), (False, torch.float16)])
def test_gpu_autocast_dtype_follows_bf16_support(monkeypatch, bf16, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    gpu = torch.device("cuda", 0)
    assert resolve_precision("auto", gpu) == want
    assert resolve_precision("fp16", gpu) == torch.float16 and resolve_precision("fp32", gpu) is None


def test_fp16_scaler_state_survives_checkpoint_and_resume(tmp_path, monkeypatch):
    """The trainer's GradScaler (fp16 runs) goes into last.pt and comes back on resume, exactly."""
    from segdeconv.engine.checkpoint import load_checkpoint
    from segdeconv.tasks import train

    fp16_cpu = Runtime(torch.device("cpu"), torch.float16, False, DistInfo())  # GradScaler("cpu"): enabled
    monkeypatch.setattr(train, "resolve_runtime", lambda *a: fp16_cpu)
    run = tmp_path / "run"
    trainer = train.build_trainer(compose_cfg(TINY + [f"output_dir={run}"]))
    scaler = trainer.scaler
    assert scaler is not None and scaler.is_enabled() and not trainer.train_loader.pin_memory
    scaler.scale(torch.ones(()))  # creates the scale tensor, then a state no fresh scaler has
    scaler.update(new_scale=512.0)
    scaler._growth_tracker.fill_(7)
    saved = scaler.state_dict()
    assert saved["scale"] == 512.0 and saved["_growth_tracker"] == 7
    trainer._save()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["scaler"] == saved
    resumed = train.build_trainer(compose_cfg(TINY + [f"output_dir={run}", "trainer.resume=auto"]))
    assert resumed.scaler.state_dict() != saved
    assert resumed.resume() == run / "checkpoints" / "last.pt"
    assert resumed.scaler.state_dict() == saved


# ----------------------------------------------------------------------------- compact switches off the CPU
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_switches_on_meta_take_the_plain_path(monkeypatch, fmt, ceil_mode, dtype):
    from segdeconv.models.memory import switches

    def cpu_only(*a, **k):
        raise AssertionError("a CPU block kernel ran on a meta tensor")

    for name in ("pool_cpu", "place_cpu", "gather_cpu"):
        monkeypatch.setattr(switches, name, cpu_only)
    x = torch.empty(2, 3, 7, 9, device="meta", dtype=dtype).contiguous(memory_format=fmt)
    h, w = (4, 5) if ceil_mode else (3, 4)
    for grad in (False, True):
        xi = x.clone().requires_grad_(grad)
        y, code = switches.max_pool2x2(xi, ceil_mode)
        assert (y.shape, y.dtype, y.device.type) == ((2, 3, h, w), dtype, "meta")
        assert (code.shape, code.dtype, code.device.type) == ((2, 3, h, w), torch.uint8, "meta")
        out = switches.max_unpool2x2(y, code, x.shape)
        assert (out.shape, out.dtype, out.device.type) == (x.shape, dtype, "meta")
        assert out.is_contiguous(memory_format=fmt)
        if grad:
            out.sum().backward()
            assert (xi.grad.shape, xi.grad.dtype, xi.grad.device.type) == (x.shape, dtype, "meta")


@pytest.mark.parametrize("lean, grad", [(False, True), (True, False), (True, True)])
def test_compact_switch_model_runs_on_meta(monkeypatch, lean, grad):
    from segdeconv.models import segnet_basic
    from segdeconv.models.memory import MemoryPolicy, apply_policy, switches

    monkeypatch.setattr(switches, "pool_cpu", lambda *a: pytest.fail("CPU kernel on meta"))
    monkeypatch.setattr(switches, "place_cpu", lambda *a: pytest.fail("CPU kernel on meta"))
    model = apply_policy(segnet_basic(5, width=0.125, compact_switches=True), MemoryPolicy(lean=lean)).to("meta")
    with torch.set_grad_enabled(grad):
        assert model(torch.empty(2, 3, 36, 44, device="meta")).shape == (2, 5, 36, 44)


# ----------------------------------------------------------------------------- no hard-coded GPU 0
FORBIDDEN = re.compile(r"\.cuda\(|cuda:0|non_blocking=True")


def test_no_hard_coded_gpu_or_unconditional_async_copy():
    files = [p for d in ("segdeconv", "benchmarks", "tools", "conf") for p in (REPO / d).rglob("*")
             if p.suffix in (".py", ".yaml", ".sh")] + sorted(REPO.glob("*.py"))
    assert len(files) > 50
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert not hits, "use resolve_device's device, not .cuda()/cuda:0/non_blocking=True:\n" + "\n".join(hits)


# ----------------------------------------------------------------------------- pinned memory / async copies
def test_loaders_pin_memory_only_for_cuda():
    from segdeconv.engine.bn_stats import bn_loader
    from segdeconv.engine.eval_loop import eval_loader

    ds = list(range(4))
    for device, pinned in ((torch.device("cpu"), False), (torch.device("cuda", 1), True)):
        assert eval_loader(ds, 2, 0, device).pin_memory is pinned
        assert bn_loader(ds, 2, 0, device).pin_memory is pinned


def test_async_copies_only_to_cuda(monkeypatch):
    from segdeconv.engine.step import to_device

    seen = []

    def fake_to(self, device, *a, non_blocking=False, **k):
        seen.append((str(device), non_blocking))
        return self

    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    x = torch.zeros(1, 3, 4, 4)
    to_device(x, torch.device("cpu"))
    to_device(x, torch.device("cuda", 1))
    assert seen == [("cpu", False), ("cuda:1", True)]
