"""Dataset checks: counts, image sizes, the label histogram and every problem found (missing pair,
size mismatch, labels outside the class set, unreadable file) with the file name.

Plain functions (:func:`check_dataset`, :func:`inspect_dataset`, :func:`format_report`); the
command ``python check_data.py dataset=camvid dataset.root=…`` is :mod:`segdeconv.tasks.check_data`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from segdeconv.data.labelled import no_labelled_pixel, split_name
from segdeconv.errors import UserError


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
    ignore = int(getattr(ds, "ignore_index", 255))
    if report.sizes and int(report.histogram.sum() - report.histogram[ignore]) == 0:  # the trainer's own check
        report.problems.append(str(no_labelled_pixel(split_name(ds, "split"), ignore,
                                                     f"{sum(report.sizes.values())} masks")))
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
