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
