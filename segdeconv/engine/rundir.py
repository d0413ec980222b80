"""A training run directory has one owner: the process holding ``<run dir>/train.lock``.

The lock is a :class:`filelock.FileLock` (``flock`` on Unix, ``LockFileEx`` on Windows, a soft marker where a
file system has neither), taken once per run and re-entrant within the process; ``train.lock.json``
beside it names the holder (pid, host, start time, command). The operating system drops the lock when
its holder exits *or dies* (SIGKILL, OOM), and filelock closes the lock's descriptor in forked children,
so a DataLoader worker that outlives a killed trainer never holds it: a crashed run never blocks its own
resume, which takes the lock over and logs the dead holder it replaces. A second trainer started on a
held directory gets one error naming the holder. A clean exit removes both files.

Semantics: exclusive per directory, non-blocking (refuse at once, never wait), held by rank 0 only under
torchrun. :func:`lock_holder` asks the same lock, read-only, so the Hydra callback
(:mod:`segdeconv.run_dir_guard`) can refuse a held directory before Hydra writes into it.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Optional

from filelock import FileLock, Timeout

from segdeconv.errors import UserError

log = logging.getLogger("segdeconv")
LOCK_NAME = "train.lock"  # the lock itself (empty)
HOLDER_NAME = "train.lock.json"  # who holds it: written once the lock is held, removed on release
_held: dict[Path, list] = {}  # resolved run dir -> [FileLock, depth] for the locks this process holds


def describe_holder(text: str) -> str:
    """``pid 123 on host h since 2026-11-30 10:00:00 (python train.py …)`` from a holder record."""
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on host {info['host']} since {info['started']} "
                f"({' '.join(info.get('argv', []))[:160]})")
    except (ValueError, KeyError, TypeError):
        return "an unknown process (no readable train.lock.json)"


def _holder_text(run_dir: Path) -> str:
    try:
        return (run_dir / HOLDER_NAME).read_text(errors="replace")
    except OSError:
        return ""


def lock_holder(run_dir: Path) -> Optional[str]:
    """Who holds ``run_dir``'s lock right now (None: nobody, or this process; a record left by a crash
    is not a holder). Takes and drops the lock at once: used to refuse early, before anything is written."""
    run_dir = Path(run_dir)
    if run_dir.resolve() in _held or not (run_dir / LOCK_NAME).is_file():
        return None
    probe = FileLock(str(run_dir / LOCK_NAME), thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return describe_holder(_holder_text(run_dir))
    except OSError:
        return None  # an unlockable place (read-only): nothing to go by; the writes will say so
    probe.release()
    return None


def in_use_error(run_dir: Path, holder: str) -> UserError:
    return UserError(f"{run_dir} is in use by another training run ({holder}); wait for it to finish or stop "
                     f"it, or train into another directory (hydra.run.dir=…)")


class RunLock:
    """``with RunLock(run_dir):`` own ``run_dir`` for the block (see the module docstring); nested blocks
    on one directory in one process share the one lock."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled

    def __enter__(self) -> "RunLock":
        if not self.enabled:
            return self
        key = self.run_dir.resolve()
        if key in _held:
            _held[key][1] += 1
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _held[key] = [self._acquire(), 1]
        return self

    def _acquire(self) -> FileLock:
        lock = FileLock(str(self.run_dir / LOCK_NAME), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise in_use_error(self.run_dir, describe_holder(_holder_text(self.run_dir))) from None
        previous = _holder_text(self.run_dir)
        if previous.strip():
            log.warning("%s: taking over the lock of a run that ended without releasing it (%s, no longer "
                        "running)", self.run_dir / LOCK_NAME, describe_holder(previous))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "argv": [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]}
        tmp = self.run_dir / f".{HOLDER_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(me))
        os.replace(tmp, self.run_dir / HOLDER_NAME)  # a reader sees the old record or the new, never half
        return lock

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        key = self.run_dir.resolve()
        entry = _held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            for name in (HOLDER_NAME, LOCK_NAME):  # still holding: a waiter that opened the old file retries
                with suppress(OSError):
                    (self.run_dir / name).unlink(missing_ok=True)
            entry[0].release()


# ------------------------------------------------------------------ a refused run leaves nothing behind
_started: dict[str, object] = {}  # this process's run dir: {"dir": Path, "before": names in it before, or None}


def note_run_dir(run_dir: Path, created: bool = False) -> None:
    """Remember what ``run_dir`` held before this run (``created``: this run made it); called by
    ``run_dir_guard.RunDirGuard`` before Hydra writes anything there."""
    run_dir = Path(run_dir)
    _started.update(dir=run_dir, before=set(os.listdir(run_dir)) if run_dir.is_dir() and not created else None)


def discard_refused_run() -> Optional[Path]:
    """Remove what a run that ended in a user error created in its run dir — Hydra's ``.hydra/`` record,
    its log, the folder itself if this run made it — so the corrected command can use the same dir.
    A run that wrote checkpoints is kept (it can be resumed), and so is a dir another trainer holds.
    Returns the dir cleaned, if any."""
    import shutil

    run_dir, recorded = _started.pop("dir", None), _started.pop("before", None)
    before = recorded if isinstance(recorded, set) else None  # note_run_dir stores a set of names or None
    if not isinstance(run_dir, Path) or not run_dir.is_dir() or any((run_dir / "checkpoints").glob("*.pt")) \
            or lock_holder(run_dir):
        return None
    _close_log_files(run_dir)
    new = [run_dir / n for n in os.listdir(run_dir) if before is None or n not in before]
    for p in new:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    if before is None:
        try:
            run_dir.rmdir()  # only when empty: never another run's files
        except OSError:
            pass
    return run_dir


def _close_log_files(run_dir: Path) -> None:
    """Close (and detach) the logging file handlers writing inside ``run_dir`` (Hydra's ``<task>.log``)."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in list(lg.handlers):
            name = getattr(h, "baseFilename", None)
            if name and Path(name).resolve().is_relative_to(run_dir.resolve()):
                lg.removeHandler(h)
                h.close()
