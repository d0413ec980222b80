"""``fit(cfg)``: the train task — the composed config resolved once into a :class:`Trainer`.

``cfg.dataset.train/val`` → datasets, ``cfg.model`` → model, ``cfg.loss`` → criterion (class weights
resolved from the training masks when asked), ``cfg.optimizer`` / ``cfg.scheduler`` → partials,
``cfg.trainer`` → :class:`~segdeconv.engine.trainer.TrainSettings` + a
:class:`~segdeconv.engine.runtime.Runtime`. Everything below this module takes plain arguments.
"""
from __future__ import annotations

import logging
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segdeconv.config import build_model, check_config, class_info, container_dict, dataset_classes, instantiate_node, make_criterion, val_batch_size
from segdeconv.data.base import refuse_overlap
from segdeconv.data.sampler import Head, SeededItems
from segdeconv.engine.distributed import env_info
from segdeconv.engine.outputs import RECORD, atomic_file
from segdeconv.engine.param_groups import with_param_mults
from segdeconv.engine.rng import seed_everything
from segdeconv.engine.rundir import RunLock
from segdeconv.engine.runtime import resolve_runtime
from segdeconv.engine.trainer import Trainer, TrainSettings
from segdeconv.errors import ConfigError, DataError
from segdeconv.schema import section_values

log = logging.getLogger("segdeconv")


def train_settings(cfg: DictConfig) -> TrainSettings:
    """``cfg.trainer`` (every knob the engine reads, by its schema name) + the run's loader keys."""
    engine = {f.name for f in fields(TrainSettings)}
    trainer = {k: v for k, v in section_values(cfg.trainer, "trainer").items() if k in engine}
    d, out = cfg.dataset, Path(cfg.output_dir)
    return TrainSettings(**trainer, out_dir=out, batch_size=int(d.batch_size), val_batch_size=val_batch_size(d),
                         num_workers=int(d.num_workers), ignore_index=int(cfg.loss.ignore_index),
                         resume_command=resume_command(out))


def resume_command(out: Path) -> str:
    """The command that continues this run: its own overrides + ``trainer.resume=auto`` + its run dir."""
    overrides: list[str] = ["…"]
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        overrides = [o for o in HydraConfig.get().overrides.task
                     if not o.startswith(("trainer.resume=", "hydra.run.dir="))]
    return " ".join(["python train.py", *map(shlex.quote, overrides), "trainer.resume=auto",
                     shlex.quote(f"hydra.run.dir={out}")])


def datasets(cfg: DictConfig) -> tuple[Any, Any]:
    """Train (seeded per item, optionally cut to ``trainer.limit_train_images``) and val datasets, which
    may not share images (:func:`~segdeconv.data.base.refuse_overlap`) unless trainer.allow_val_in_train."""
    t = cfg.trainer
    train = instantiate_node(cfg.dataset.train, "dataset.train")
    val = instantiate_node(cfg.dataset.val, "dataset.val")
    try:
        refuse_overlap({f"dataset.train (split {getattr(train, 'split', None)!r})": getattr(train, "image_paths", []),
                        f"images of dataset.val (split {getattr(val, 'split', None)!r})": getattr(val, "image_paths", [])},
                       "give dataset.val.split images that are not trained on, or (a final model on e.g. VOC "
                       "trainval, val scores optimistic) trainer.allow_val_in_train=true")
    except DataError as e:
        if not t.allow_val_in_train:
            raise
        log.warning("trainer.allow_val_in_train=true: %s", str(e).split("; fix:")[0])
    if t.limit_train_images:
        train = Head(train, int(t.limit_train_images))
    if t.limit_val_images:
        val = Head(val, int(t.limit_val_images))
    dataset_classes(cfg, train, val)
    return SeededItems(train, int(t.seed)), val


def optimizer_factory(node: DictConfig, model: Any) -> Any:
    """``cfg.optimizer`` as the trainer's ``params → optimizer``; ``optimizer.param_mults`` (Caffe's per-blob
    ``lr_mult``/``decay_mult``) splits ``model``'s parameters into groups (:mod:`segdeconv.engine.param_groups`)."""
    mults = node.get("param_mults")
    rest = OmegaConf.masked_copy(node, [str(k) for k in node if k != "param_mults"]) if "param_mults" in node else node
    factory = instantiate_node(rest, "optimizer")
    plain = OmegaConf.to_container(mults, resolve=True) if isinstance(mults, DictConfig) else mults
    if plain is not None and not isinstance(plain, dict):
        raise ConfigError(f"optimizer.param_mults={plain!r} must be a mapping {{kind: [lr_mult, decay_mult]}}, "
                          "e.g. {conv.bias: [2, 0]}")
    return with_param_mults(factory, model, plain, float(node.lr), float(node.get("weight_decay") or 0.0))


def warn_if_not_the_papers(cfg: DictConfig) -> None:
    """A paper recipe (``paper.init`` set) run without the start its paper had: one warning at start."""
    paper = cfg.get("paper")
    init = paper.get("init") if paper else None
    missing = {"imagenet": ("model.encoder.weights", "model.encoder.weights=imagenet (torchvision's "
                            "vgg16-397923af.pth in $TORCH_HOME/hub/checkpoints)"),
               "init_from": ("model.init_from", "model.init_from=<the previous stage's checkpoints/last.pt>")}
    if init not in missing or not env_info().is_main:
        return
    key, fix = missing[init]
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent)
    if node is not None and not OmegaConf.is_missing(node, leaf) and not node.get(leaf):  # ??? errors later
        log.warning("%s=null: this run trains from scratch while %s started from %s, so its result is NOT "
                    "comparable with the paper's (%s); for the paper's start use %s", key, paper.source,
                    "ImageNet VGG16" if init == "imagenet" else "the previous stage's weights", paper.reports, fix)


def build_trainer(cfg: DictConfig) -> Trainer:
    """Everything ``cfg`` describes, built in the order a bit-exact resume relies on."""
    check_config(cfg)
    warn_if_not_the_papers(cfg)
    settings = train_settings(cfg)
    t = cfg.trainer
    runtime = resolve_runtime(t.device, t.precision, t.channels_last, t.dist_timeout_s)
    seed_everything(settings.seed, bool(t.deterministic))
    train_ds, val_ds = datasets(cfg)
    class_names, palette = class_info(cfg, train_ds)
    model = build_model(cfg, runtime.device)
    criterion = make_criterion(cfg, train_ds, settings.out_dir, runtime.device, runtime.dist.is_main)
    return Trainer(settings, runtime, model, train_ds, val_ds, criterion, optimizer_factory(cfg.optimizer, model),
                   instantiate_node(cfg.scheduler, "scheduler"), class_names, palette,
                   container_dict(cfg, resolve=True))


def record_run(cfg: DictConfig, out: Path) -> None:
    """Write Hydra's record of this start (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``): in
    ``<run dir>/.hydra/`` for the first start, ``.hydra/resume_<N>/`` for each later one (resumes).

    Called by the trainer once it holds the run dir's lock and accepted the resume, so a refused start
    never rewrites a record; Hydra itself writes none for train (run_dir_guard.RunDirGuard sets its output_subdir
    to null). A no-op outside Hydra or when Hydra kept its own record (no guard installed)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return
    hydra_cfg = HydraConfig.get()
    record = out / RECORD
    n = 1 + sum(1 for _ in record.glob("resume_*")) if (record / "config.yaml").exists() else 0
    where = record / f"resume_{n}" if n else record
    where.mkdir(parents=True, exist_ok=True)
    for name, node in (("config.yaml", cfg), ("hydra.yaml", OmegaConf.create({"hydra": hydra_cfg})),
                       ("overrides.yaml", hydra_cfg.overrides.task)):
        with atomic_file(where / name, "run record") as tmp:
            tmp.write_text(OmegaConf.to_yaml(node))


def fit(cfg: DictConfig) -> dict[str, Any]:
    """Train a model as ``cfg`` describes; returns the last validation metrics. The run dir is locked
    before anything is built (median-frequency weights are cached there) and until the run ends."""
    out = Path(cfg.output_dir)
    with RunLock(out, env_info().is_main):
        metrics = build_trainer(cfg).fit(on_start=lambda: record_run(cfg, out))
    if env_info().is_main:
        log.info(next_steps(out, metrics))
    return metrics


def next_steps(out: Path, metrics: dict[str, Any]) -> str:
    """What to do with a finished run: score, predict, look at the curves, then real data."""
    best = shlex.quote(str(out / "checkpoints" / "best.pt"))
    score = f" (last val mIoU {metrics['mIoU']:.4f})" if isinstance(metrics.get("mIoU"), float) else ""
    return "\n".join([
        f"done{score}: {out}. Next:",
        f"  python evaluate.py ckpt_path={best}                          # score it again (per-class IoU)",
        f"  python predict.py ckpt_path={best} input=<images> output=<new folder>   # colour masks",
        f"  tensorboard --logdir {shlex.quote(str(out / 'tb'))}                  # curves and val predictions",
        "  python train.py experiment=camvid_segnet_cpu dataset.root=<CamVid>   # real data (data/README.md)"])
