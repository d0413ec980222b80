"""Docs that cannot rot (issue #34): every fenced ``python`` / ``bash`` block of README.md and docs/**/*.md
runs here, in a scratch folder that holds the shipped checkpoint (``checkpoints/``), a few images
(``street.png``, ``a.png``, ``b.png``, ``photos/``), a tiny ``images/`` + ``masks/`` dataset (``mine/``) and
the root scripts — or carries a first line ``# doc-test: skip (<reason>)``, read as a skip with that reason
(``# doc-test: slow`` runs it under ``-m slow`` only), or — where a block must stay verbatim, as the
README's quick start — the line just above its fence ``<!-- doc-test: skip (<reason>) -->``. Blocks of other languages (``text``, none) are shown,
never run. Also: no page names this project's private data path, and the site builds with ``-W``."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md"] + sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
RUNNABLE = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "bash"}
MARKER = re.compile(r"(?:#|<!--)\s*doc-test:\s*(\w+)\s*(?:\((.*)\))?\s*(?:-->)?\s*$")
SCRIPTS = ["train.py", "evaluate.py", "predict.py", "export.py", "visualize.py", "check_data.py", "recompute_bn.py"]


def blocks(path: Path) -> list[tuple[str, str, str, str]]:
    """``(id, language, code, marker line)`` of each fenced block of a page; id = ``page:line``; the marker
    line is the block's first line, or the HTML comment on the line above its fence."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        lang = m.group(1).strip().split()[0].lower() if m.group(1).strip() else ""
        line = text.count("\n", 0, m.start()) + 1
        above = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        first = above if above.startswith("<!--") else m.group(2).lstrip().split("\n", 1)[0]
        found.append((f"{path.relative_to(REPO)}:{line}", lang, m.group(2), first))
    return found


def runnable() -> list:
    """One pytest param per python/bash block, skipped or marked slow as its first line says."""
    params = []
    for page in PAGES:
        for ident, lang, code, first in blocks(page):
            if lang not in RUNNABLE:
                continue
            marks = []
            m = MARKER.match(first)
            if m and m.group(1) == "skip":
                marks.append(pytest.mark.skip(reason=(m.group(2) or "").strip() or "NO REASON GIVEN"))
            elif m and m.group(1) == "slow":
                marks.append(pytest.mark.slow)
            params.append(pytest.param(RUNNABLE[lang], code, id=ident, marks=marks))
    return params


def _image(path: Path, h: int, w: int, seed: int) -> None:
    """A street-like picture: sky on top, grey road below, a few coloured boxes."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3] = (130, 170, 220)
    img[h // 3: 2 * h // 3] = (90, 80, 70)
    img[2 * h // 3:] = (100, 100, 100)
    for _ in range(4):
        y, x = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 30))
        img[y: y + 20, x: x + 30] = rng.integers(0, 255, 3)
    img = np.clip(img.astype(int) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The scratch folder the blocks run in (what their paths name)."""
    ws = tmp_path_factory.mktemp("docs_ws")
    (ws / "checkpoints").symlink_to(REPO / "checkpoints", target_is_directory=True)
    for name in SCRIPTS:
        (ws / name).symlink_to(REPO / name)
    for i, name in enumerate(["street.png", "a.png", "b.png"]):
        _image(ws / name, 360, 480, i)
    (ws / "photos").mkdir()
    for i in range(2):
        _image(ws / "photos" / f"p{i}.png", 180, 240, 10 + i)
    for split, n in (("train", 4), ("val", 2)):  # mine/: 3 classes, images/ + masks/ per split
        for sub in ("images", "masks"):
            (ws / "mine" / split / sub).mkdir(parents=True)
        for i in range(n):
            _image(ws / "mine" / split / "images" / f"{i:04d}.png", 64, 64, 20 + i)
            mask = np.zeros((64, 64), np.uint8)
            mask[20:40, 10:50] = 1
            mask[45:60, 5 + i:25 + i] = 2
            Image.fromarray(mask).save(ws / "mine" / split / "masks" / f"{i:04d}.png")
    return ws


@pytest.mark.parametrize(("lang", "code"), runnable())
@pytest.mark.slow
def test_block(lang: str, code: str, workspace: Path, monkeypatch) -> None:
    if lang == "python":
        monkeypatch.chdir(workspace)
        exec(compile(code, "<doc block>", "exec"), {"__name__": "__doc_block__"})
        return
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_WAIT_POLICY="PASSIVE", HYDRA_FULL_ERROR="1")
    r = subprocess.run(["bash", "-eo", "pipefail", "-c", code], cwd=workspace, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"


def test_every_skip_gives_a_reason() -> None:
    missing = [p.id for p in runnable() if any(getattr(m, "kwargs", {}).get("reason") == "NO REASON GIVEN"
                                                for m in p.marks)]
    assert not missing, f"blocks marked '# doc-test: skip' without '(reason)': {missing}"


def test_blocks_found() -> None:
    """The extractor sees the README's quick start (a guard against a regex that matches nothing)."""
    readme = [code for _, lang, code, _ in blocks(REPO / "README.md") if lang == "bash"]
    assert any('pip install -e ".[dev]" && python train.py' in c and "pytest -q" in c for c in readme)


def test_no_private_paths() -> None:
    """``../shared`` exists only on this project's machines: pages and config comments say /path/to/CamVid."""
    files = PAGES + [REPO / "benchmarks" / "README.md", REPO / "data" / "README.md"] + sorted((REPO / "conf").rglob("*.yaml"))
    hits = [f"{f.relative_to(REPO)}:{n}" for f in files if f.is_file()
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if "../shared" in line]
    assert not hits, f"../shared in: {hits}"


@pytest.mark.slow  # 7 s alone, up to 45 s on a loaded 2-core machine
@pytest.mark.slow
def test_site_builds(tmp_path: Path) -> None:
    """What CI runs: any Sphinx warning (a broken link or reference) fails."""
    for mod in ("sphinx", "myst_parser", "furo"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (pip install -e '.[docs]')")
    r = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", "html", str(DOCS),
                        str(tmp_path / "html")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-5000:]
