"""The trackers' settings checked before anything is built, and their clients' failures as one line.

Where a user value meets MLflow or W&B, a bad value is refused here with the key and the fix —
``check_loggers`` runs in :func:`segdeconv.config.check_config` — and what only the client can tell
(a deleted experiment, a store it cannot open) is translated by :func:`tracker_error` at the boundary
(:class:`~segdeconv.engine.trackers.MLflowLogger`). Nothing here contacts a host beyond one TCP connect
to an ``http(s)`` tracking URI, which fails at once when nothing listens there.
"""
from __future__ import annotations

import json
import netrc
import os
import socket
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urlparse

from segdeconv.errors import ConfigError

URI = "logger.mlflow.tracking_uri"
SCHEMES = ("", "file", "databricks", "databricks-uc", "uc", "http", "https", "postgresql", "mysql", "sqlite", "mssql")
WANDB_MODES = ("offline", "online", "disabled")


def check_loggers(spec: Mapping[str, Mapping[str, Any]], out_dir: Optional[Path], resuming: bool) -> None:
    """``spec`` (``{name: options}``, :func:`~segdeconv.engine.trackers.logger_spec`) checked without writing."""
    if "mlflow" in spec:
        check_mlflow(spec["mlflow"], out_dir if resuming else None)
    if "wandb" in spec:
        check_wandb(spec["wandb"])


def check_mlflow(options: Mapping[str, Any], out_dir: Optional[Path]) -> None:
    """Experiment name, tracking URI (scheme, reachable, writable), and on resume the run record."""
    experiment = options.get("experiment", "segdeconv")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"logger.mlflow.experiment={experiment!r} is empty; name the MLflow experiment, "
                          f"e.g. logger.mlflow.experiment=segdeconv")
    uri = options.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or _default_uri()
    scheme = urlparse(str(uri)).scheme
    if scheme not in _schemes():
        raise ConfigError(f"{URI}={uri}: MLflow has no tracking store for {scheme}:// URIs; use http://host:5000, "
                          f"sqlite:///path/mlflow.db or a local folder")
    if scheme in ("http", "https"):
        _reachable(str(uri))
    elif scheme in ("sqlite", "file", ""):
        _writable_store(str(uri), scheme)
    if out_dir is not None:
        read_run_record(Path(out_dir) / "mlflow_run.json")


def _default_uri() -> str:
    """MLflow's own default (``sqlite:///mlflow.db`` in the working directory, MLflow 3)."""
    try:
        from mlflow.tracking import get_tracking_uri

        return str(get_tracking_uri())
    except ImportError:
        return ""


def _schemes() -> tuple[str, ...]:
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return tuple(_tracking_store_registry._registry)
    except (ImportError, AttributeError):
        return SCHEMES


def _reachable(uri: str) -> None:
    """One TCP connect to the server (5 s at most); MLflow's own client would retry for minutes."""
    u = urlparse(uri)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname or "", port), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"{URI}={uri} is unreachable ({e.strerror or type(e).__name__}); start the MLflow server "
                          f"(mlflow server --port {port}) or fix the URI, e.g. {URI}=sqlite:///mlflow.db") from None


def _writable_store(uri: str, scheme: str) -> None:
    """A local store (sqlite file or folder) must be in a place this process may write to."""
    from segdeconv.engine.outputs import writable_location

    path = Path(uri[len("sqlite:///"):] if scheme == "sqlite" else urlparse(uri).path if scheme == "file" else uri)
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        return  # sqlite:// (in memory)
    folder = path.parent if scheme == "sqlite" else path
    writable_location(folder, URI)
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{URI}={uri}: {path} is read-only for this user; pass a writable {URI}=…")


def read_run_record(record: Path) -> dict[str, Any]:
    """``<run dir>/mlflow_run.json`` (the MLflow run a resume continues); {} when absent."""
    if not record.is_file():
        return {}
    try:
        data = json.loads(record.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
            raise ValueError("no run_id")
    except (ValueError, OSError) as e:
        raise ConfigError(f"{record} is unreadable ({type(e).__name__}: {str(e)[:80]}); delete it to log the resumed "
                          f"run as a new MLflow run, or restore it from a backup") from None
    return data


def check_wandb(options: Mapping[str, Any]) -> None:
    """The mode, and for ``online`` an API key present (checked here: W&B would otherwise go to the network)."""
    mode = options.get("mode", "offline")
    if mode not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={mode!r} is not a W&B mode; use offline, online or disabled")
    if mode == "online" and not _wandb_key():
        raise ConfigError("logger.wandb.mode=online needs a W&B API key and none is set: export WANDB_API_KEY=… "
                          "(or run `wandb login`), or log offline with logger.wandb.mode=offline (wandb sync later)")


def _wandb_key() -> bool:
    """WANDB_API_KEY, or a ~/.netrc entry for the W&B host (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def tracker_error(e: BaseException, key: str, value: Any) -> Optional[ConfigError]:
    """A tracker client's failure (by type: MLflow's, the database's, the network's, the OS's) as one line
    naming ``key``; None for anything else (a bug: traceback)."""
    kinds: list[type] = [OSError]
    for module, name in (("mlflow.exceptions", "MlflowException"), ("sqlalchemy.exc", "SQLAlchemyError"),
                         ("requests.exceptions", "RequestException")):
        try:
            kinds.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    if not isinstance(e, tuple(kinds)):
        return None
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return ConfigError(f"{key}={value}: MLflow failed ({type(e).__name__}: {first}); check {key} "
                       f"(and logger.mlflow.experiment)")
