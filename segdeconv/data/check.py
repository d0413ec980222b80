"""Check a dataset before training on it.

    python -m segdeconv.data.check dataset=camvid dataset.root=/path/to/CamVid
    python -m segdeconv.data.check dataset=voc dataset.root=/data/voc splits=train_aug,val

Prints counts per split, image sizes, the label histogram and every problem found (missing
pair, size mismatch, labels outside the class set, unreadable file) with the file name; exits 1
if there is any problem. ``splits=`` (default: the config's train and val splits) is this tool's
own argument; everything else is a Hydra override of ``conf/``. The checks are plain functions
(:func:`check_dataset`, :func:`inspect_dataset`) usable without Hydra.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from segdeconv.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class DatasetReport:
    """What :func:`inspect_dataset` found: sizes ``(W, H)``, per-class pixel counts, problems."""

    name: str
    count: int = 0
    sizes: Counter = field(default_factory=Counter)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    problems: list[str] = field(default_factory=list)


def inspect_dataset(ds: Any, limit: Optional[int] = None) -> DatasetReport:
    """Decode every (or the first ``limit``) raw pair of ``ds`` and collect stats and problems.

    Each item runs the dataset's own per-item checks (decodable files, mask size = image size,
    labels in the class set); every failure becomes one problem line instead of stopping.
    """
    report = DatasetReport(repr(ds), count=len(ds))
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        try:
            image, mask = ds.load_pair(i)
        except UserError as e:
            report.problems.append(str(e))
            continue
        report.sizes[(image.shape[1], image.shape[0])] += 1
        report.histogram += np.bincount(mask.ravel(), minlength=256)
    return report


def check_dataset(ds: Any, limit: Optional[int] = None) -> list[str]:
    """Every problem found in ``ds`` (empty when it is fine); see :func:`inspect_dataset`."""
    return inspect_dataset(ds, limit).problems


def format_report(report: DatasetReport, class_names: Sequence[str], ignore_index: int) -> str:
    """Human-readable summary: count, sizes, label histogram, problems."""
    lines = [f"{report.name}: {report.count} pairs"]
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in report.sizes.most_common(5))
    more = len(report.sizes) - 5
    lines.append(f"  image sizes (WxH): {sizes}" + (f", +{more} other sizes" if more > 0 else ""))
    total = max(int(report.histogram.sum()), 1)
    labels = [(n, int(report.histogram[c])) for c, n in enumerate(class_names)]
    labels.append((f"ignore ({ignore_index})", int(report.histogram[ignore_index])))
    lines.append("  label histogram (pixels, %):")
    lines += [f"    {n:<20} {px:>13,} {100 * px / total:6.2f}" for n, px in labels]
    lines += [f"  PROBLEM: {p}" for p in report.problems]
    return "\n".join(lines)


def _compose(overrides: list[str]) -> Any:
    """Compose ``conf/`` with no primary config: ``dataset=x`` selects conf/dataset/x.yaml."""
    from hydra import compose, initialize_config_dir

    args = [f"+{o}" if o.split("=")[0] == "dataset" else o for o in overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=None, overrides=args)


def run(overrides: list[str]) -> int:
    """Check the splits named by ``overrides``; print the report; return the exit code."""
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    splits = [o.split("=", 1)[1] for o in overrides if o.startswith("splits=")]
    overrides = [o for o in overrides if not o.startswith("splits=")]
    if not any(o.split("=")[0] == "dataset" for o in overrides):
        print("pass a dataset, e.g. python -m segdeconv.data.check dataset=camvid "
              "dataset.root=/path/to/CamVid", file=sys.stderr)
        return 2
    try:
        cfg = _compose(overrides)
        if OmegaConf.is_missing(cfg.dataset, "root"):
            raise UserError("dataset.root is required: pass dataset.root=/path/to/the/dataset")
        names = splits[0].split(",") if splits else [cfg.dataset.train.split, cfg.dataset.val.split]
    except (UserError, HydraException, OmegaConfBaseException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = False
    for split in names:
        try:
            ds = instantiate(cfg.dataset.val, split=split, transform=None)
        except (UserError, HydraException, OmegaConfBaseException) as e:
            print(f"[{split}] PROBLEM: {getattr(e, '__cause__', None) or e}")
            failed = True
            continue
        report = inspect_dataset(ds)
        print(format_report(report, ds.class_names, ds.ignore_index))
        failed |= bool(report.problems)
    print("FAILED: see the problems above" if failed else "OK: no problems found")
    return 1 if failed else 0


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of ``python -m segdeconv.data.check``."""
    sys.exit(run(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
