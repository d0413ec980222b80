"""``export_checkpoint(cfg)``: a checkpoint as ONNX or TorchScript, verified against PyTorch.

Both formats take a normalized ``image`` (B, 3, H, W) float32 (ImageNet mean/std, as in
:func:`segdeconv.data.base.to_tensors`) with dynamic batch, height and width, and return
``logits`` (B, C, H, W). Class names, palette, training size and normalization are stored with the
model (ONNX ``metadata_props`` / TorchScript extra file ``segdeconv.json``).

Unpooling: torch's TorchScript-based ONNX exporter has no symbolic for ``aten::max_unpool2d``
(UnsupportedOperatorError at every opset) and the torch.export-based one needs ``onnxscript``. The
model is therefore exported with *compact* switches (bit-identical to int64 indices by
construction, see :mod:`segdeconv.models.switches`): pooling and unpooling become MaxPool (with
indices), integer arithmetic, Equal, Where, Reshape, Pad and Slice — exact operations (opset 17).
Parity is then limited by the convolutions' float rounding (~1e-6 of the logits' size) and, on
real images, by max-pool windows whose inputs tie to the last bit: see :mod:`segdeconv.export_parity`.
"""
from __future__ import annotations

import copy
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from segdeconv.checkpoint import load_checkpoint
from segdeconv.data.base import IMAGENET_MEAN, IMAGENET_STD
from segdeconv.errors import ConfigError, UserError
from segdeconv.export_parity import parity_inputs, problems, report_lines, verify
from segdeconv.models.layers import Pool, Switches
from segdeconv.wiring import model_from_checkpoint

log = logging.getLogger("segdeconv")
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
TOLERANCE = 1e-4


class ExportMismatch(UserError):
    """The exported model's outputs differ from PyTorch's beyond the tolerance."""


class _TracedPool(Pool):
    """:class:`Pool` whose recorded pre-pool size stays symbolic under tracing, so the exported
    unpooling crops to the runtime size (dynamic height/width) instead of the example's."""

    def forward(self, x: Tensor) -> tuple[Tensor, Switches]:
        y, switches = super().forward(x)
        return y, Switches(switches.indices, (x.shape[-2], x.shape[-1]))


def exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode, fp32 on CPU, with compact (exportable) pooling switches."""
    m = copy.deepcopy(model).float().cpu().eval()
    for mod in m.modules():
        if isinstance(mod, Pool):
            mod.compact = True
            mod.__class__ = _TracedPool
    return m


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Hide the tracer's notes about input-size checks (they are checks, not graph), the
    legacy-exporter and torch.jit deprecation notices, and the strided-slice folding note."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # strided slices
        yield


def export_onnx(model: nn.Module, path: Path, example: Tensor, opset: int = 17,
                metadata: Optional[dict] = None) -> Path:
    """ONNX with dynamic batch/height/width; ``metadata`` goes into ``metadata_props`` (JSON values)."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("format=onnx needs the onnx package: pip install 'segdeconv[export]'") from None
    axes = {0: "batch", 2: "height", 3: "width"}
    with _quiet_tracing(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, do_constant_folding=True)
    proto = onnx.load(str(path))
    for k, v in (metadata or {}).items():
        proto.metadata_props.add(key=k, value=json.dumps(v))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_torchscript(model: nn.Module, path: Path, example: Tensor, metadata: Optional[dict] = None) -> Path:
    """A traced TorchScript module (shapes stay symbolic: any batch/height/width)."""
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"segdeconv.json": json.dumps(metadata or {})})
    return path


def runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the exported file: (B,3,H,W) float32 → (B,C,H,W) logits."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"image": x})[0]
    with _quiet_tracing():
        ts = torch.jit.load(str(path), map_location="cpu")
    return lambda x: ts(torch.from_numpy(x)).detach().numpy()


def export_metadata(ckpt: dict, size: Sequence[int]) -> dict:
    """What a user of the exported file needs: class names, palette, training size, normalization."""
    return {"class_names": ckpt.get("class_names"), "palette": ckpt.get("palette"), "image_size": list(size),
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "input": "image (B,3,H,W) float32, RGB/255 normalized with mean/std", "output": "logits (B,C,H,W)"}


def export_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` to ``cfg.format``; verify against PyTorch and print the parity figures."""
    fmt, tol = str(cfg.format), float(cfg.tolerance)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is unknown; use onnx or torchscript")
    ckpt = load_checkpoint(cfg.ckpt_path)
    model = exportable(model_from_checkpoint(ckpt, torch.device("cpu"), cfg.ckpt_path))
    size = list(cfg.get("input_size") or ckpt["config"].get("dataset", {}).get("image_size") or [360, 480])
    dst = Path(cfg.output) if cfg.get("output") else Path(cfg.ckpt_path).with_suffix(FORMATS[fmt])
    dst.parent.mkdir(parents=True, exist_ok=True)
    cases = parity_inputs(size, cfg.get("verify_image"))  # a bad verify_image fails before exporting
    if fmt == "onnx":
        export_onnx(model, dst, torch.randn(1, 3, *size), int(cfg.opset), export_metadata(ckpt, size))
    else:
        export_torchscript(model, dst, torch.randn(1, 3, *size), export_metadata(ckpt, size))
    print(f"wrote {dst} ({dst.stat().st_size / 2**20:.1f} MiB)")
    if not cfg.verify:
        return {"path": str(dst), "parity": []}
    try:
        results = verify(model, runner(fmt, dst), cases, tol, dst if fmt == "onnx" else None)
    except Exception as e:  # the runtime rejected the file: that is an export failure, not a crash
        raise ExportMismatch(f"{dst} fails to run: {str(e).splitlines()[0][:300]}") from None
    for line in report_lines(results, tol):
        print("  " + line)
    bad = problems(results, tol)
    if bad:
        raise ExportMismatch(f"{dst} does not match PyTorch: {bad[0]}")
    return {"path": str(dst), "parity": [r.as_dict() for r in results]}
