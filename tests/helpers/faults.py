"""Datasets that fail on purpose, for tests run as subprocesses (PYTHONPATH=tests)."""
import os

from segdeconv.data.synthetic import SyntheticShapes
from segdeconv.errors import DataError


class FailOnRank(SyntheticShapes):
    """Synthetic data that raises on the ``fail_after``-th item loaded by rank ``rank`` (torchrun's RANK)."""

    def __init__(self, *args, rank: int = 1, fail_after: int = 3, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_rank, self.fail_after, self.loaded = rank, fail_after, 0

    def __getitem__(self, index):
        if int(os.environ.get("RANK", 0)) == self.fail_rank:
            self.loaded += 1
            if self.loaded >= self.fail_after:
                raise DataError(f"injected failure on rank {self.fail_rank} at item {index}")
        return super().__getitem__(index)
