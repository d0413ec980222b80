"""Issue #28 item 5: one owner per run directory through one cross-platform lock (filelock, no fcntl), and
Hydra's own errors as one line through its public ``HYDRA_FULL_ERROR`` (no private Hydra API patched).
In-process and fast; the CLI end-to-end runs are in test_run_dir.py."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import cli_env
from conftest import REPO

from segdeconv.engine.rundir import HOLDER_NAME, LOCK_NAME, RunLock, lock_holder
from segdeconv.errors import UserError
from segdeconv.knobs import flatten

PKG = REPO / "segdeconv"


def package_sources() -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(PKG.rglob("*.py"))}


def test_no_module_uses_fcntl_so_training_runs_on_windows() -> None:
    offenders = [str(p.relative_to(REPO)) for p, text in package_sources().items()
                 if re.search(r"^\s*(import fcntl|from fcntl import)", text, re.M)]
    assert offenders == []


def test_no_private_hydra_api_is_used_or_patched() -> None:
    offenders = [str(p.relative_to(REPO)) for p, text in package_sources().items() if "hydra._internal" in text]
    assert offenders == []


def test_a_lock_holder_is_named_and_a_clean_exit_removes_both_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunLock(run), RunLock(run):  # re-entrant: one lock per process
        info = json.loads((run / HOLDER_NAME).read_text())
        assert info["pid"] == os.getpid() and (run / LOCK_NAME).is_file() and lock_holder(run) is None
    assert sorted(os.listdir(run)) == [] and lock_holder(run) is None


def test_another_process_sees_the_holder_and_is_refused_then_takes_a_stale_lock_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = ("import json, sys\nfrom pathlib import Path\nfrom segdeconv.engine.rundir import RunLock, lock_holder\n"
            "from segdeconv.errors import UserError\n"
            f"run = Path({str(run)!r})\nprint(json.dumps(lock_holder(run)))\n"
            "try:\n    RunLock(run).__enter__()\nexcept UserError as e:\n    print(json.dumps(str(e)))\n")
    with RunLock(run):
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True)
        holder, refusal = (json.loads(line) for line in r.stdout.splitlines())
    assert holder.startswith(f"pid {os.getpid()} on host ") and "is in use by another training run" in refusal
    assert "hydra.run.dir=" in refusal
    stale = {"pid": 999999, "host": "gone", "started": "2026-12-07 10:00:00", "argv": ["train.py"]}
    (run / HOLDER_NAME).write_text(json.dumps(stale))  # what a killed holder leaves behind (its lock is gone)
    assert lock_holder(run) is None
    with RunLock(run):
        assert json.loads((run / HOLDER_NAME).read_text())["pid"] == os.getpid()
    assert not (run / HOLDER_NAME).exists()


def test_a_disabled_lock_writes_nothing(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run", enabled=False):  # torchrun ranks other than 0
        pass
    assert not (tmp_path / "run").exists()


def test_refusal_is_a_user_error(tmp_path: Path) -> None:
    code = f"from segdeconv.engine.rundir import RunLock\nwith RunLock(__import__('pathlib').Path({str(tmp_path)!r})): pass"
    with RunLock(tmp_path):
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 1 and UserError.__name__ in r.stderr.splitlines()[-1]


def _run_command(name: str, args: list[str]) -> None:
    from hydra.core.global_hydra import GlobalHydra

    from segdeconv.tasks.commands import run_command

    argv = sys.argv
    try:
        run_command(name, args)
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()


def test_hydra_errors_are_one_line_through_the_public_full_error_switch(monkeypatch, capsys) -> None:
    """Fails the day hydra-core stops re-raising under ``HYDRA_FULL_ERROR=1`` (its documented switch), which
    :func:`segdeconv.cli.run_hydra_main` relies on; the user's own setting is restored afterwards."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("SEGDECONV_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        _run_command("train", ["model=no_such_model"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exit_.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: model=no_such_model is not a known model option; choose one of:")
    assert "HYDRA_FULL_ERROR" not in os.environ and "SEGDECONV_FULL_ERROR" not in os.environ


def test_hydra_full_error_set_by_the_user_keeps_the_traceback(monkeypatch) -> None:
    from hydra.errors import MissingConfigException

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingConfigException):
        _run_command("train", ["model=no_such_model"])
    assert os.environ["HYDRA_FULL_ERROR"] == "1" and "SEGDECONV_FULL_ERROR" not in os.environ


def test_flatten_keeps_lists_and_empty_mappings_as_values() -> None:
    """The one flatten (resume compares keys, MLflow logs them): an empty mapping never vanishes."""
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2], "f": {}}) == {
        "a.b": 1, "a.c.d": None, "e": [1, 2], "f": {}}
    assert flatten({}) == {}
