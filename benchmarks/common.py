"""Shared benchmark plumbing: run a command in a subprocess, get wall time and its own peak RSS."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]


class Measured(NamedTuple):
    wall_s: float
    rss_gib: float  # the child's peak resident set (ru_maxrss)
    cpu_s: float  # the child's user + system CPU time, all threads: robust to other load on the machine
    out: str


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> Measured:
    """Wall time, peak RSS, CPU time and stdout of ``cmd``; RSS and CPU from ``os.wait4`` (that child only)."""
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
        return Measured(dt, usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime, out.read())


def load_line() -> str:
    """The machine's load average (1, 5, 15 min): how much else was running (shared machines)."""
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


MALLOCS = {"glibc": None, "jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}


def malloc_env(name: str) -> dict:
    """``LD_PRELOAD`` for an allocator (Debian: libjemalloc2, libtcmalloc-minimal4); glibc: none."""
    lib = MALLOCS[name]
    if lib is None:
        return {}
    path = next((p for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")
                 if (p := Path(d) / lib).exists()), None)
    if path is None:
        raise SystemExit(f"--malloc {name}: {lib} not found; install it (apt-get install "
                         f"{'libjemalloc2' if name == 'jemalloc' else 'libtcmalloc-minimal4'})")
    return {"LD_PRELOAD": str(path)}


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
