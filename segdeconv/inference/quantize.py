"""INT8 post-training quantization for CPU inference: PT2E + X86 Inductor quantizer + ``torch.compile``.

Static PTQ (Jacob et al. 2018, §2–3: uint8 activations with one scale/zero-point per tensor, int8
weights per output channel, int32 accumulation) through PyTorch's own PT2E flow, which lives in torchao
(``torchao.quantization.pt2e``; torch 2.14 no longer has ``torch.ao.quantization.quantize_pt2e``): the eval-mode model is exported with a dynamic batch
dimension, the X86 Inductor quantizer inserts observers (conv + BN folded), a few images calibrate
them, ``convert_pt2e`` turns them into quantize/dequantize pairs, and Inductor (with freezing) lowers
them to oneDNN int8 convolutions (VNNI where the CPU has it; AVX2 ``vpmaddubsw`` otherwise, with 7-bit
activations so that its int16 sums cannot saturate).
Max-unpooling, the 1-byte switches and what the quantizer has no pattern for (transposed convolutions)
stay in float between the quantized convolutions: bf16 where the CPU has it natively ("int8-mixed-bf16").

The compiled program is specialised to one input size (the pooling layout is unrolled at export):
:class:`Int8Model` refuses any other H×W with one clear message. A larger batch size than any seen
compiles once (seconds; Inductor's on-disk cache makes later processes faster), a smaller one is
zero-padded. Speed and the mIoU change of the shipped model: benchmarks/README.md "INT8".
"""
from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
from collections.abc import Iterable
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from segdeconv.engine.runtime import aten_below_avx512, cpu_has_native_bf16, cpu_has_vnni
from segdeconv.errors import ConfigError, UserError

log = logging.getLogger("segdeconv")
INSTALL_HINT = 'pip install "segdeconv[int8]" (torchao)'


def check_quantize(value: Any, key: str = "quantize") -> Any:
    """``None`` or ``"int8"``; anything else is a ConfigError naming ``key``."""
    if value in (None, "none", "null", False):
        return None
    if value != "int8":
        raise ConfigError(f"{key}={value} is not a choice; use {key}=int8 (PT2E static int8, CPU) or {key}=null")
    return value


def check_int8_strategy(tta: Any = None, window: Any = None, mc_samples: Any = None, native: bool = False) -> None:
    """The inference strategies an int8 model cannot run, refused before any work: those that change the
    input size (sliding windows, multi-scale TTA, ``native`` image sizes) and Monte-Carlo dropout (the
    program has no dropout)."""
    from segdeconv.inference.strategies import TTAConfig

    if native:
        raise UserError("quantize=int8 needs a fixed input size (input_size=auto, train or [H, W]): the int8 "
                        "program is compiled for one size")
    if window is not None or TTAConfig.from_any(tta).scales != (1.0,):
        raise UserError("quantize=int8 runs at one input size: drop the sliding window / multi-scale "
                        "tta.scales, or drop quantize=int8")
    if mc_samples is not None:
        raise UserError("quantize=int8 and mc_samples cannot be combined: Monte-Carlo dropout needs the float "
                        "model's dropout layers; drop one of them")


def require_int8(device: torch.device) -> None:
    """The three things int8 inference needs, each with its fix: a CPU, torchao, a C++ compiler."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        raise UserError(f"quantize=int8 uses the X86 quantizer and oneDNN's x86 int8 kernels; this CPU is "
                        f"{platform.machine()}: drop quantize=int8")
    if device.type != "cpu":
        raise ConfigError(f"quantize=int8 runs on the CPU (the X86 quantizer + oneDNN int8); this run uses "
                          f"{device.type}: add device=cpu, or drop quantize=int8 (on a GPU bf16/fp16 is the fast path)")
    if importlib.util.find_spec("torchao") is None:
        raise UserError(f"quantize=int8 needs torchao (PyTorch's PT2E quantization): {INSTALL_HINT}")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        raise UserError("quantize=int8 compiles the model with Inductor, which needs a C++ compiler: install one "
                        "(Debian/Ubuntu: apt install g++; conda: conda install gxx) or set CXX=/path/to/c++")


class Int8Model(nn.Module):
    """A quantized, compiled model with the original's interface: ``(B, 3, H, W)`` → fp32 logits.

    ``input_hw`` is the only spatial size it runs at; ``parity`` compares it with the fp32 model on the
    calibration images (argmax agreement, max |Δlogit| / max |logit|)."""

    compiled: Callable[..., Tensor]  # torch.compile(program), set in __init__ outside the submodules

    def __init__(self, program: nn.Module, input_hw: tuple[int, int], num_classes: int,
                 parity: dict[str, float], mixed_bf16: bool = False) -> None:
        super().__init__()
        self.program = program
        object.__setattr__(self, "compiled", torch.compile(program))  # not a second registered submodule
        self.training = False
        self.input_hw, self.num_classes, self.parity = input_hw, num_classes, parity
        self.mixed_bf16 = mixed_bf16  # the ops left in float (unpooling, transposed convs) run in bf16
        # freezing: weights become constants, so Inductor prepacks them for oneDNN's int8 convolution
        # (without it the int8 graph measured 3.5× slower). On AVX2, Inductor's vectorised code for this
        # graph is wrong (torch 2.14: argmax agreement with the float model 5 %, mIoU 0.3 instead of
        # 73.7); its scalar code is right and costs ~1 % here, as the convolutions are oneDNN's.
        self._inductor = {"freezing": True, **({"cpp.simdlen": 1} if aten_below_avx512() else {})}
        self._batch_sizes: set[int] = set()  # compiled so far; a smaller batch is zero-padded to one of them

    @property
    def precision(self) -> str:
        return "int8+bf16" if self.mixed_bf16 else "int8"

    def train(self, mode: bool = True) -> "Int8Model":
        """Always an inference program: ``eval()`` is a no-op, ``train()`` refused (nothing to train)."""
        if mode:
            raise UserError("an int8 model is for inference only; train the float checkpoint instead")
        self.training = False
        return self

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.input_hw:
            h, w = self.input_hw
            raise UserError(f"the int8 model was calibrated and compiled for {h}×{w} inputs, got "
                            f"{x.shape[-2]}×{x.shape[-1]}: int8 needs every image at one size (predict.py: "
                            f"input_size=auto or [{h}, {w}]; evaluate.py: a dataset resized to dataset.image_size), "
                            f"or drop quantize=int8")
        from torch._inductor import config as inductor_config

        n = x.shape[0]
        # a compiled batch size up to 2n serves n (zero-padded): cheaper than a recompile; beyond, compile n
        b = min((s for s in self._batch_sizes if n <= s <= 2 * n), default=n)
        self._batch_sizes.add(b)
        x = torch.cat([x, x.new_zeros(b - n, *x.shape[1:])]) if b > n else x
        with inductor_config.patch(self._inductor), torch.no_grad(), \
                torch.autocast("cpu", torch.bfloat16, enabled=self.mixed_bf16):
            return self.compiled(x.contiguous())[:n].float()


def quantize_int8(model: nn.Module, calibration: Iterable[Tensor], max_batches: int = 8,
                  mixed_bf16: Optional[bool] = None) -> Int8Model:
    """Static int8 PTQ of ``model`` (eval mode, CPU) calibrated on ``calibration`` batches ``(B, 3, H, W)``
    (normalized, all the same H×W; the first ``max_batches`` are used). ``mixed_bf16`` (default: where
    the CPU has native bf16) runs the operations the quantizer leaves in float — unpooling, the
    transposed convolutions it does not quantize (DeconvNet) — in bf16: "int8-mixed-bf16"."""
    require_int8(next(model.parameters()).device)
    from torch.export import Dim
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    batches = [b.float().contiguous() for b, _ in zip(calibration, range(max_batches))]
    if not batches:
        raise UserError("quantize=int8 needs calibration images (a few representative inputs) and none were given: "
                        "predict.py calibration=<folder> or calibration_images=N (> 0); Predictor: "
                        "calibration=[images]")
    hw = (int(batches[0].shape[-2]), int(batches[0].shape[-1]))
    if any(tuple(b.shape[-2:]) != hw for b in batches):
        raise UserError(f"int8 calibration images must share one size (first {hw[0]}×{hw[1]}): calibrate on "
                        f"images resized to the size the model runs at (predict.py does; for evaluate.py "
                        f"calibration_split must resize to dataset.image_size)")
    model = model.eval()
    example = batches[0][:2] if batches[0].shape[0] > 1 else batches[0].repeat(2, 1, 1, 1)
    with torch.no_grad():
        graph = torch.export.export(model, (example,), dynamic_shapes=({0: Dim("batch", min=1)},)).module()
    # without VNNI, 7-bit activations keep oneDNN's int16 pair sums from saturating: with full 8-bit ones
    # the shipped CamVid model scored 0.2 mIoU instead of 73.7 on an AVX2-capped CPU
    config = xiq.get_default_x86_inductor_quantization_config(reduce_range=not cpu_has_vnni())
    quantizer = xiq.X86InductorQuantizer().set_global(config)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for b in batches:
            prepared(b)
    mixed = cpu_has_native_bf16() if mixed_bf16 is None else bool(mixed_bf16)
    qmodel = Int8Model(convert_pt2e(prepared), hw, int(getattr(model, "num_classes", 0)), {}, mixed)
    qmodel.parity = _parity(model, qmodel, batches[0])
    log.info("int8%s: calibrated on %d images of %d×%d; %s", " (float ops in bf16)" if mixed else "",
             sum(len(b) for b in batches), *hw, describe_parity(qmodel.parity))
    return qmodel


def _parity(reference: nn.Module, qmodel: Int8Model, x: Tensor) -> dict[str, float]:
    with torch.no_grad():
        a, b = reference(x).float(), qmodel(x)
    agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
    rel = ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
    return {"argmax_agreement": round(agree, 5), "max_rel_logit_error": round(rel, 5)}


def describe_parity(parity: dict[str, float]) -> str:
    return (f"int8 vs fp32 on a calibration batch: argmax agreement {100 * parity['argmax_agreement']:.2f} %, "
            f"max |Δlogit| / max |logit| {parity['max_rel_logit_error']:.3f}")
