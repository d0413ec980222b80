"""Hydra multiruns (``-m``, e.g. the Optuna sweeper): settings checked before the first job, failed jobs
reported to the sweeper.

* :func:`check_sweeper` (``run_dir_guard.RunDirGuard.on_multirun_start``) refuses, before any trial runs, what
  Optuna would only reject mid-sweep with a traceback: ``n_trials < 1``, an unknown ``direction``, an
  inverted or non-positive-log interval, a storage in a read-only place. A failed trial is counted as
  failed and the sweep goes on (``hydra.sweeper.max_failure_rate`` defaults to 1.0 here; set it lower
  to stop a sweep whose trials fail).
* :func:`job_failed` (``cli.run_task`` in a multirun): a job ending in a user error prints one
  ``job N (overrides) failed: …`` line and raises :class:`JobFailed`, which Hydra records as the job's
  failure and Optuna as a failed trial — instead of ``sys.exit``, which ended the whole sweep.
* :func:`sweep_error_line`: when the sweep itself then fails (every trial failed: Optuna has no best
  trial; the basic sweeper re-raises a failed job), one ``error:`` line naming the failed jobs.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

from segdeconv.errors import ConfigError

JOBS: list[tuple[str, Optional[str]]] = []  # this process's multirun jobs: (label, error line or None)
DIRECTIONS = ("minimize", "maximize")


class JobFailed(Exception):
    """A multirun job that ended in a user error (its one-line message)."""


def in_multirun() -> bool:
    """True inside a job of ``-m`` (Hydra's MULTIRUN mode)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _label() -> str:
    from hydra.core.hydra_config import HydraConfig

    job = HydraConfig.get().job
    return f"job {job.num} ({' '.join(HydraConfig.get().overrides.task)})"


def job_done() -> None:
    """Record a job that completed."""
    JOBS.append((_label(), None))


def job_failed(line: str) -> NoReturn:
    """Report a failed job (one stderr line) and raise :class:`JobFailed` for Hydra and the sweeper."""
    label = _label()
    JOBS.append((label, line))
    print(f"{label} failed: {line}", file=sys.stderr, flush=True)
    raise JobFailed(line)


def sweep_error_line(e: BaseException) -> Optional[str]:
    """The one line for a sweep that failed because its jobs did: a job's :class:`JobFailed` re-raised by the
    sweeper (the basic sweeper does; Optuna past ``max_failure_rate``), or any error once every job failed
    (Optuna then has no best trial). None otherwise: another error is no job's, and keeps its traceback."""
    failed = [(label, line) for label, line in JOBS if line is not None]
    if not failed or not (isinstance(e, JobFailed) or len(failed) == len(JOBS)):
        return None
    label, line = failed[0]
    if len(failed) == len(JOBS):
        return f"every job of the sweep failed ({len(JOBS)}); {label}: {line}"
    return (f"{len(failed)} of {len(JOBS)} jobs of the sweep failed; {label}: {line} (Optuna: "
            f"hydra.sweeper.max_failure_rate=1.0 lets a sweep go on past failed trials)")


def check_sweeper(config: Any) -> None:
    """Refuse the Optuna sweeper settings Optuna would reject only mid-sweep (see the module docstring)."""
    from omegaconf import OmegaConf, open_dict, read_write

    sweeper = OmegaConf.select(config, "hydra.sweeper")
    if sweeper is None or "optuna" not in str(sweeper.get("_target_", "")).lower():
        return
    n = sweeper.get("n_trials")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={n} must be an integer ≥ 1; set hydra.sweeper.n_trials=20")
    for d in sweeper.direction if OmegaConf.is_list(sweeper.direction) else [sweeper.direction]:
        name = getattr(d, "name", str(d))
        if name not in DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.direction={name} is not an Optuna direction; use "
                              f"hydra.sweeper.direction=maximize (the val mIoU) or minimize")
    _check_storage(sweeper.get("storage"))
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    _check_intervals([*params, *config.hydra.overrides.task])
    if not any(o.startswith("hydra.sweeper.max_failure_rate=") for o in config.hydra.overrides.hydra):
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweeper.max_failure_rate = 1.0  # a failed trial is counted as failed; the sweep goes on


def _check_storage(storage: Any) -> None:
    """An sqlite storage must be creatable (its folder writable) and, if it exists, writable."""
    import os

    from segdeconv.engine.outputs import writable_location

    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return
    path = Path(storage[len("sqlite:///"):])
    writable_location(path.parent, "hydra.sweeper.storage")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"hydra.sweeper.storage={storage}: {path} is read-only for this user; pass a writable "
                          f"sqlite:///<path>.db")


def _check_intervals(overrides: list[str]) -> None:
    """``interval(lo, hi)`` / ``range(start, stop)`` sweeps must not be inverted (log intervals: lo > 0)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep

    for o in OverridesParser.create().parse_overrides(overrides):
        v, key = o.value(), o.get_key_element()
        if isinstance(v, IntervalSweep) and v.start is not None and v.end is not None:
            if v.start > v.end:
                raise ConfigError(f"{key}=interval({v.start}, {v.end}) is inverted (low > high); write "
                                  f"{key}=interval({v.end}, {v.start})")
            if "log" in v.tags and v.start <= 0:
                raise ConfigError(f"{key}=tag(log, interval({v.start}, {v.end})): a log interval needs low > 0")
        if isinstance(v, RangeSweep) and v.start is not None and v.stop is not None and v.step and \
                (v.stop - v.start) * v.step <= 0:
            raise ConfigError(f"{key}=range({v.start}, {v.stop}, step={v.step}) holds no value; check its order")
