"""One way in: ``segdeconv <command>`` for every task, root scripts as aliases of it, and one word per
meaning — ``task`` is the command, ``run_name`` the run's label (``task=<label>`` still works, deprecated)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import cli_env, tiny
from conftest import CONF, REPO

from segdeconv.tasks.commands import COMMANDS

SCRIPTS = {"train.py": "train", "evaluate.py": "evaluate", "predict.py": "predict", "export.py": "export",
           "visualize.py": "visualize", "recompute_bn.py": "recompute_bn", "check_data.py": "check"}


def test_every_root_script_is_a_two_line_alias_of_its_subcommand():
    on_disk = {p.name for p in REPO.glob("*.py")}
    assert on_disk == set(SCRIPTS), on_disk ^ set(SCRIPTS)
    assert set(SCRIPTS.values()) == set(COMMANDS)  # every task has a subcommand, recompute_bn included
    for name, command in SCRIPTS.items():
        tree = ast.parse((REPO / name).read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        assert [ast.unparse(c) for c in calls] == [f"script('{command}')"], name
        assert len(tree.body) == 3, f"{name}: docstring, import, __main__ call"


def test_no_experiment_relabels_the_command():
    for p in sorted((CONF / "experiment").glob("*.yaml")):
        cfg = yaml.safe_load(p.read_text()) or {}
        assert "task" not in cfg and cfg.get("run_name") == p.stem, p.name


def _train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "train.py"), *tiny(trainer__max_steps=1, dataset__train__length=4,
                                                        dataset__val__length=2), *args]
    return subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_run_name_labels_the_run_dir_and_task_stays_the_command(tmp_path):
    r = _train(tmp_path, "run_name=my_label")
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "my_label").iterdir()
    record = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert (record["task"], record["run_name"]) == ("train", "my_label")
    assert (run / "checkpoints" / "last.pt").is_file() and "deprecated" not in r.stdout + r.stderr


@pytest.mark.slow
def test_a_legacy_task_label_still_names_the_run_with_a_deprecation_line(tmp_path):
    r = _train(tmp_path, "task=old_label")
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "old_label").iterdir()
    assert (run / "checkpoints" / "last.pt").is_file()
    out = r.stdout + r.stderr
    assert "task=old_label as a run label is deprecated" in out and "use run_name=old_label" in out
