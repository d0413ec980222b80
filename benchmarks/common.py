"""Shared benchmark plumbing: run a command in a subprocess (wall time, its own peak RSS; or capped by a timeout)."""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

REPO = Path(__file__).resolve().parents[1]


class Measured(NamedTuple):
    wall_s: float
    rss_gib: float  # the child's peak resident set (ru_maxrss)
    cpu_s: float  # the child's user + system CPU time, all threads: robust to other load on the machine
    out: str


def _vm_hwm_kib(pid: int) -> int:
    """The process's own peak RSS so far (``VmHWM``: reset at ``exec``), 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM")), 0)
    except OSError:
        return 0


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> Measured:
    """Wall time, peak RSS, CPU time and stdout of ``cmd`` (that child only; CPU from ``os.wait4``).

    Peak RSS: Linux charges the spawning process's own high-water mark to the child at ``exec``
    (``ru_maxrss`` = max(parent's peak so far, child's own)), so ``ru_maxrss`` is used only when it
    exceeds this process's; otherwise the child's ``VmHWM``, polled every 20 ms while it runs."""
    import resource
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=err, text=True)
        polled = 0
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            polled = max(polled, _vm_hwm_kib(p.pid))
            time.sleep(0.02)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.read()[-2000:]}")
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = max(usage.ru_maxrss, polled) if usage.ru_maxrss > own else polled
        return Measured(dt, peak / 2**20, usage.ru_utime + usage.ru_stime, out.read())


def run_capped(cmd: list[str], timeout_s: float, env: dict | None = None, cwd: Path = REPO,
               every: Callable[[], None] | None = None) -> tuple[int | None, str]:
    """Exit status (None: killed at ``timeout_s``) and stdout + stderr of ``cmd``. It runs in its own
    process group, killed whole (torchrun's ranks, torch.compile's workers); ``every()`` runs each 0.5 s."""
    import signal
    import tempfile

    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        end = time.monotonic() + timeout_s
        while p.poll() is None and time.monotonic() < end:
            if every is not None:
                every()
            time.sleep(0.5)
        killed = p.poll() is None
        if killed:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        out.seek(0)
        return (None if killed else p.returncode), out.read()


def cause_line(text: str) -> str:
    """The cause in a failed command's output: an ``error: …`` line (segdeconv's), else the last
    ``…Error: …`` line that is not torchrun's ChildFailedError summary, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("error:")]
    raised = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception)\b.*: ", ln) and "ChildFailedError" not in ln]
    return (ours or raised or lines or ["(no output)"])[-1][:200]


def nvidia_smi(query: str) -> str:
    """First line of ``nvidia-smi --query-gpu=<query>`` (csv, no units); "" without nvidia-smi."""
    try:
        r = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else ""


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
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{datetime.date.today()} · {cpu} · {os.cpu_count()} cores · {describe_cpu()} · "
            f"torch {torch.__version__} · Python {platform.python_version()}")


PY = sys.executable


def compose(overrides: list[list[str]]) -> list:
    """train.py's composed and checked config for each override list, or the exception that raised."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from segdeconv.cli import register_resolvers
    from segdeconv.config import check_config

    register_resolvers()
    out: list = []
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        for over in overrides:
            try:
                cfg = hydra_compose(config_name="train", overrides=over)
                check_config(cfg)
            except Exception as e:  # noqa: BLE001 — reported in the row
                cfg = e
            out.append(cfg)
    return out
