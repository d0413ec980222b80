"""``check_data(cfg)``: the check task — inspect dataset splits before training on them.

    python check_data.py dataset=camvid dataset.root=/path/to/CamVid
    python check_data.py dataset=voc dataset.root=/data/voc 'splits=[train_aug,val]'

Prints, per split, counts, image sizes, the label histogram and every problem with its file name
(:mod:`segdeconv.data.check`), and a training split that shares images with the validation split. A
split that cannot be opened at all is a problem of that split; the
result's ``failed`` makes ``check_data.py`` exit 1. Bad arguments are one ``error:`` line, exit 2.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from segdeconv.config import instantiate_node
from segdeconv.data.base import refuse_overlap
from segdeconv.data.check import format_report, inspect_dataset
from segdeconv.errors import ConfigError, UserError


def _splits(cfg: DictConfig) -> list[str]:
    given = cfg.get("splits")
    if given is None:
        return [str(cfg.dataset.train.split), str(cfg.dataset.val.split)]
    names = [s for s in (given.split(",") if isinstance(given, str) else list(given)) if str(s).strip()]
    if not names:
        raise ConfigError(f"splits={given!r} names no split; e.g. 'splits=[train,val]'")
    return [str(s).strip() for s in names]


def check_data(cfg: DictConfig) -> dict[str, Any]:
    """Check every split in ``cfg.splits`` (default: the dataset's train and val splits)."""
    if OmegaConf.is_missing(cfg.dataset, "root"):
        raise ConfigError("dataset.root is required: pass dataset.root=/path/to/the/dataset")
    limit = int(cfg.limit) if cfg.get("limit") else None
    reports: dict[str, list[str]] = {}
    built: dict[str, Any] = {}
    for split in _splits(cfg):
        try:
            ds = built[split] = instantiate_node(cfg.dataset.val, "dataset.val", split=split, transform=None)
        except UserError as e:
            print(f"[{split}] PROBLEM: {e}")
            reports[split] = [str(e)]
            continue
        report = inspect_dataset(ds, limit)
        print(format_report(report, ds.class_names, ds.ignore_index))
        reports[split] = report.problems
    overlap = _overlap(cfg, built)
    if overlap:
        print(f"PROBLEM: {overlap}")
        reports.setdefault("overlap", []).append(overlap)
    failed = any(reports.values())
    print("FAILED: see the problems above" if failed else "OK: no problems found")
    return {"failed": failed, "problems": reports}


def _overlap(cfg: DictConfig, built: dict[str, Any]) -> str:
    """The training split sharing images with the validation split (both checked), as a problem line."""
    train, val = str(cfg.dataset.train.split), str(cfg.dataset.val.split)
    if train == val or train not in built or val not in built:
        return ""
    try:
        refuse_overlap({f"split {train!r}": getattr(built[train], "image_paths", []),
                        f"images of split {val!r}": getattr(built[val], "image_paths", [])},
                       "remove them from one of the two splits")
    except UserError as e:
        return str(e)
    return ""
