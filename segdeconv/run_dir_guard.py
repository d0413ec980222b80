"""The run directory's one owner, enforced before Hydra writes into it: :class:`RunDirGuard`, the Hydra
callback ``conf/hydra/default.yaml`` installs (``hydra.callbacks.run_dir_guard``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from segdeconv.cli import _fail, _full_error, log, task_error_line
from segdeconv.errors import UserError


class RunDirGuard(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/hydra/default.yaml): a run directory has one owner.

    ``on_run_start`` runs after composition and before Hydra creates the run dir or writes its
    ``.hydra/`` record (hydra-core 1.3 ``Hydra.run`` → ``run_job``; an exception raised in a callback
    only becomes a warning there, so a refusal prints one ``error:`` line and exits 2 itself). It

    * resolves ``hydra.run.dir`` once (``${run_stamp:}`` is the clock: two evaluations could differ)
      and, for the default ``outputs/<task>/<date>_<time>``, takes the next free ``_2``, ``_3``… when
      another run started in the same second;
    * refuses a run dir (or ``output_dir``) that is read-only, holds another run (``.hydra`` record or
      checkpoints: :func:`~segdeconv.engine.outputs.run_dir_owner`) — except ``train.py
      trainer.resume=…`` continuing a training run — or is locked by a live trainer
      (:mod:`segdeconv.engine.rundir`);
    * lets only rank 0 of a torchrun job write a record, and none for ``train``: the train task writes
      it once its lock is held and a resume was accepted (:func:`segdeconv.tasks.train.record_run`), so
      a refused or concurrent start never rewrites the run's record.
    """

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import open_dict, read_write

        try:
            with read_write(config.hydra), open_dict(config.hydra):
                _guard_run_dir(config)
        except Exception as e:  # Hydra would turn it into a warning and run unguarded
            if _full_error():
                import traceback

                traceback.print_exc()
            _fail(task_error_line(e))

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """The sweeper's settings, checked before any job runs (:func:`segdeconv.sweep.check_sweeper`)."""
        from segdeconv.sweep import check_sweeper

        try:
            check_sweeper(config)
        except Exception as e:  # Hydra would turn it into a warning and start the sweep
            if _full_error():
                raise
            _fail(task_error_line(e))


def _guard_run_dir(config: Any) -> None:
    """:class:`RunDirGuard`'s checks (``config.hydra`` is writable here)."""
    from omegaconf import OmegaConf

    from segdeconv.engine.distributed import env_info
    from segdeconv.engine.outputs import run_dir_owner, writable_location
    from segdeconv.engine.rundir import in_use_error, lock_holder, note_run_dir

    task, info = _command_of(config), env_info()
    training, label = task == "train", str(config.get("run_name") or task)
    explicit = any(o.startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra)
    run_dir = writable_location(Path(str(config.hydra.run.dir)), "hydra.run.dir")
    if not explicit and not info.enabled:
        run_dir = _fresh_dir(run_dir)
    config.hydra.run.dir = str(run_dir)
    if not info.is_main:
        config.hydra.output_subdir = None  # one record per run: rank 0's
        return
    note_run_dir(run_dir, created=not explicit and not info.enabled)  # what a refused run must not leave behind
    container = OmegaConf.to_container(config, resolve=False)  # the composed config: a dict
    raw = container.get("output_dir") if isinstance(container, dict) else None
    dirs = {"hydra.run.dir": run_dir}
    if isinstance(raw, str) and "${hydra:" not in raw:
        dirs["output_dir"] = writable_location(Path(str(config.output_dir)), "output_dir")
    resume = training and bool(OmegaConf.select(config, "trainer.resume", default=None))
    for key, d in dirs.items():
        owner = run_dir_owner(d)  # (task label, what); "train" also for a checkpoints-only folder
        same_kind = owner is not None and training and owner[0] in (label, "train")
        if owner and not (resume and same_kind):
            more = ", or continue that run with trainer.resume=auto" if same_kind else ""
            raise UserError(f"{key}={d} already holds {owner[1]}; this {task} run would write over its files: "
                            f"choose a new {key}=…{more}")
        holder = lock_holder(d)
        if holder:
            raise in_use_error(d, holder)
    if training:
        config.hydra.output_subdir = None  # recorded by the train task once it owns the run dir


def _command_of(config: Any) -> str:
    """``task``: the command whose config this is. ``task=<label>`` as a run label (before ``run_name``)
    still works for this release: its label becomes ``run_name``, with a deprecation line."""
    from omegaconf import OmegaConf, open_dict

    task, command = str(config.get("task") or ""), OmegaConf.select(config, "hydra.job.config_name", default=None)
    if command and task != command:
        log.warning("task=%s as a run label is deprecated (it will be refused in the next release): use "
                    "run_name=%s; task names the command (%s)", task, task, command)
        with open_dict(config):
            config.run_name, config.task = task, command
    return str(command or task)


def _fresh_dir(run_dir: Path) -> Path:
    """``run_dir`` created now, or ``<run_dir>_2``, ``_3``… when another run took it in the same second."""
    for i in range(1, 1000):
        cand = run_dir if i == 1 else run_dir.with_name(f"{run_dir.name}_{i}")
        try:
            cand.mkdir(parents=True)
            return cand
        except FileExistsError:
            continue
    return run_dir
