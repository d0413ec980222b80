"""The "no labelled pixel" check, shared by ``check_data.py``, the trainer and ``evaluate.py``.

A split whose every mask pixel is the void label (``dataset.ignore_index``) trains to loss 0 and scores
mIoU NaN; it is reported as a data problem — by ``check_data.py`` as a PROBLEM line, by the trainer
(after its first full epoch, and at its first validation) and by ``evaluate.py`` as one ``error:``
line — never as a result.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch

from segdeconv.errors import DataError, data_error

# why a metric is null in metrics.json / val_metrics.json (JSON has no NaN): 0/0
UNDEFINED = ("undefined (0/0): a class in neither the labels nor the predictions has no IoU/Dice, one not in the "
             "labels no accuracy")


def no_labelled_pixel(where: Any, ignore_index: int, what: str = "masks") -> DataError:
    """The one message: ``<where>: has no labelled pixel …; fix: …``."""
    return data_error(where, f"has no labelled pixel: every pixel of its {what} is the void label "
                             f"{ignore_index} (dataset.ignore_index), so there is nothing to train on or score",
                      "check the masks (python check_data.py dataset=… dataset.root=…), dataset.ignore_index and "
                      "the split's list of images")


def require_labelled(pixels: int, where: Any, ignore_index: int, what: str = "masks") -> None:
    """Raise :func:`no_labelled_pixel` when ``pixels`` (labelled pixels counted) is 0."""
    if int(pixels) == 0:
        raise no_labelled_pixel(where, ignore_index, what)


class LabelWatch:
    """Passes ``(images, masks)`` batches through and notes whether any mask pixel is labelled; it stops
    looking at the first one found, so it costs one comparison per batch until then."""

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index, self.seen, self.batches = int(ignore_index), False, 0

    def __call__(self, batches: Iterable[Any]) -> Iterator[Any]:
        for batch in batches:
            if not self.seen:
                self.batches += 1
                self.seen = bool((batch[1] != self.ignore_index).any())
            yield batch

    def seen_anywhere(self, distributed: bool, device: torch.device) -> bool:
        """:attr:`seen` on any rank (all-reduced under torchrun)."""
        if not distributed:
            return self.seen
        flag = torch.tensor([float(self.seen)], device=device)
        torch.distributed.all_reduce(flag)
        return bool(flag.item())


def split_name(dataset: Any, key: str) -> str:
    """``dataset.val (split 'val' of /data/CamVid)`` — how messages name a split (wrappers unwrapped)."""
    from segdeconv.data.sampler import unwrapped

    dataset = unwrapped(dataset)
    split, root = getattr(dataset, "split", None), getattr(dataset, "root", None)
    return f"{key} (split {split!r}{f' of {root}' if root else ''})" if split is not None else key
