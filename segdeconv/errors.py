"""One exception type for every user mistake.

Entry points catch :class:`UserError` and print its message as one line (no traceback), so the
message must name the offending file/key *and* the fix, e.g.::

    raise UserError(f"dataset.root: {root} does not exist; pass dataset.root=/path/to/CamVid")
"""
from __future__ import annotations


class UserError(Exception):
    """A problem caused by user input (path, config value, file content) with a fix to suggest."""


class ConfigError(UserError):
    """A config key holds a value that cannot work (names the key)."""


class DataError(UserError):
    """A dataset file or layout is wrong (names the file)."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, unsafe or does not fit the model (names the file)."""


def data_error(path: object, problem: str, fix: str) -> DataError:
    """The one message shape for every data problem: ``<file>: <problem>; fix: <fix>``."""
    return DataError(f"{path}: {problem}; fix: {fix}")
