"""A training run directory has one owner: the trainer holding ``<run dir>/train.lock``.

The lock is an exclusive POSIX record lock (``fcntl.lockf``) on that file, which names its holder
(pid, host, start time, command). The kernel drops it when the holder exits *or dies* (SIGKILL, OOM;
on NFS the lock server does when the client goes), so a crashed run never blocks its own resume: the
next trainer takes the lock over and logs the dead holder it replaces. Unlike ``flock``, a POSIX lock
belongs to the process, not to the file descriptor, so DataLoader workers forked from the trainer
(which inherit the descriptor and may outlive a killed trainer by seconds) never hold it. A second
trainer started on a held directory gets one error naming the holder. The file is removed on a clean
exit; a stale file left by a crash is harmless.

Semantics: exclusive per directory, non-blocking (refuse at once, never wait), re-entrant within a
process (the task and the :class:`~segdeconv.engine.trainer.Trainer` both take it), held by rank 0 only
under torchrun; local disks and NFS. (A POSIX lock is released when its process closes *any*
descriptor of the file, so this process never opens the lock file other than through :class:`RunLock`.)
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from segdeconv.errors import UserError

log = logging.getLogger("segdeconv")
LOCK_NAME = "train.lock"
_held: dict[Path, list] = {}  # resolved run dir -> [fd, depth] for the locks this process holds


def describe_holder(text: str) -> str:
    """``pid 123 on host h since 2026-11-30 10:00:00 (python train.py …)`` from a lock file's content."""
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on host {info['host']} since {info['started']} "
                f"({' '.join(info.get('argv', []))[:160]})")
    except (ValueError, KeyError, TypeError):
        return "an unknown process (unreadable lock file)"


def lock_holder(run_dir: Path) -> Optional[str]:
    """Who holds ``run_dir``'s lock right now (None: nobody; a file left by a crash is not a holder).
    Read-only: used to refuse early, before anything is written."""
    path = Path(run_dir) / LOCK_NAME
    if Path(run_dir).resolve() in _held:
        return None  # this process
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held
        return describe_holder(os.pread(fd, 4096, 0).decode(errors="replace"))
    except OSError:
        return None  # no locks on this file system: nothing to go by
    finally:
        os.close(fd)


def in_use_error(run_dir: Path, holder: str) -> UserError:
    return UserError(f"{run_dir} is in use by another training run ({holder}); wait for it to finish or stop "
                     f"it, or train into another directory (hydra.run.dir=…)")


class RunLock:
    """``with RunLock(run_dir):`` own ``run_dir`` for the block (see the module docstring)."""

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
        _held[key] = [self._acquire(self.run_dir / LOCK_NAME), 1]
        return self

    def _acquire(self, path: Path) -> int:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                holder = describe_holder(os.pread(fd, 4096, 0).decode(errors="replace"))
                os.close(fd)
                raise in_use_error(self.run_dir, holder) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                log.warning("%s: this file system has no file locks; the run directory is not protected "
                            "against a second trainer", path)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file that its previous holder removed while we opened it
                break
            os.close(fd)
        previous = os.pread(fd, 4096, 0).decode(errors="replace")
        if previous.strip():
            log.warning("%s: taking over the lock of a run that ended without releasing it (%s, no longer "
                        "running)", path, describe_holder(previous))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "argv": [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        return fd

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        key = self.run_dir.resolve()
        entry = _held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)  # still holding: nobody can be mid-takeover
            os.close(entry[0])


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
