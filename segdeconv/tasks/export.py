"""``export_checkpoint(cfg)``: the export task — a checkpoint as ONNX or TorchScript, verified against
PyTorch (formats, metadata and unpooling ops: :mod:`segdeconv.inference.export`; parity:
:mod:`segdeconv.inference.parity`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from segdeconv.engine.outputs import check_output_file
from segdeconv.engine.writer import write_bytes
from segdeconv.errors import ConfigError
from segdeconv.inference.export import FORMATS, ExportMismatch, check_opset, export_metadata, exportable, onnx_bytes, runner, torchscript_bytes
from segdeconv.inference.parity import parity_inputs, problems, report_lines, verify
from segdeconv.trained import load_trained


def export_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` to ``cfg.format``; verify against PyTorch and print the parity figures.

    The output (default: beside the checkpoint, ``best.onnx`` / ``best.torchscript.pt``) may not be an
    input, an existing checkpoint or a device (:func:`~segdeconv.engine.outputs.check_output_file`); it is
    serialised in memory and written by the one writer (:mod:`segdeconv.engine.writer`): a failed export
    (a full disk included) leaves whatever was there before and no temp file."""
    fmt, tol = str(cfg.format), float(cfg.tolerance)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is unknown; use onnx or torchscript")
    if fmt == "onnx":
        check_opset(int(cfg.opset))  # before any work: ONNX's own error would come after the tracing
    dst = Path(cfg.output) if cfg.get("output") else Path(cfg.ckpt_path).with_suffix(FORMATS[fmt])
    check_output_file(dst, [cfg.ckpt_path, cfg.get("verify_image")], "output")  # never over an input/checkpoint
    trained = load_trained(cfg.ckpt_path, "cpu")
    model = exportable(trained.model)
    size = list(cfg.get("input_size") or trained.image_size or [360, 480])
    meta = export_metadata(trained.class_names, trained.palette, size)
    cases = parity_inputs(size, cfg.get("verify_image"))  # a bad verify_image fails before exporting
    example = torch.randn(1, 3, *size)
    data = (onnx_bytes(model, example, int(cfg.opset), meta) if fmt == "onnx" else
            torchscript_bytes(model, example, meta))
    write_bytes(dst, data, f"the {fmt} export")
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
