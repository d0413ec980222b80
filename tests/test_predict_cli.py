"""predict.py end to end: outputs written, unreadable files skipped, inputs never overwritten."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, compose_cfg
from infer_helpers import malicious_checkpoint
from PIL import Image


def run_predict(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "predict.py", *args, "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def assert_one_line_error(r: subprocess.CompletedProcess, match: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and match in errors[0], r.stderr


@pytest.fixture()
def images(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 40), dtype=np.uint8)).save(d / "b.jpg")  # grayscale JPEG
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return d


@pytest.mark.slow
def test_predict_folder_writes_index_colour_and_overlay(tiny_ckpt, images, tmp_path):
    from segdeconv import Predictor

    before = {p.name: p.read_bytes() for p in images.iterdir()}
    out = tmp_path / "out"
    r = run_predict(f"ckpt_path={tiny_ckpt}", f"input={images}", f"output={out}", "precision=fp32", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "skipping" in r.stdout + r.stderr and "broken.png" in r.stdout + r.stderr  # warning (Hydra logs to stdout)
    assert "predicted 2 image(s)" in r.stdout and "skipped 1 unreadable" in r.stdout  # summary
    for kind in ("index", "color", "overlay"):
        assert sorted(p.name for p in (out / kind).iterdir()) == ["a.png", "b.png"]
    with Image.open(out / "index" / "a.png") as im:
        assert im.mode == "P" and im.size == (83, 61)
        index = np.asarray(im)
    expected = Predictor.from_checkpoint(tiny_ckpt, device="cpu", precision="fp32").predict(images / "a.png")
    assert np.array_equal(index, expected)
    with Image.open(out / "color" / "b.png") as im:
        assert im.mode == "RGB" and im.size == (40, 50)
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before  # inputs untouched


def test_refuses_output_equal_to_input(tiny_ckpt, images, tmp_path):
    before = sorted(p.name for p in images.iterdir())
    r = run_predict(f"ckpt_path={tiny_ckpt}", f"input={images}", f"output={images}/.", tmp_path=tmp_path)
    assert_one_line_error(r, "is the input folder")
    assert sorted(p.name for p in images.iterdir()) == before


def test_refuses_to_overwrite_an_input_file(tiny_ckpt, tmp_path):
    from segdeconv.errors import UserError
    from segdeconv.tasks.predict import predict_files

    src = tmp_path / "data" / "index"  # output=data would write data/index/a.png: the input itself
    src.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(src / "a.png")
    cfg = compose_cfg([f"ckpt_path={tiny_ckpt}", f"input={src}", f"output={src.parent}"], "predict")
    with pytest.raises(UserError, match="would overwrite the input image"):
        predict_files(cfg)
    cfg = compose_cfg([f"ckpt_path={tiny_ckpt}", f"input={src.parent}", f"output={src}", "recursive=true"], "predict")
    with pytest.raises(UserError, match="inside the input folder"):
        predict_files(cfg)


@pytest.mark.slow
def test_malicious_checkpoint_is_refused_by_the_cli(images, tmp_path):
    path, marker = malicious_checkpoint(tmp_path)
    r = run_predict(f"ckpt_path={path}", f"input={images}", f"output={tmp_path / 'out'}", tmp_path=tmp_path)
    assert_one_line_error(r, "could execute code")
    assert not marker.exists()
