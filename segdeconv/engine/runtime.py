"""Hardware detection: which device, which autocast precision. Detect, never assume.

bf16 autocast is only chosen where the hardware computes bf16 natively (CPU: avx512_bf16/AMX;
GPU: Ampere+). On an AVX2-only CPU bf16 is emulated and ~50× slower, so ``auto`` means fp32 there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from segdeconv.engine.distributed import DIST_TIMEOUT_S, DistInfo, env_info, init_distributed
from segdeconv.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def aten_below_avx512() -> bool:
    """True when ATen's vector kernels (and Inductor's CPU code) use less than AVX-512: an old CPU, or
    ``ATEN_CPU_CAPABILITY=avx2``/``default``."""
    return torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2")


def _isa_capped(needs: tuple[str, ...]) -> bool:
    """True when ``ATEN_CPU_CAPABILITY`` (or an old CPU) or ``ONEDNN_MAX_CPU_ISA`` limits the kernels to an
    instruction set below the extensions named in ``needs`` (oneDNN ISA names)."""
    if aten_below_avx512():
        return True
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return isa != "ALL" and not any(k in isa for k in needs)


def _probe(*names: str) -> bool:
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, n, None) is not None and getattr(cpu, n)() for n in names)


def cpu_has_native_bf16() -> bool:
    """True where the CPU executes bf16 matmuls/convs in hardware (avx512_bf16 or AMX) and the kernels may
    use it: ``ATEN_CPU_CAPABILITY=avx2`` or a ``ONEDNN_MAX_CPU_ISA`` without bf16 caps them to an older
    instruction set, where bf16 is emulated (~50× slower), so then it is False."""
    return not _isa_capped(("BF16", "AMX", "FP16", "AVX10")) and _probe("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_has_vnni() -> bool:
    """True where oneDNN's int8 convolutions may use VNNI (or AMX) dot products. Without them (AVX2 and
    AVX-512 before VNNI) u8×s8 pairs are summed in int16 (``vpmaddubsw``), which saturates for full-range
    uint8 activations."""
    return not _isa_capped(("VNNI", "BF16", "AMX", "FP16", "AVX10")) and _probe("_is_vnni_supported", "_is_amx_tile_supported")


def describe_cpu() -> str:
    """One line for benchmark tables and logs, e.g. ``AVX512, native bf16, 2 threads``."""
    cap = torch.backends.cpu.get_cpu_capability()
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{cap}, {bf16}, {torch.get_num_threads()} threads"


def resolve_device(name: str = "auto", local_rank: Optional[int] = None, key: str = "trainer.device") -> torch.device:
    """The device rule of every task: ``cpu``; ``cuda`` → this process's GPU, ``cuda:LOCAL_RANK`` under
    torchrun (``local_rank`` defaults to torchrun's ``LOCAL_RANK``, 0 alone); ``auto`` → ``cuda`` when a GPU
    is visible, else cpu; ``cuda:N`` → that GPU, single process only. A GPU is made the current device
    here, before any process group starts. ``key`` names the config key in the error messages."""
    name = str(name)
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"{key}={name!r} is unknown; use auto, cpu or cuda")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but no CUDA GPU is visible; use {key}=cpu (or auto)")
    dev = _rank_gpu(name, local_rank, key)
    torch.cuda.set_device(dev)
    return dev


def _rank_gpu(name: str, local_rank: Optional[int], key: str) -> torch.device:
    """``cuda:LOCAL_RANK`` (``cuda``/``auto``) or the explicit ``cuda:N``, checked against the visible GPUs."""
    info = env_info()
    rank = info.local_rank if local_rank is None else local_rank
    if name.startswith("cuda:"):
        if info.enabled:
            raise ConfigError(f"{key}={name} under torchrun ({info.world_size} processes): each rank takes its own "
                              f"GPU, cuda:LOCAL_RANK; use {key}=cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"{key}={name!r} is unknown; use auto, cpu, cuda or cuda:N") from None
    else:
        dev = torch.device("cuda", rank)
    n = torch.cuda.device_count()
    if dev.index >= n:  # under torchrun: more processes on this node than GPUs (NCCL refuses shared GPUs)
        fix = f"start one process per GPU (torchrun --nproc_per_node={n})" if info.enabled else f"use {key}=cuda"
        raise ConfigError(f"{key}={name} needs GPU {dev} but {n} CUDA GPU(s) are visible; {fix}")
    return dev


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device`` (None = fp32, no autocast)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is unknown; use one of {PRECISIONS}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("trainer.precision=fp16 is for GPUs; on CPU use bf16 (where native) or fp32")
    return _DTYPES[precision]


def resolve_channels_last(value: object, device: torch.device, amp_dtype: Optional[torch.dtype],
                          inference: bool = False) -> bool:
    """``channels_last``: ``auto`` → NHWC where it pays: CUDA, a CPU running bf16 natively, and
    fp32 inference on CPUs (``inference=True``).

    The rule follows the measurements in benchmarks/README.md: NHWC is faster for bf16 training and
    inference on native-bf16 CPUs and for fp32 inference on AVX2 CPUs, but slower for fp32 training
    there (backward convolutions) — so fp32 CPU training stays NCHW.
    """
    if isinstance(value, bool):
        return value
    if value != "auto":
        raise ConfigError(f"trainer.channels_last={value!r} is unknown; use auto, true or false")
    native_bf16 = amp_dtype == torch.bfloat16 and cpu_has_native_bf16()
    return device.type == "cuda" or native_bf16 or (inference and amp_dtype is None)


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes: resolved once from ``trainer.device/precision/channels_last``."""

    device: torch.device
    amp_dtype: Optional[torch.dtype]  # None = fp32 (no autocast)
    channels_last: bool
    dist: DistInfo

    def describe(self) -> str:
        """``device cpu, precision fp32, NCHW, cpu AVX2, no native bf16, 2 threads``."""
        return (f"device {self.device}, precision {self.amp_dtype or 'fp32'}, "
                f"{'channels_last' if self.channels_last else 'NCHW'}, cpu {describe_cpu()}")


def resolve_runtime(device: str, precision: str, channels_last: object,
                    dist_timeout_s: Optional[float] = None) -> Runtime:
    """Pick the device (this rank's GPU under torchrun, made current), check the precision, then join
    the process group (``dist_timeout_s``: None = :data:`~segdeconv.engine.distributed.DIST_TIMEOUT_S`)."""
    dev = resolve_device(device)
    amp = resolve_precision(precision, dev)  # config errors before the rendezvous, on every rank alike
    dist = init_distributed(dev, DIST_TIMEOUT_S if dist_timeout_s is None else float(dist_timeout_s))
    return Runtime(dev, amp, resolve_channels_last(channels_last, dev, amp), dist)
