"""Shared benchmark plumbing: run a command in a subprocess, get wall time and its own peak RSS."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GiB, stdout) of ``cmd``; RSS from ``os.wait4`` (that child only)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.read()[-2000:]}")
        return dt, usage.ru_maxrss / 2**20, out.read()


def machine_line() -> str:
    """Date, CPU model/capability and torch version for the table header."""
    import torch

    from segdeconv.engine.runtime import describe_cpu

    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{datetime.date.today()} · {cpu} · {os.cpu_count()} cores · {describe_cpu()} · "
            f"torch {torch.__version__} · Python {platform.python_version()}")


PY = sys.executable
