"""What a file is, told by its first bytes (its signature), never by its name or by an error message.

One classifier for every place that reads or refuses a model file: checkpoints
(:func:`segdeconv.engine.checkpoint.load_checkpoint`), ImageNet weights
(:func:`segdeconv.models.pretrained.read_state`) and the writers' "never over a checkpoint" rule
(:func:`segdeconv.engine.outputs.is_checkpoint`).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Union

ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6 (and torch.jit.save): a zip archive
PICKLE_MAGIC = b"\x80"  # torch.save's legacy format (and any pickle of protocol ≥ 2)
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"  # torch.save's legacy magic number

# kinds :func:`file_kind` returns
TORCH, LEGACY, TORCHSCRIPT, BROKEN_ZIP, ZIP, ONNX, CAFFE, EMPTY, OTHER = (
    "torch", "legacy", "torchscript", "broken_zip", "zip", "onnx", "caffe", "empty", "other")
LOADABLE = (TORCH, LEGACY)  # what torch.load(weights_only=True) may be tried on
NAMES = {TORCHSCRIPT: "a TorchScript export (torch.jit.save), not a checkpoint",
         BROKEN_ZIP: "a truncated or corrupt zip archive (torch.save's format): its end is missing",
         ZIP: "a zip archive that torch.save did not write", ONNX: "an ONNX model (protobuf), not a checkpoint",
         CAFFE: "a Caffe model (protobuf)", EMPTY: "an empty file"}


def head(path: Union[str, Path], n: int = 64) -> bytes:
    """The first ``n`` bytes of ``path``."""
    with open(path, "rb") as f:
        return f.read(n)


def file_kind(path: Union[str, Path]) -> str:
    """One of the kinds above. A zip is ``torch`` when it holds a ``data.pkl`` and no TorchScript
    ``code/``; protobufs are told apart by their first field (ONNX ``ModelProto``: 1 = ir_version, a
    varint; Caffe ``NetParameter``: 1 = name, a string)."""
    p = Path(path)
    start = head(p)
    if not start:
        return EMPTY
    if start.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return BROKEN_ZIP
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return TORCHSCRIPT
        return TORCH if any(n.endswith("data.pkl") for n in names) else ZIP
    if start.startswith(PICKLE_MAGIC):
        return LEGACY
    if p.suffix.lower() == ".onnx" or (start[0] == 0x08 and 0 < start[1] < 0x20 and start[2:3] in (b"\x12", b"\x1a")):
        return ONNX
    named = len(start) > 2 and start[0] == 0x0A and 0 < start[1] < 0x80
    if p.suffix.lower() == ".caffemodel" or (named and start[2:2 + start[1]].isascii()
                                             and start[2:2 + start[1]].decode("ascii").isprintable()):
        return CAFFE
    return OTHER


def describe(path: Union[str, Path], kind: str) -> str:
    """``kind`` in words, with the first bytes for an unknown file (``not a PyTorch file: it starts with …``)."""
    if kind in NAMES:
        return NAMES[kind]
    return (f"not a PyTorch file (it starts with {head(path, 4)!r}; torch.save writes {ZIP_MAGIC!r} or a pickle "
            f"{PICKLE_MAGIC!r})")
