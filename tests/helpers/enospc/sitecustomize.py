"""A full disk without root tricks, for CLI tests (``PYTHONPATH=tests/helpers/enospc``).

``SEGDECONV_TEST_ENOSPC="<substring>[:<n>]"``: ``os.write`` into a file whose path contains
``<substring>`` raises ``OSError(ENOSPC)``, as on a full disk, once ``<n>`` (default 0) such files have
been written — the low-level write of the one writer (segdeconv.engine.writer), patched in-process.
"""
import errno
import os

_SPEC = os.environ.get("SEGDECONV_TEST_ENOSPC")
if _SPEC:
    _pattern, _, _n = _SPEC.rpartition(":") if _SPEC.rsplit(":", 1)[-1].isdigit() else (_SPEC, "", "0")
    _allowed, _seen, _real_write = int(_n or 0), [], os.write

    def _write(fd, data):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if _pattern in path:
            if path not in _seen:
                _seen.append(path)
            if _seen.index(path) >= _allowed:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return _real_write(fd, data)

    os.write = _write
