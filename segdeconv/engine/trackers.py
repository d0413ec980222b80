"""Experiment trackers beside TensorBoard — MLflow and Weights & Biases — and the :class:`Loggers` fan-out.

Every tracker has :class:`~segdeconv.engine.logger.TBLogger`'s interface (``scalars``, ``metrics``,
``images``, ``close``) and records the same names and values (``train/loss``, ``train/lr``,
``val/mIoU``, ``val_iou/<class>``, …). :func:`open_loggers` builds the ones the resolved config's
``logger`` node selects (``logger=[tensorboard,mlflow]``, conf/logger/); the trainer calls it once on
rank 0. MLflow and W&B are optional extras: ``pip install "segdeconv[mlflow]"`` / ``"segdeconv[wandb]"``.
"""
from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, cast

from segdeconv.engine.logger import TBLogger, finite_scalars, image_grid, metric_scalars
from segdeconv.engine.tracker_checks import check_wandb, read_run_record, tracker_error
from segdeconv.engine.writer import write_json
from segdeconv.errors import ConfigError
from segdeconv.knobs import flatten

_EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}  # logger name → the module it needs (= the extra's name)


def run_label(out_dir: Path) -> str:
    """A run's name from its dir: ``outputs/train/2026-12-01_10-00-00`` → ``train/2026-12-01_10-00-00``,
    a sweep job ``multirun/train/<stamp>/3`` → ``<stamp>/3``."""
    return "/".join(Path(out_dir).resolve().parts[-2:])


class MLflowLogger:
    """Scalars as MLflow metrics (per step), the flattened resolved config as params, validation grids as
    PNG artifacts, and ``checkpoints/best.pt`` as an artifact at :meth:`close`.

    Uses :class:`mlflow.tracking.MlflowClient` (no global active run, so sweep jobs in one process stay
    apart). ``tracking_uri=None``: ``$MLFLOW_TRACKING_URI``, else MLflow's default (``sqlite:///mlflow.db``
    in the working directory, artifacts in ``./mlruns``; recent MLflow 3 releases refuse a plain
    ``./mlruns`` file store unless ``MLFLOW_ALLOW_FILE_STORE=true``). A resumed run (``purge_step`` set)
    continues the MLflow run recorded in ``<out_dir>/mlflow_run.json``.
    """

    _NAME = re.compile(r"[^\w\-. :/]")  # characters MLflow rejects in metric names

    def __init__(self, out_dir: Path, palette: Sequence[Sequence[int]], config: Mapping[str, Any],
                 purge_step: Optional[int] = None, tracking_uri: Optional[str] = None,
                 experiment: str = "segdeconv", run_name: Optional[str] = None, log_checkpoint: bool = True) -> None:
        self.out, self.palette, self.log_checkpoint = Path(out_dir), palette, log_checkpoint
        try:
            self._open(config, purge_step, tracking_uri, experiment, run_name)
        except Exception as e:  # the client's failure, by type, as one line naming the key
            err = tracker_error(e, "logger.mlflow.tracking_uri", tracking_uri or self.__dict__.get("uri"))
            if err is None:
                raise
            raise err from None

    def _open(self, config: Mapping[str, Any], purge_step: Optional[int], tracking_uri: Optional[str],
              experiment: str, run_name: Optional[str]) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.uri = self.client.tracking_uri
        record = self.out / "mlflow_run.json"
        previous = read_run_record(record) if purge_step is not None else {}
        if previous.get("tracking_uri") == self.uri:
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        found = self.client.get_experiment_by_name(experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            raise ConfigError(f"logger.mlflow.experiment={experiment} was deleted in MLflow ({self.uri}); restore "
                              f"it (mlflow experiments restore --experiment-id {found.experiment_id}) or choose "
                              f"another logger.mlflow.experiment=…")
        exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        run = self.client.create_run(exp_id, run_name=run_name or run_label(self.out),
                                     tags={"segdeconv.run_dir": str(self.out.resolve())})
        self.run_id = run.info.run_id
        self._log_params({k: str(v) for k, v in flatten(config).items()})  # MLflow params: flat strings
        write_json(record, {"tracking_uri": self.uri, "run_id": self.run_id}, "MLflow run record")

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        items = [Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def scalars(self, values: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(self._NAME.sub("_", k), v, now, step) for k, v in finite_scalars(values).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def metrics(self, m: dict, step: int) -> None:
        self.scalars(metric_scalars(m), step)

    def images(self, triples: list, step: int, tag: str = "val/image_label_prediction") -> None:
        grid = image_grid(triples, self.palette)
        if grid is not None:
            self.client.log_image(self.run_id, grid, artifact_file=f"{tag}/step_{step:08d}.png")

    def close(self) -> None:
        best = self.out / "checkpoints" / "best.pt"
        if self.log_checkpoint and best.is_file():
            self.client.log_artifact(self.run_id, str(best), artifact_path="checkpoints")
        self.client.set_terminated(self.run_id, status="FINISHED")


class WandbLogger:
    """Scalars and validation grids as a Weights & Biases run, offline by default.

    ``mode="offline"`` writes ``<out_dir>/wandb/offline-run-<stamp>-<id>/`` and needs no account or
    network (``wandb sync <that dir>`` uploads it later); the resolved config is the run's config.
    """

    def __init__(self, out_dir: Path, palette: Sequence[Sequence[int]], config: Mapping[str, Any],
                 purge_step: Optional[int] = None, project: str = "segdeconv", mode: str = "offline",
                 run_name: Optional[str] = None) -> None:
        import wandb

        check_wandb({"mode": mode})  # also in check_config: an online run needs a key, looked for locally
        self.wandb, self.palette = wandb, palette
        wandb_mode = cast(Literal["online", "offline", "disabled"], mode)  # check_wandb refused any other mode
        self.run = wandb.init(project=project, dir=str(out_dir), mode=wandb_mode, config=dict(config),
                              name=run_name or run_label(out_dir))

    def scalars(self, values: dict, step: int) -> None:
        values = finite_scalars(values)
        if values:
            self.run.log(values, step=step)

    def metrics(self, m: dict, step: int) -> None:
        self.scalars(metric_scalars(m), step)

    def images(self, triples: list, step: int, tag: str = "val/image_label_prediction") -> None:
        grid = image_grid(triples, self.palette)
        if grid is not None:
            self.run.log({tag: self.wandb.Image(grid)}, step=step)

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """Fans every call out to each logger; :meth:`close` closes them all (the first error is re-raised)."""

    def __init__(self, loggers: Sequence[Any]) -> None:
        self.loggers = list(loggers)

    def scalars(self, values: dict, step: int) -> None:
        for lg in self.loggers:
            lg.scalars(values, step)

    def metrics(self, m: dict, step: int) -> None:
        for lg in self.loggers:
            lg.metrics(m, step)

    def images(self, triples: list, step: int, tag: str = "val/image_label_prediction") -> None:
        for lg in self.loggers:
            lg.images(triples, step, tag=tag)

    def close(self) -> None:
        errors = []
        for lg in self.loggers:
            try:
                lg.close()
            except Exception as e:  # close the others first: no tracker may lose its data for another's failure
                errors.append(e)
        if errors:
            raise errors[0]


def _tensorboard(out_dir: Path, palette: Sequence[Sequence[int]], config: Mapping[str, Any],
                 purge_step: Optional[int] = None) -> TBLogger:
    return TBLogger(out_dir / "tb", palette, purge_step=purge_step)


FACTORIES: dict[str, Callable[..., Any]] = {"tensorboard": _tensorboard, "mlflow": MLflowLogger,
                                            "wandb": WandbLogger}


def logger_spec(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The config's ``logger`` node as ``{name: options}``, checked; a config without one (an older
    checkpoint's) means TensorBoard only."""
    spec = config.get("logger")
    spec = {"tensorboard": {}} if spec is None else {str(k): dict(v or {}) for k, v in spec.items()}
    unknown = sorted(set(spec) - set(FACTORIES))
    if unknown:
        raise ConfigError(f"logger.{unknown[0]} is not a known logger; choose from {', '.join(FACTORIES)} "
                          f"(e.g. logger=[tensorboard,mlflow])")
    for name, options in spec.items():
        known = set(inspect.signature(FACTORIES[name]).parameters) - {"out_dir", "palette", "config", "purge_step"}
        extra = sorted(set(options) - known)
        if extra:
            raise ConfigError(f"logger.{name}.{extra[0]} is not a {name} option; use one of: "
                              f"{', '.join(sorted(known)) or 'none'} (conf/logger/{name}.yaml)")
        module = _EXTRAS.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger={name} needs the {module} package, which is not installed; "
                              f'pip install "segdeconv[{module}]" (or drop {name} from logger=[…])')
    return spec


def open_loggers(config: Mapping[str, Any], out_dir: Path, palette: Sequence[Sequence[int]],
                 purge_step: Optional[int] = None) -> Loggers:
    """Every logger ``config["logger"]`` selects, writing under ``out_dir``, as one :class:`Loggers`.

    ``config`` is the resolved config (a plain dict, as the trainer holds it). All are checked before any
    is opened; if one fails to open, those already open are closed.
    """
    opened: list[Any] = []
    try:
        for name, options in logger_spec(config).items():
            opened.append(FACTORIES[name](Path(out_dir), palette, config, purge_step, **options))
    except BaseException:
        Loggers(opened).close()
        raise
    return Loggers(opened)
