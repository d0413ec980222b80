"""Config → objects, with every config mistake turned into a ConfigError naming the key."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Optional, cast

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from torch import nn

from segdeconv.errors import CheckpointError, ConfigError, UserError
from segdeconv.models import registry
from segdeconv.palette import default_palette
from segdeconv.schema import KNOBS

log = logging.getLogger("segdeconv")

_ABSENT = object()


def _value(cfg: DictConfig, key: str) -> Any:
    """``cfg``'s value at ``key`` as plain Python; :data:`_ABSENT` if it is not there or not set (``???``)."""
    try:
        v = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except OmegaConfBaseException:
        return _ABSENT
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v


def container_dict(node: DictConfig, resolve: bool = True, throw_on_missing: bool = False) -> dict[str, Any]:
    """``OmegaConf.to_container(node)`` typed as what it is for a :class:`DictConfig`: a dict with string keys.

    The stub types the result as any container (dict with any key type, list, str, None); a DictConfig
    composed from YAML and command-line overrides always converts to a dict keyed by strings."""
    out = OmegaConf.to_container(node, resolve=resolve, throw_on_missing=throw_on_missing)
    if not isinstance(out, dict):  # a ListConfig, or a DictConfig that is None / a string interpolation
        raise TypeError(f"expected a mapping config node, got {type(out).__name__}")
    return cast("dict[str, Any]", out)  # keys: config keys, strings by construction (see above)


def check_config(cfg: DictConfig) -> None:
    """Cheap sanity checks of the composed config before anything heavy is built: every
    :data:`~segdeconv.schema.KNOBS` value present (type and range; a path knob may not be empty), then the
    rules across keys and against degenerate values (:mod:`segdeconv.rules`). Called for every task
    (cli.run_task)."""
    from segdeconv.rules import check_empty_path, check_rules

    task = cfg.get("task")
    for name, knob in KNOBS.items():
        only, _, key = name.rpartition(":")
        v = _value(cfg, key) if not only or only == task else _ABSENT
        if knob.path:
            check_empty_path(key, v)
        if v is not _ABSENT and not knob.accepts(v):
            raise ConfigError(f"{key}={v!r} must be {knob.describe()}; set {key} to such a value")
    mc, dc = _get(cfg, "model.num_classes"), _get(cfg, "dataset.num_classes")
    if isinstance(mc, int) and isinstance(dc, int) and mc != dc:
        raise ConfigError(
            f"model.num_classes={mc} but dataset {cfg.dataset.get('name', '')} has dataset.num_classes={dc}; "
            f"drop the model.num_classes override (it follows the dataset)"
        )
    check_rules(cfg, lambda key: _get(cfg, key))


def _get(cfg: DictConfig, key: str) -> Any:
    v = _value(cfg, key)
    return None if v is _ABSENT else v


def instantiate_node(node: DictConfig, key: str, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that surfaces our UserErrors and names the config key otherwise."""
    try:
        return instantiate(node, *args, **kwargs)
    except MissingMandatoryValue as e:
        raise _missing(node, e, key) from None
    except InstantiationException as e:
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, UserError) and (cause.__cause__ or cause.__context__):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, UserError):
            raise cause from None
        msg = str(e).splitlines()[0]
        raise ConfigError(f"{key}: {msg} — check the {key}.* keys (`python train.py --cfg job` shows them)") from None


def _missing(node: DictConfig, e: MissingMandatoryValue, key: str) -> ConfigError:
    src = _interpolation_source(node, str(getattr(e, "full_key", "")), key)
    return ConfigError(f"{src} is required but not set; pass {src}=… on the command line")


def _interpolation_source(node: DictConfig, full_key: str, key: str) -> str:
    """The key a missing value really comes from: ``dataset.root`` for ``dataset.train.root: ${dataset.root}``."""
    rel = full_key[len(key) + 1:] if full_key.startswith(key + ".") else full_key
    raw: Any = OmegaConf.to_container(node, resolve=False)
    for part in rel.split(".") if rel else []:
        raw = raw.get(part) if isinstance(raw, dict) else None
    m = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return m.group(1) if m else (full_key or key)


def build_model(cfg: DictConfig, device: torch.device) -> nn.Module:
    """Instantiate ``cfg.model`` on ``device`` (reading ``model.encoder.weights`` if set), then, with
    ``model.init_from=<checkpoint>``, load that checkpoint's weights (only the weights: a new run; e.g.
    DeconvNet's stage 2 starting from stage 1, Noh et al. 2015 §4.1)."""
    if OmegaConf.is_missing(cfg.model, "init_from"):
        raise ConfigError("model.init_from is required but not set; pass model.init_from=<checkpoint> "
                          "(e.g. stage 1's checkpoints/last.pt)")
    model = model_from_config(cfg.model, "model", pretrained=True)
    init_from = cfg.model.get("init_from")
    if init_from:
        from segdeconv.engine.checkpoint import load_checkpoint, load_model_state, weights_key

        ckpt = load_checkpoint(str(init_from), key="model.init_from")
        load_model_state(model, ckpt[weights_key(ckpt)], f"model.init_from={init_from}")
        log.info("model weights from %s (step %s%s)", init_from, ckpt.get("step"),
                 ", its EMA weights" if weights_key(ckpt) == "ema_model" else "")
    return model.to(device)


def dataset_classes(cfg: DictConfig, *datasets: Any) -> None:
    """The datasets' own class count must match ``dataset.num_classes``."""
    for ds in datasets:
        n = getattr(ds, "num_classes", None)
        if n is not None and int(n) != int(cfg.dataset.num_classes):
            raise ConfigError(
                f"dataset.num_classes={cfg.dataset.num_classes} but {type(ds).__name__} has {n} classes; "
                f"set dataset.num_classes={n}"
            )


def class_info(cfg: DictConfig, dataset: Any) -> tuple[list[str], list[list[int]]]:
    """Class names and palette: the dataset's own, else the config's, else generated."""
    n = int(cfg.dataset.num_classes)
    names = getattr(dataset, "class_names", None) or cfg.dataset.get("class_names") or [str(i) for i in range(n)]
    palette = getattr(dataset, "palette", None) or cfg.dataset.get("palette") or default_palette(n)
    names, palette = [str(x) for x in names], [list(map(int, c)) for c in palette]
    if len(names) != n or len(palette) < n:
        raise ConfigError(
            f"dataset.class_names has {len(names)} names and dataset.palette {len(palette)} colours "
            f"but dataset.num_classes={n}; make them agree"
        )
    return names, palette


def make_criterion(cfg: DictConfig, train_ds: Any, out_dir: Path, device: torch.device, verbose: bool) -> nn.Module:
    """``loss.criterion`` (a partial, conf/loss/) built with ``ignore_index`` and the class weights
    ``loss.class_weights`` resolves to (median frequency from the training masks, a named list, or values)."""
    spec = cfg.loss.get("class_weights")
    weights = None
    if spec is not None:
        if isinstance(spec, str) or hasattr(spec, "__len__"):
            from segdeconv.data.balance import resolve_class_weights

            base = getattr(train_ds, "dataset", train_ds)
            weights = resolve_class_weights(spec if isinstance(spec, str) else list(spec), base, out_dir)
        if weights is not None and len(weights) != int(cfg.dataset.num_classes):
            raise ConfigError(
                f"loss.class_weights has {len(weights)} values but dataset.num_classes={cfg.dataset.num_classes}"
            )
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
    power = float(cfg.loss.get("class_weight_power", 1.0))
    if w is not None and power != 1.0:  # tempered balancing: w^p keeps the order, shrinks the spread
        w = w.pow(power)
        if verbose:
            log.info("class weights ^%g: %s", power, ", ".join(f"{v:.4f}" for v in w.tolist()))
    node = cfg.loss.get("criterion")
    if node is None:
        raise ConfigError("loss.criterion is not set; choose a loss group, e.g. loss=ce (conf/loss/)")
    criterion = instantiate_node(node, "loss.criterion")(class_weights=w, ignore_index=int(cfg.loss.ignore_index))
    return criterion.to(device)


def val_batch_size(dataset_cfg: Any) -> int:
    """The validation batch size (``dataset.val_batch_size``, default ``dataset.batch_size``)."""
    return int(dataset_cfg.get("val_batch_size") or dataset_cfg["batch_size"])


def model_from_config(model_cfg: Any, where: str = "model", pretrained: bool = False) -> nn.Module:
    """The architecture a composed ``model`` config describes, built through the model registry
    (:func:`segdeconv.models.registry.build`; ``pretrained=True`` reads ``encoder.weights``)."""
    node = model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(model_cfg)
    try:
        arch = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise _missing(node, e, where) from None
    # a model node that is not a mapping (a list) has no name: registry.build refuses {} with the same error
    spec: dict[str, Any] = cast("dict[str, Any]", arch) if isinstance(arch, dict) else {}  # config keys: str
    if "_target_" in spec:
        log.warning("%s._target_ is deprecated (it will be refused in the next release): models are named by "
                    "%s.name, e.g. %s.name=segnet or %s.name=package.module:Class", where, where, where, where)
        spec = registry.from_legacy(spec)
    return registry.build(spec, where, pretrained=pretrained)


def split_dataset(trained: Mapping[str, Any], chosen: Optional[DictConfig], split: str,
                  root: Optional[str] = None, ckpt_path: Any = "checkpoint") -> Any:
    """The dataset ``split`` of a trained model's data — the one rule every task that reads a checkpoint uses.

    * ``dataset=<name>`` on the command line (a composed group with a ``val`` node) replaces the
      checkpoint's dataset; otherwise the checkpoint's own (resolved) dataset is used, with any
      ``dataset.<key>=…`` / ``+dataset.<key>=…`` given merged over it (null values are ignored);
    * ``root`` (or ``dataset.root=…``) replaces the root of the dataset and of its ``val`` node, and so
      does every other top-level ``dataset.<key>=…`` the ``val`` node also has (``split_scheme``, …);
    * the deterministic ``val`` node is instantiated with its ``split`` replaced;
    * the class count must be the checkpoint's.
    """
    chosen = chosen if chosen is not None else OmegaConf.create()
    if root and "root" in chosen:
        chosen.root = str(root)
    composed = "_target_" in (chosen.get("val") or {})  # dataset=<name>, not just dataset.<key>=… overlays
    if composed and "root" in chosen and OmegaConf.is_missing(chosen, "root"):
        raise ConfigError(f"dataset={chosen.get('name', '')} needs dataset.root=/path/to/the/dataset")
    given = OmegaConf.create(container_dict(chosen, resolve=True))
    if not trained and not composed:
        raise CheckpointError(f"{ckpt_path} records no dataset; pass dataset=<name> (e.g. dataset=camvid dataset.root=…)")
    ds: DictConfig
    if composed:
        ds = given
    else:
        overlay: dict[str, Any] = {k: v for k, v in container_dict(given, resolve=False).items()
                                   if v is not None}  # root: null
        ds = cast(DictConfig, OmegaConf.merge(OmegaConf.create(dict(trained)), overlay))  # dict onto a dict
    if trained and int(ds.num_classes) != int(trained["num_classes"]):
        raise ConfigError(f"dataset {ds.get('name')} has {ds.num_classes} classes but the checkpoint was trained "
                          f"with {trained['num_classes']}; use a dataset with the same classes")
    if not isinstance(ds.get("val"), DictConfig):
        raise ConfigError(f"dataset {ds.get('name', '')} has no dataset.val node to build the split from")
    root = root or given.get("root")
    if root:
        ds.root = str(root)
    if not composed:  # a stored config is resolved: val.root etc. are copies, not ${dataset.root}
        root_overlay: dict[str, Any] = {"root": str(root)} if root else {}
        for key, value in {**overlay, **root_overlay}.items():
            if key in ds.val and not isinstance(value, dict):
                ds.val[key] = value  # e.g. dataset.root, dataset.split_scheme, dataset.holdout_sequence
    elif root and "root" in ds.val:
        ds.val.root = str(root)
    ds.val.split = split
    return instantiate_node(ds.val, "dataset.val")
