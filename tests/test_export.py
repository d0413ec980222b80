"""ONNX / TorchScript export: dynamic shapes, parity with PyTorch (random and a real CamVid frame)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA, compose_cfg

from segdeconv.engine.checkpoint import load_checkpoint
from segdeconv.inference.export import export_metadata, export_onnx, export_torchscript, exportable, runner
from segdeconv.inference.parity import explained_by_ties, parity_inputs, problems, report_lines, verify
from segdeconv.trained import load_trained

TOL = 1e-4
CAMVID_FRAME = SHARED_DATA / "camvid" / "val" / "0016E5_07959.png"


def camvid_frame() -> str:
    if not CAMVID_FRAME.is_file():
        pytest.skip(f"{CAMVID_FRAME} is absent (real data lives in ../shared/data beside the repo)")
    return str(CAMVID_FRAME)


def with_switches(src: Path, dst: Path, compact: bool) -> Path:
    """The tiny checkpoint with its architecture's ``encoder.compact_switches`` set (pools have no weights)."""
    ckpt = load_checkpoint(src)
    ckpt["arch"]["encoder"]["compact_switches"] = compact
    torch.save(ckpt, dst)
    return dst


@pytest.fixture(scope="module")
def model(tiny_ckpt, tmp_path_factory):
    """The tiny model as built by the default config (compact switches), ready for export."""
    path = with_switches(tiny_ckpt, tmp_path_factory.mktemp("ckpt") / "compact.pt", True)
    return exportable(load_trained(path).model), load_checkpoint(path)


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory) -> Path:
    m, ckpt = model
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(m, path, torch.randn(1, 3, 64, 80), 17, export_metadata(ckpt["class_names"], ckpt["palette"], [64, 80]))


def _strict(results) -> None:
    for r in results:
        assert r.within(TOL), r.line()  # |Δ| ≤ 1e-4 · max(1, max|logit|), identical argmax


def _parity(results) -> None:
    """Strict, or different only where a max-pool tie flipped (exact with the runtime's switches)."""
    assert problems(results, TOL) == [], "\n".join(report_lines(results, TOL))


def test_onnx_parity_with_dynamic_batch_and_size(model, onnx_path):
    m, _ = model
    odd = torch.randn(3, 3, 97, 131, generator=torch.Generator().manual_seed(3))
    cases = parity_inputs((64, 80)) + [("batch 3, 97×131", odd)]
    results = verify(m, runner("onnx", onnx_path), cases, TOL, onnx_path)
    print("\n" + "\n".join(report_lines(results, TOL)))
    _parity(results)


def test_onnx_parity_on_a_real_camvid_frame(model, onnx_path):
    """Within 1e-4 with identical argmax — or, where a max-pool window holds a float tie and
    onnxruntime picks the other switch, exact once PyTorch is given onnxruntime's switches."""
    m, _ = model
    (r,) = verify(m, runner("onnx", onnx_path), parity_inputs((64, 80), camvid_frame())[2:], TOL, onnx_path)
    print("\n" + "\n".join(report_lines([r], TOL)))
    _parity([r])
    assert r.within(TOL) or explained_by_ties(r, TOL)


def _flip_one(m, x, tied: bool) -> list[np.ndarray]:
    """PyTorch's pool codes on ``x`` with the pool1 switches of one pixel moved (every channel
    there): to a position holding an exactly equal input (``tied``), or to the smallest input."""
    import segdeconv.inference.parity as ep

    ours = ep.torch_switches(m, x)
    codes = [c.clone().numpy() for _, c in ours]
    vals = ep._window_values(ours[0][0])[0]  # (C, h, w, 4)
    spread = vals.amax(-1) - vals.amin(-1)
    ok = ((spread == 0) if tied else (spread > 0.1 * vals.abs().amax(-1))).all(0)
    i, j = (int(v) for v in ok[1:-1, 1:-1].nonzero()[0] + 1)  # an interior pixel
    moved = (codes[0][0, :, i, j] + 1) % 4 if tied else vals[:, i, j].argmin(-1).numpy()
    codes[0][0, :, i, j] = moved
    return codes


@pytest.mark.parametrize("tied", [True, False])
def test_tie_diagnosis(model, monkeypatch, tied):
    """A runtime breaking an exact pooling tie the other way is accepted (and the flip is shown);
    one moving a clearly non-maximal switch is refused."""
    import segdeconv.inference.parity as ep

    m, _ = model
    x = torch.zeros(1, 3, 64, 80) if tied else torch.randn(1, 3, 64, 80)
    codes = _flip_one(m, x, tied)
    monkeypatch.setattr(ep, "onnx_codes", lambda path, arr: codes)
    run = lambda arr: ep.forced_switches(m, torch.from_numpy(arr), codes).numpy()  # noqa: E731
    (r,) = verify(m, run, [("case", x)], TOL, Path("unused.onnx"))
    assert not r.within(TOL)  # the moved value changes the logits
    assert len(r.flips) == m.encoder.num_pools  # one line per pool
    assert r.flips[0].differ > 0 and all(f.differ == 0 for f in r.flips[1:])
    assert r.forced is not None and r.forced.max_abs == 0.0
    assert (problems([r], TOL) == []) is tied
    assert "pool1: " in "\n".join(report_lines([r], TOL))


def test_torchscript_parity_exact_on_camvid(model, tmp_path):
    m, _ = model
    path = export_torchscript(m, tmp_path / "tiny.torchscript.pt", torch.randn(1, 3, 64, 80), {"k": 1})
    results = verify(m, runner("torchscript", path), parity_inputs((64, 80), camvid_frame()), TOL)
    print("\n" + "\n".join(report_lines(results, TOL)))
    _strict(results)


def test_int64_switch_checkpoints_export_too(tiny_ckpt, tmp_path):
    path = with_switches(tiny_ckpt, tmp_path / "int64.pt", False)
    m = exportable(load_trained(path).model)
    out = export_onnx(m, tmp_path / "int64.onnx", torch.randn(1, 3, 64, 80))
    _parity(verify(m, runner("onnx", out), parity_inputs((64, 80)), TOL, out))


def test_onnxruntime_snippet_matches_predictor(tiny_ckpt, onnx_path, tmp_path):
    """The README's onnxruntime snippet, verbatim, gives the Predictor's native-resolution class map."""
    from PIL import Image

    from segdeconv import Predictor

    rgb8 = np.random.default_rng(1).integers(0, 256, (61, 83, 3), dtype=np.uint8)
    Image.fromarray(rgb8).save(tmp_path / "street.png")
    # --- README snippet ---
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    rgb = np.asarray(Image.open(tmp_path / "street.png").convert("RGB"), dtype=np.float32) / 255
    x = ((rgb - meta["mean"]) / meta["std"]).astype(np.float32).transpose(2, 0, 1)[None]  # (1, 3, H, W)
    logits = sess.run(["logits"], {"image": x})[0]  # (1, C, H, W)
    mask = logits.argmax(1)[0].astype(np.uint8)  # (H, W) class ids; names: meta["class_names"]
    # ---
    expected = Predictor.from_checkpoint(tiny_ckpt, device="cpu", precision="fp32", input_size=None).predict(rgb8)
    assert np.array_equal(mask, expected)
    assert meta["class_names"][0] == "background" and meta["image_size"] == [64, 80]


@pytest.mark.slow
def test_export_cli_prints_parity(tiny_ckpt, tmp_path):
    out = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "export.py", f"ckpt_path={tiny_ckpt}", "format=onnx", f"output={out}",
                        f"hydra.run.dir={tmp_path / 'hydra'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and r.stdout.count("max|Δlogit|") == 2
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr


def test_export_bad_format_is_a_config_error(tiny_ckpt, tmp_path):
    from segdeconv.errors import ConfigError
    from segdeconv.tasks.export import export_checkpoint

    cfg = compose_cfg([f"ckpt_path={tiny_ckpt}", "format=tflite", f"output={tmp_path / 'm'}"], "export")
    with pytest.raises(ConfigError, match="format='tflite' is unknown; use onnx or torchscript"):
        export_checkpoint(cfg)
