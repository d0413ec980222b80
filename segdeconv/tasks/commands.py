"""The one way in: ``segdeconv train|evaluate|predict|export|visualize|recompute_bn|check [overrides …]``.

The root scripts (``python train.py …``, ``evaluate.py``, …) are two-line aliases of the subcommand of the
same name (:func:`script`): the same config, Hydra overrides, flags (``--help``, ``--cfg job``, ``-m``),
run dirs and task function behind :func:`~segdeconv.cli.run_task`. The config tree is :func:`config_dir`: the repo's ``conf/`` in a source
checkout or editable install, the copy a wheel ships as ``segdeconv/conf`` otherwise (pyproject.toml
maps ``conf/`` there, so the two never differ).
"""
from __future__ import annotations

import difflib
import functools
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from segdeconv.cli import config_dir, prepare_hydra, run_hydra_main, run_task
from segdeconv.errors import UserError


@dataclass(frozen=True)
class Command:
    """One subcommand: its config (``conf/<config>.yaml``), task function and help line."""

    config: str
    target: str  # "module:function" under segdeconv.tasks, imported only when the command runs
    summary: str
    finish: Callable[[Any], Any]  # task result → what the Hydra task function returns


def sweep_metric(metrics: dict[str, Any]) -> float:
    """What a training run returns to Hydra's sweepers (Optuna maximizes it): the last val mIoU; NaN
    (a failed trial) when no validation ran."""
    value = metrics.get("mIoU") if metrics else None
    return float(value) if value is not None else math.nan


def _check_exit(result: dict[str, Any]) -> None:
    """``check``: exit 1 when any split has a problem (as check_data.py)."""
    if result["failed"]:
        sys.exit(1)


COMMANDS: dict[str, Command] = {
    "train": Command("train", "train:fit", "train a model (checkpoints, TensorBoard/MLflow/W&B, val mIoU)",
                     sweep_metric),
    "evaluate": Command("evaluate", "evaluate:evaluate_checkpoint",
                        "evaluate a checkpoint: metrics.json, confusion matrix, worst images", lambda r: None),
    "predict": Command("predict", "predict:predict_files", "predict class maps for image files or a folder",
                       lambda r: None),
    "export": Command("export", "export:export_checkpoint", "export a checkpoint to ONNX or TorchScript",
                      lambda r: None),
    "visualize": Command("visualize", "visualize:visualize",
                         "Zeiler & Fergus deconvnet projections of encoder channels", lambda r: None),
    "recompute_bn": Command("recompute_bn", "recompute_bn:recompute_bn",
                            "recompute a checkpoint's BatchNorm statistics into a new checkpoint", lambda r: None),
    "check": Command("check_data", "check_data:check_data", "check a dataset's files before training on it "
                     "(exit 1 on problems)", _check_exit),
}


def usage() -> str:
    """``segdeconv --help``: the subcommands, one line each."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    return "\n".join([
        "usage: segdeconv <command> [key=value …] [--help] [--cfg job] [-m]",
        "",
        "commands (Hydra overrides key=value; in a checkout, python <command>.py … is the same, check_data.py for check):",
        *lines,
        "",
        "segdeconv <command> --help shows the command's config groups and keys.",
        f"config tree: {_config_dir_or_none() or 'not found'}",
    ])


def _config_dir_or_none() -> Optional[Path]:
    try:
        return config_dir()
    except UserError:
        return None


def _fail(line: str) -> NoReturn:
    print(f"error: {line}", file=sys.stderr)
    sys.exit(2)


def task_function(command: Command) -> Callable[[Any], Any]:
    """The Hydra task function of ``command``: its task under :func:`run_task`, then ``command.finish``.

    ``functools.wraps`` keeps the task's ``__module__`` and sets ``__wrapped__``, which Hydra follows to
    name the job: ``segdeconv.tasks.train`` → ``train``, so logs are ``train.log`` as with train.py.
    """
    from importlib import import_module

    module, name = command.target.split(":")
    fn = getattr(import_module(f"segdeconv.tasks.{module}"), name)

    @functools.wraps(fn)
    def task(cfg: Any) -> Any:
        return command.finish(run_task(fn, cfg))

    return task


def run_command(name: str, args: Sequence[str], prog: Optional[str] = None) -> Any:
    """Run subcommand ``name`` with Hydra command-line ``args`` (overrides and flags); ``prog`` is how the
    user called it (messages quote it), ``segdeconv <name>`` by default."""
    import hydra

    command = COMMANDS[name]
    try:
        conf = config_dir()
    except UserError as e:
        _fail(str(e))
    prepare_hydra()
    sys.argv = [prog or f"segdeconv {name}", *args]  # Hydra parses sys.argv
    main = hydra.main(version_base="1.3", config_path=str(conf), config_name=command.config)(task_function(command))
    return run_hydra_main(main)


def script(name: str) -> Any:
    """A root script (``python train.py …``) = ``segdeconv <name> …``; ``check`` is ``check_data.py``."""
    return run_command(name, sys.argv[1:], prog=Path(sys.argv[0]).name)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``segdeconv <command> [args …]`` (console script and ``python -m segdeconv``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        sys.exit(2)
    if args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name = args[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        _fail(f"unknown command {name!r}; {hint}choose one of: {', '.join(COMMANDS)} (segdeconv --help)")
    run_command(name, args[1:])
