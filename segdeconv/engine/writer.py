"""The one writer every task uses: :func:`write_file` and its text/JSON/image forms.

Where a task may write is :mod:`segdeconv.engine.outputs`' rule (checked before any work); *how* it
writes is this module's, the same for a checkpoint, an export, metrics or a figure:

* the destination must be absent or a regular file (never a device, FIFO or socket: ``output=/dev/null``
  is refused, not replaced by a file);
* the bytes go to a temp file beside it through Python I/O (``os.write``): a full disk or a read-only
  place is an ``OSError`` whatever library serialised them (torch's zip writer and ``torch.jit.save``
  fail inside C++ when handed a path), reported as one :class:`UserError` naming the file and the free
  space (:func:`write_error`);
* fsync, then one ``os.replace``: a failed or killed write leaves the previous file as it was, and a
  failed one leaves no temp file.
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Type, Union

from segdeconv.errors import UserError

PathLike = Union[str, Path]


class _Sink(io.RawIOBase):
    """A raw file that writes with ``os.write`` and remembers the first OSError (the library serialising
    into it may turn that into its own exception type)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.error: Optional[OSError] = None

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, b: Any) -> int:
        try:
            return os.write(self.fd, b)
        except OSError as e:
            self.error = self.error or e
            raise

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def refuse_special(dst: PathLike, key: Optional[str] = None) -> None:
    """``dst`` must be absent or a regular file (symbolic links followed): never a device, FIFO or socket."""
    try:
        mode = os.stat(dst).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a folder gets the callers' own message
        return
    kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
            "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise UserError(f"{f'{key}={dst}' if key else dst} is {kind}, not a regular file; outputs are written to "
                    f"regular files only: pass a file path")


def free_space(path: PathLike) -> str:
    """``"123 MiB free"`` on the file system holding ``path`` (or its nearest existing ancestor)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return f"{shutil.disk_usage(p).free / 2**20:,.0f} MiB free"
    except OSError:
        return "free space unknown"


def write_error(path: PathLike, e: OSError, what: str = "file", fix: str = "") -> UserError:
    """A failed write (an ``OSError``: full disk, read-only place) as one line naming the file and the free
    space. The one writer (:mod:`segdeconv.engine.writer`) writes with Python I/O, so every such failure
    is an ``OSError``, whatever library serialised the bytes."""
    text = e.strerror or str(e).strip() or type(e).__name__
    where = Path(path).parent
    return UserError(f"cannot write {what} {path}: {text[:200]} ({free_space(where)} in {where}); free disk space "
                     f"or choose a writable location{fix}")


def write_file(dst: PathLike, fill: Callable[[BinaryIO], Any], what: str = "file", fix: str = "",
               error: Type[UserError] = UserError, key: Optional[str] = None) -> Path:
    """Write ``dst`` with ``fill(f)`` (``f`` a buffered binary file), atomically; see the module docstring.
    A failed write is ``error`` (a :class:`UserError`) naming the file, the reason and the free space."""

    dst = Path(dst)
    refuse_special(dst, key)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    except OSError as e:
        raise error(str(write_error(dst, e, what, fix))) from None
    sink = _Sink(fd)
    try:
        os.fchmod(fd, _mode(dst))
        with io.BufferedWriter(sink, 1 << 20) as f:
            fill(f)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, dst)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = sink.error or (e if isinstance(e, OSError) else None)
        if cause is None:
            raise
        raise error(str(write_error(dst, cause, what, fix))) from None
    _fsync_dir(dst.parent)
    return dst


def _mode(dst: Path) -> int:
    """The permissions the file gets: the replaced file's, else what ``open()`` would give (0o666 − umask;
    mkstemp's temp files are 0o600)."""
    try:
        return stat.S_IMODE(os.stat(dst).st_mode)
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes(dst: PathLike, data: Union[bytes, bytearray, memoryview], what: str = "file") -> Path:
    return write_file(dst, lambda f: f.write(data), what)


def write_text(dst: PathLike, text: str, what: str = "file") -> Path:
    return write_file(dst, lambda f: f.write(text.encode()), what)


def json_safe(data: Any, reason: str) -> Any:
    """``data`` with every NaN/inf replaced by null; a dict in a list that held one gains
    ``"nulls": {"keys": [...], "reason": reason}`` (the top level: :func:`write_json`)."""
    return _safe(data, reason)[0]


def _safe(v: Any, reason: str) -> tuple[Any, list[str]]:
    """``(v cleaned, the paths below v that were not finite)``."""
    if isinstance(v, float) and not math.isfinite(v):
        return None, [""]
    if isinstance(v, dict):
        out, keys = {}, []
        for k, x in v.items():
            out[k], sub = _safe(x, reason)
            keys += [f"{k}{s}" if s.startswith("[") else f"{k}.{s}" if s else str(k) for s in sub]
        return out, keys
    if isinstance(v, (list, tuple)):
        out_list, keys = [], []
        for i, x in enumerate(v):
            clean, sub = _safe(x, reason)
            if sub and isinstance(clean, dict):  # e.g. one validation's metrics: its own note
                clean = {**clean, "nulls": {"keys": sub, "reason": reason}}
            else:
                keys += [f"[{i}]" + (s if s.startswith("[") or not s else f".{s}") for s in sub]
            out_list.append(clean)
        return out_list, keys
    return v, []


def write_json(dst: PathLike, data: Any, what: str = "file", null_reason: str = "not a finite number") -> Path:
    """``data`` as strict JSON (no NaN/Infinity tokens: :func:`json_safe` turns them into nulls with
    ``null_reason``)."""
    clean, keys = _safe(data, null_reason)
    if keys and isinstance(clean, dict):
        clean = {**clean, "nulls": {"keys": keys, "reason": null_reason}}
    return write_text(dst, json.dumps(clean, indent=1, allow_nan=False), what)


def image_format(dst: PathLike, key: str = "output") -> str:
    """The PIL format ``dst``'s suffix names (``.png`` → PNG); an unknown or missing suffix is refused."""
    from PIL import Image

    suffix = Path(dst).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"{key}={dst}: {'no file suffix' if not suffix else f'{suffix} is not an image format'} "
                        f"to write; end the name with .png (or .jpg, .webp, …)")
    return fmt


def write_image(dst: PathLike, image: Any, what: str = "image", key: Optional[str] = None, **options: Any) -> Path:
    """A PIL image, encoded in memory in the format ``dst``'s suffix names, then :func:`write_file`."""
    fmt = image_format(dst, key or what)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return write_file(dst, lambda f: f.write(buf.getbuffer()), what)


def write_figure(dst: PathLike, fig: Any, what: str = "figure", **options: Any) -> Path:
    """A matplotlib figure, rendered in memory in the format ``dst``'s suffix names, then :func:`write_file`."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(dst).suffix.lstrip(".").lower() or "png", **options)
    return write_file(dst, lambda f: f.write(buf.getbuffer()), what)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
