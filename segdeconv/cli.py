"""Entry-point glue: run a task, print user mistakes as one line, exit non-zero (no traceback).

Covers the task's own errors (:func:`run_task`, which first range-checks the config) and Hydra's, raised
before the task runs (unknown config option, misspelled key, unparsable override, unwritable run dir:
:func:`run_hydra_main`, through Hydra's public ``HYDRA_FULL_ERROR``; no private Hydra API is patched);
:class:`segdeconv.run_dir_guard.RunDirGuard` refuses another run's directory before Hydra writes into it.
``HYDRA_FULL_ERROR=1`` shows the full traceback instead.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from segdeconv.errors import UserError

_PACKAGE = Path(__file__).resolve().parent

log = logging.getLogger("segdeconv")


def run_task(fn: Callable[[Any], Any], cfg: Any) -> Any:
    """``check_config(cfg)`` then ``fn(cfg)``; a :class:`UserError` or bad config value becomes
    ``error: …`` + exit 2 (:func:`_fail`), or in a multirun the job's failure, reported to the sweeper
    (:mod:`segdeconv.sweep`).

    ``HYDRA_FULL_ERROR=1`` re-raises with the full traceback for debugging.
    """
    from segdeconv import sweep
    from segdeconv.config import check_config

    logging.getLogger("segdeconv").setLevel(logging.INFO)
    try:
        check_config(cfg)
        result = fn(cfg)
    except (UserError, OmegaConfBaseException, OSError, MemoryError) as e:
        if _full_error():
            raise
        _task_failed(task_error_line(e))
    except RuntimeError as e:  # torch.OutOfMemoryError; any other RuntimeError is a bug: traceback
        if _full_error() or type(e).__name__ != "OutOfMemoryError":
            raise
        _task_failed(task_error_line(e))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if sweep.in_multirun():
        sweep.job_done()
    return result


_USER_FULL_ERROR = "SEGDECONV_FULL_ERROR"  # the user's HYDRA_FULL_ERROR while run_hydra_main sets Hydra's


def _full_error() -> bool:
    """``HYDRA_FULL_ERROR=1`` as the user set it: full tracebacks instead of one-line errors."""
    return os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR")) == "1"


def _task_failed(line: str) -> NoReturn:
    """A task ended in a user error: in a multirun the job fails (the sweep goes on), else :func:`_fail`."""
    from segdeconv import sweep

    if sweep.in_multirun():
        sweep.job_failed(line)
    _fail(line)


def _fail(line: str) -> NoReturn:
    """Print ``error: <line>`` on a line of its own (after any progress bar), remove what this refused run
    created in its run dir (:func:`~segdeconv.engine.rundir.discard_refused_run`), exit 2."""
    from segdeconv.engine.logger import end_progress
    from segdeconv.engine.rundir import discard_refused_run

    end_progress()
    print(f"error: {line}", file=sys.stderr, flush=True)
    discard_refused_run()
    sys.exit(2)


_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")


def first_line(e: BaseException) -> str:
    """The exception's first message line; for an error re-raised by a DataLoader worker (message:
    ``Caught X in DataLoader worker process N.`` + traceback), the original exception's message."""
    text = str(e).strip()
    m = _WORKER.match(text)
    if m:
        last = next(line for line in reversed(text.splitlines()) if line.strip())
        _, sep, msg = last.partition(f"{m.group(1)}: ")
        return (msg if sep else last).strip()
    return text.splitlines()[0] if text else type(e).__name__


def task_error_line(e: BaseException) -> str:
    """One line for an error the task raised (names the file/key and the fix)."""
    if isinstance(e, OmegaConfBaseException):
        return _omegaconf_message(e)
    if type(e).__name__ == "OutOfMemoryError" or isinstance(e, MemoryError):
        return (f"out of memory ({first_line(e)[:120]}); lower dataset.batch_size (keep the effective batch with "
                f"trainer.accumulate_grad_batches), use a smaller model.encoder.width or trainer.precision=bf16")
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror}; check the path, its permissions and the free disk space"
    return first_line(e)


def config_dir() -> Path:
    """The config tree: a wheel's ``segdeconv/conf``, else the checkout's ``conf/`` beside the package."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise UserError(f"no config tree: neither {_PACKAGE / 'conf'} nor {_PACKAGE.parent / 'conf'} holds train.yaml; "
                    f'reinstall segdeconv (pip install segdeconv) or run from a checkout that has conf/')


def _group_options(group: str) -> list[str]:
    """The option names of config group ``group`` (its conf/<group>/*.yaml), [] if unknown."""
    try:
        folder = config_dir() / group
    except UserError:
        return []
    return sorted(p.stem for p in folder.glob("*.yaml")) if group and folder.is_dir() else []


def hydra_error_line(e: BaseException) -> Optional[str]:
    """One line for Hydra's own errors (before the task runs); None for anything else."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    if isinstance(e, MissingConfigException):
        found = re.search(r"Could not load '([\w/]+)/([^'/]+)'", str(e))  # list-valued groups: logger=[…]
        missing = str(e.missing_cfg_file or "") or ("/".join(found.groups()) if found else "")
        options = e.options if e.options is not None else _group_options(missing.rpartition("/")[0])
        if "/" in missing and options:
            group, name = missing.rsplit("/", 1)
            return f"{group}={name} is not a known {group} option; choose one of: {', '.join(options)}"
        return f"{first_line(e)}; check the config name and conf/ directory"
    if isinstance(e, OverrideParseException):
        return (f"cannot parse the override {e.override!r} ({first_line(e)}); write key=value, and quote values "
                f"with brackets or spaces, e.g. 'dataset.image_size=[360,480]'")
    if isinstance(e.__cause__, (ConfigAttributeError, ConfigKeyError)):
        return _unknown_key_message(e.__cause__)
    if isinstance(e, OSError) and e.strerror:
        return (f"cannot create the run directory {e.filename}: {e.strerror}; pass a writable "
                f"hydra.run.dir=<dir> (and output_dir)")
    if isinstance(e, (HydraException, OmegaConfBaseException)):
        return _omegaconf_message(e) if isinstance(e, OmegaConfBaseException) else first_line(e)
    return None


def _unknown_key_message(e: OmegaConfBaseException) -> str:
    """``trainer.max_epoch is not a config key (did you mean trainer.max_epochs?) …``."""
    full = str(getattr(e, "full_key", "") or getattr(e, "key", ""))
    parent, key = getattr(e, "parent_node", None), str(getattr(e, "key", full.rsplit(".", 1)[-1]))
    prefix = full[: -len(key)] if full.endswith(key) else ""
    keys = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
    close = [prefix + k for k in difflib.get_close_matches(key, keys, n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(close)}?" if close else f"`python {_script()} --cfg job` lists the keys"
    return f"{full} is not a config key ({hint}); fix the spelling, or write +{full}=… to add a new key"


def _script() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else "train.py"


def run_hydra_main(main: Callable[[], Any]) -> Any:
    """Run a ``@hydra.main`` function with Hydra's own errors — raised before the task runs (unknown config
    option, misspelled key, unparsable override, unwritable run dir) or by a failed sweep — as one
    ``error: …`` line, exit 2 (:func:`_fail`); any other error keeps its traceback.

    Public API only: Hydra's documented ``HYDRA_FULL_ERROR=1`` makes it re-raise instead of printing its own
    multi-line report and exiting 1, so it is set for the call and the exception caught here. The user's own
    ``HYDRA_FULL_ERROR`` (:func:`_full_error`: the full traceback) is kept in ``SEGDECONV_FULL_ERROR``, which
    child processes (joblib sweep jobs) inherit too; both are restored afterwards.
    """
    saved = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", _USER_FULL_ERROR)}
    os.environ[_USER_FULL_ERROR] = "1" if _full_error() else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return main()
    except Exception as e:
        from segdeconv.sweep import sweep_error_line

        line = None if _full_error() else (sweep_error_line(e) or hydra_error_line(e))
        if line is None:
            raise
        _fail(line)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _omegaconf_message(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or ""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if type(e).__name__ == "MissingMandatoryValue":
        return f"{key} is required but not set; pass {key}=… on the command line"
    return f"{key}: {first}" if key else first


def run_stamp() -> str:
    """The ``<date>_<time>`` naming a run dir. Under torchrun all ranks of a node get the same one:
    the launcher's (parent process's) start time, so they share one Hydra run dir."""
    import time

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        try:
            ticks = int(open(f"/proc/{os.getppid()}/stat").read().rsplit(")", 1)[1].split()[19])
            boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
            return time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(boot + ticks / os.sysconf("SC_CLK_TCK")))
        except (OSError, ValueError, IndexError, StopIteration):
            pass  # not Linux: fall back to the current time (pass hydra.run.dir=… to be sure)
    return time.strftime("%Y-%m-%d_%H-%M-%S")


def register_resolvers() -> None:
    """OmegaConf resolvers used by conf/hydra/default.yaml (``${run_stamp:}``, ``${rank_tag:}``,
    ``${rank_suffix:}``)."""
    from omegaconf import OmegaConf

    from segdeconv.engine.distributed import env_info

    for name, fn in (("run_stamp", run_stamp), ("rank_tag", lambda: env_info().tag),
                     ("rank_suffix", lambda: env_info().suffix)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def prepare_hydra() -> None:
    """Called once by each entry script before ``@hydra.main`` runs: registers the resolvers. Explicit (not
    an import side effect) so importing segdeconv never changes Hydra's behaviour for other programs."""
    register_resolvers()
