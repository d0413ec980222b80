"""The ``segdeconv`` command: subcommands = the root scripts, one-line errors, and a wheel that works alone."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cli_helpers import cli_env, tiny
from conftest import CONF, REPO

from segdeconv.tasks.commands import COMMANDS, config_dir


def segdeconv(*args: str, cwd: Path = REPO, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``python -m segdeconv <args>``."""
    return subprocess.run([sys.executable, "-m", "segdeconv", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_subcommand_on_one_line_each():
    r = segdeconv("--help")
    assert r.returncode == 0, r.stderr
    listed = [line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["train", "evaluate", "predict", "export", "visualize", "recompute_bn", "check"] == list(COMMANDS)
    assert f"config tree: {CONF}" in r.stdout


@pytest.mark.slow
def test_subcommand_help_is_hydras_help_with_the_config_groups():
    r = segdeconv("train", "--help")
    assert r.returncode == 0, r.stderr
    assert "train is powered by Hydra." in r.stdout
    assert "logger: mlflow, tensorboard, wandb" in r.stdout and "model: bayesian_segnet" in r.stdout


def test_unknown_subcommand_is_one_line_naming_the_commands_exit_2():
    r = segdeconv("trian")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["error: unknown command 'trian'; did you mean train? choose one of: train, "
                                     "evaluate, predict, export, visualize, recompute_bn, check (segdeconv --help)"]


def test_no_subcommand_prints_the_usage_to_stderr_exit_2():
    r = segdeconv()
    assert r.returncode == 2
    assert r.stderr.startswith("usage: segdeconv <command>")


@pytest.mark.slow
def test_a_misspelled_key_is_the_same_one_line_error_as_train_py():
    r = segdeconv("train", "trainer.max_epoch=1")
    script = subprocess.run([sys.executable, "train.py", "trainer.max_epoch=1"], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert r.returncode == script.returncode == 2
    assert r.stderr.splitlines() == script.stderr.splitlines() == [
        "error: trainer.max_epoch is not a config key (did you mean trainer.max_epochs or trainer.max_steps?); "
        "fix the spelling, or write +trainer.max_epoch=… to add a new key"]


@pytest.mark.slow
def test_check_exits_1_when_the_dataset_has_problems(tmp_path):
    r = segdeconv("check", "dataset=camvid", f"dataset.root={tmp_path / 'absent'}", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 1, r.stderr
    assert "CamVid root does not exist" in r.stdout + r.stderr


@pytest.mark.slow
def test_evaluate_subcommand_runs_the_evaluate_task_like_evaluate_py(tiny_ckpt, tmp_path):
    r = segdeconv("evaluate", f"ckpt_path={tiny_ckpt}", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] == 8 and "mIoU" in r.stdout
    assert (tmp_path / "evaluate.log").is_file()  # Hydra names the job after the task module, as evaluate.py


def test_config_dir_of_a_checkout_is_the_repo_conf():
    assert config_dir() == CONF


def test_pyproject_package_list_names_every_package_and_config_group():
    """The wheel maps conf/ to segdeconv.conf, which needs an explicit list: it must not miss a new package."""
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    groups = sorted(p.name for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    packages = [".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "segdeconv").rglob("__init__.py")]
    expected = packages + ["segdeconv.conf"] + [
        f"segdeconv.conf.{g}" for g in groups]
    assert sorted(listed) == sorted(expected)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (pip wheel, isolated build) from a copy of the sources: the repo is not written to."""
    import shutil

    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("segdeconv", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    [whl] = out.glob("segdeconv-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_ships_every_config_file_py_typed_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    shipped = {n.removeprefix("segdeconv/conf/") for n in names if n.startswith("segdeconv/conf/")}
    assert shipped == {str(p.relative_to(CONF)) for p in CONF.rglob("*.yaml")}
    assert "segdeconv/py.typed" in names and "segdeconv/tasks/commands.py" in names
    assert "segdeconv = segdeconv.__main__:main" in entry_points


@pytest.mark.slow
@pytest.mark.slow
def test_installed_wheel_command_trains_from_outside_the_repo(wheel, tmp_path):
    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    command = [str(target / "bin" / "segdeconv")]
    env = cli_env(PYTHONPATH=str(target))
    shown = subprocess.run(command + ["--help"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"config tree: {target / 'segdeconv' / 'conf'}" in shown.stdout  # the wheel's copy, not the repo's
    run = subprocess.run(command + ["train", *tiny(trainer__max_epochs=1), "hydra.run.dir=run"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    [metrics] = json.loads((work / "run" / "val_metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["epoch"] == 1
    assert (work / "run" / "checkpoints" / "best.pt").is_file() and (work / "run" / "train.log").is_file()
