"""A trained model as ONNX or TorchScript (the export task: :mod:`segdeconv.tasks.export`).

Both formats take a normalized ``image`` (B, 3, H, W) float32 (ImageNet mean/std, as in
:func:`segdeconv.data.image.to_tensors`) with dynamic batch, height and width, and return
``logits`` (B, C, H, W). Class names, palette, training size and normalization are stored with the
model (ONNX ``metadata_props`` / TorchScript extra file ``segdeconv.json``).

Unpooling: torch's TorchScript-based ONNX exporter has no symbolic for ``aten::max_unpool2d``
(UnsupportedOperatorError at every opset) and the torch.export-based one needs ``onnxscript``. The
model is therefore exported with *compact* switches (bit-identical to int64 indices by
construction, see :mod:`segdeconv.models.memory.switches`): pooling and unpooling become MaxPool (with
indices), integer arithmetic, Equal, Where, Reshape, Pad and Slice — exact operations (opset 17).
Parity is then limited by the convolutions' float rounding (~1e-6 of the logits' size) and, on
real images, by max-pool windows whose inputs tie to the last bit: see :mod:`segdeconv.inference.parity`.
"""
from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from segdeconv.data.image import IMAGENET_MEAN, IMAGENET_STD
from segdeconv.engine.writer import write_bytes
from segdeconv.errors import ConfigError, UserError
from segdeconv.models.layers import Pool, Switches

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


def max_opset() -> int:
    """The newest ONNX opset the TorchScript-based exporter (the one used here) writes."""
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", getattr(_constants, "ONNX_MAX_OPSET", 17)))


def check_opset(opset: int, key: str = "opset") -> int:
    """``opset`` if this torch can export it (checked before any work), else a :class:`ConfigError`."""
    top = max_opset()
    if int(opset) > top:
        raise ConfigError(f"{key}={opset}: this torch {torch.__version__} exports ONNX opsets up to {top}; "
                          f"set {key}=17 (or any of 11 to {top})")
    return int(opset)


def onnx_bytes(model: nn.Module, example: Tensor, opset: int = 17, metadata: Optional[dict] = None) -> bytes:
    """ONNX with dynamic batch/height/width, serialised in memory; ``metadata`` goes into ``metadata_props``
    (JSON values)."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("format=onnx needs the onnx package: pip install 'segdeconv[export]'") from None
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with _quiet_tracing(), torch.inference_mode(False), torch.no_grad():
        # the stub lists paths only; export writes to a file-like object too (documented, and how this always ran)
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=check_opset(opset),  # type: ignore[arg-type]
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in (metadata or {}).items():
        proto.metadata_props.add(key=k, value=json.dumps(v))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def torchscript_bytes(model: nn.Module, example: Tensor, metadata: Optional[dict] = None) -> bytes:
    """A traced TorchScript module (shapes stay symbolic: any batch/height/width), serialised in memory."""
    buf = io.BytesIO()
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, buf, _extra_files={"segdeconv.json": json.dumps(metadata or {})})
    return buf.getvalue()


def export_onnx(model: nn.Module, path: Path, example: Tensor, opset: int = 17,
                metadata: Optional[dict] = None) -> Path:
    """:func:`onnx_bytes` written to ``path`` by the one writer."""
    return write_bytes(path, onnx_bytes(model, example, opset, metadata), "the onnx export")


def export_torchscript(model: nn.Module, path: Path, example: Tensor, metadata: Optional[dict] = None) -> Path:
    """:func:`torchscript_bytes` written to ``path`` by the one writer."""
    return write_bytes(path, torchscript_bytes(model, example, metadata), "the torchscript export")


def runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the exported file: (B,3,H,W) float32 → (B,C,H,W) logits."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"image": x})[0]
    with _quiet_tracing():
        ts = torch.jit.load(str(path), map_location="cpu")
    return lambda x: ts(torch.from_numpy(x)).detach().numpy()


def export_metadata(class_names: Sequence[str], palette: Sequence[Sequence[int]], size: Sequence[int]) -> dict:
    """What a user of the exported file needs: class names, palette, training size, normalization."""
    return {"class_names": list(class_names), "palette": [list(c) for c in palette], "image_size": list(size),
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "input": "image (B,3,H,W) float32, RGB/255 normalized with mean/std", "output": "logits (B,C,H,W)"}
