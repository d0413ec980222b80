"""Where a task may write: the one rule every writer (train, evaluate, predict, export) follows.

An output may not be one of the task's inputs (a checkpoint it reads, or a file inside a dataset root or
image folder it reads), an existing checkpoint, something other than a regular file (a device, a FIFO),
or another run's directory, and its location must be writable; all of this is checked *before* any work.
Files are written by the one writer, :func:`segdeconv.engine.writer.write_file` (Python I/O into a temp
file in the same folder, fsync, ``os.replace``), so a failed or killed write leaves the previous file as
it was, and a write that fails (full disk, read-only place) is one :class:`UserError` naming the file
and the free space (:func:`write_error`).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

from segdeconv import filekind
from segdeconv.engine.writer import refuse_special, write_error
from segdeconv.errors import UserError

PathLike = Union[str, Path]
RECORD = ".hydra"  # Hydra's record of the run that owns a directory (config, overrides)


def is_checkpoint(path: PathLike) -> bool:
    """True for a ``torch.save`` file (zip with ``data.pkl`` and no TorchScript ``code/``, or the legacy
    pickle format): a checkpoint, never to be written over by an export or a prediction."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        kind = filekind.file_kind(p)
        return kind == filekind.TORCH or (kind == filekind.LEGACY and filekind.head(p).startswith(
            filekind.LEGACY_TORCH_MAGIC))
    except OSError:
        return False


def run_dir_owner(path: PathLike) -> Optional[tuple[str, str]]:
    """``(run label, what)`` when ``path`` is another run's directory: its ``.hydra`` record names the run, or
    it holds checkpoints (a training run made without Hydra); None for a fresh or unrelated folder."""
    p = Path(path)
    config = p / RECORD / "config.yaml"
    if config.is_file():
        lines = config.read_text(errors="replace").splitlines()
        named = {k: ln.split(":", 1)[1].split("#")[0].strip() for k in ("run_name", "task") for ln in lines
                 if ln.startswith(f"{k}:")}
        run_name = named.get("run_name", "")
        task = (run_name if not run_name.startswith("${") else "") or named.get("task") or "Hydra"  # (unresolved)
        return task, f"the {RECORD}/ record of {'an' if task[0] in 'aeiou' else 'a'} {task} run"
    if any((p / "checkpoints").glob("*.pt")):
        return "train", "the checkpoints of a training run"
    return None


def writable_location(path: PathLike, key: str) -> Path:
    """``path`` (a folder to write in, created if absent) after checking that it can be: its nearest
    existing ancestor is a folder this process may write to."""
    p = Path(path).expanduser()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{key}={path}: {probe} is a file, not a folder; pass a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path}: {probe} is read-only for this user; pass a writable {key}=…")
    return p


def check_output_file(dst: PathLike, inputs: Iterable[Optional[PathLike]], key: str = "output") -> Path:
    """An output file must not be a folder, a device/FIFO/socket, one of ``inputs`` or inside one of
    them that is a folder (a dataset root, an image folder: :func:`segdeconv.data.base.dataset_inputs`), or
    an existing checkpoint, and its folder must be writable. Returns ``dst`` as a Path."""

    p = Path(dst).expanduser()
    if p.is_dir():
        raise UserError(f"{key}={dst} is a folder; pass a file name, e.g. {key}={p / 'model'}…")
    refuse_special(p, key)
    for src in (Path(s).expanduser() for s in inputs if s):
        same = os.path.samefile(src, p) if src.exists() and p.exists() else p.resolve() == src.resolve()
        if same:
            raise UserError(f"{key}={dst} is this task's input {src}; write to another file (inputs are never "
                            f"overwritten), or drop {key}= to write beside it")
        if src.is_dir() and src.resolve() in p.resolve().parents:
            raise UserError(f"{key}={dst} is inside {src}, a folder this task reads its data from; write it "
                            f"outside the dataset (inputs are never overwritten or added to)")
    if is_checkpoint(p):
        raise UserError(f"{key}={dst} is an existing checkpoint; write to another file (checkpoints are never "
                        f"overwritten)")
    writable_location(p.parent, key)
    return p


def check_output_dir(out: Path, inputs: Sequence[Path], root: Path, planned: Sequence[Path], recursive: bool,
                     key: str = "output") -> None:
    """An output folder must not be the input folder (nor, with ``recursive``, inside it, where its files
    would be read as inputs next time), a file, or a place where a planned file is an input."""
    out_r, root_r = out.expanduser().resolve(), root.resolve()
    if out_r == root_r:
        raise UserError(f"{key}={out} is the input folder; choose another folder (inputs are never overwritten)")
    if out_r.exists() and not out_r.is_dir():
        raise UserError(f"{key}={out} is a file; pass a folder")
    if recursive and root_r in out_r.parents:
        raise UserError(f"{key}={out} is inside the input folder {root} and recursive=true would read "
                        f"the predictions as inputs next time; choose a folder outside it")
    sources = {p.resolve() for p in inputs}
    clash = next((out_r / p for p in planned if (out_r / p).resolve() in sources), None)
    if clash is not None:
        raise UserError(f"{key}={out} would overwrite the input image {clash}; choose another folder")
    writable_location(out, key)


@contextlib.contextmanager
def atomic_file(dst: PathLike, what: str = "file", fix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``dst`` (same suffix) for a writer using Python I/O (``Path.write_text``); on
    success it replaces ``dst`` in one ``os.replace``, on failure it is removed and an OSError is
    :func:`write_error`'s line. Anything else uses :func:`segdeconv.engine.writer.write_file`."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp{dst.suffix}")
    try:
        yield tmp
        os.replace(tmp, dst)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if not isinstance(e, OSError):
            raise
        raise write_error(dst, e, what, fix) from None
