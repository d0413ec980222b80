"""Entry-point glue: run a task, print user mistakes as one line, exit non-zero (no traceback)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

from omegaconf.errors import OmegaConfBaseException

from segdeconv.errors import UserError


def run_task(fn: Callable[[Any], Any], cfg: Any) -> Any:
    """Call ``fn(cfg)``; a :class:`UserError` or bad config value becomes ``error: …`` + exit 2.

    ``HYDRA_FULL_ERROR=1`` re-raises with the full traceback for debugging.
    """
    logging.getLogger("segdeconv").setLevel(logging.INFO)
    try:
        return fn(cfg)
    except (UserError, OmegaConfBaseException) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        msg = str(e).strip().splitlines()
        text = msg[0] if isinstance(e, UserError) else _omegaconf_message(e)
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


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


def rank_tag() -> str:
    """``[rank N]`` under torchrun (for log lines and file names), empty for a single process."""
    return f"[rank {os.environ.get('RANK', '0')}]" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def rank_suffix() -> str:
    """``_rankN`` under torchrun (per-rank log file names), empty for a single process."""
    return f"_rank{os.environ.get('RANK', '0')}" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def register_resolvers() -> None:
    """OmegaConf resolvers used by conf/*.yaml (``${run_stamp:}``, ``${rank_tag:}``, ``${rank_suffix:}``)."""
    from omegaconf import OmegaConf

    for name, fn in (("run_stamp", run_stamp), ("rank_tag", rank_tag), ("rank_suffix", rank_suffix)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
