"""One config value's type, range and documentation: :class:`Knob`, the unit :mod:`segdeconv.schema` is
made of. Plain Python (the engine and the docs read it; no Hydra)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

REFUSE, WARN, FREE = "refuse", "warn", "free"
_NO_DEFAULT = object()


@dataclass(frozen=True)
class Knob:
    """One config value: ``kind`` int, float (ints accepted), bool or str; bounds ``lo``/``hi`` (``gt``/``lt``:
    strict); ``choices``: the allowed values; ``null``: None allowed; ``each``: a value or a list of values
    (``length`` of them); ``what``: the allowed values in words where the consumer checks them (kind
    ``object``); ``default`` (where one value holds for every preset); ``resume``: what a resume may
    do with a changed value (None: the section's rule); ``doc``: one line; ``path``: a file or folder, so
    an empty string (an unset shell variable: ``key=$UNSET``) is refused, never read as "not given"."""

    kind: type
    lo: Optional[float] = None
    hi: Optional[float] = None
    gt: bool = False
    lt: bool = False
    null: bool = False
    each: bool = False
    length: Optional[int] = None
    choices: tuple = ()
    default: Any = _NO_DEFAULT
    resume: Optional[str] = None
    doc: str = ""
    what: str = ""  # the allowed values in words, for a knob its consumer checks (kind ``object``)
    path: bool = False

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    def describe(self) -> str:
        """``an integer ≥ 1``, ``a list of 2 integers ≥ 1 (or null)``, ``true or false``, ``one of auto, cpu``."""
        if self.what:
            what = self.what
        elif self.choices:
            what = "one of " + ", ".join(yaml_value(c) for c in self.choices)
        elif self.kind is bool:
            what = "true or false"
        elif self.kind is str:
            what = "a string"
        else:
            what = self._numbers()
        return what + (" (or null)" if self.null else "")

    def _numbers(self) -> str:
        noun = "integer" if self.kind is int else "finite number"
        bounds = " and ".join(b for b in (f"{'>' if self.gt else '≥'} {self.lo:g}" if self.lo is not None else "",
                                          f"{'<' if self.lt else '≤'} {self.hi:g}" if self.hi is not None else "") if b)
        bounds = f" {bounds}" if bounds else ""
        one = f"{'an' if self.kind is int else 'a'} {noun}{bounds}"
        if not self.each:
            return one
        return f"a list of {self.length} {noun}s{bounds}" if self.length else f"{one}, or a list of them"

    def accepts(self, v: Any) -> bool:
        if self.path and isinstance(v, str) and not v.strip():
            return False
        if v is None:
            return self.null or self.kind is object
        if self.each and isinstance(v, (list, tuple)):
            return (self.length is None or len(v) == self.length) and bool(v) and all(map(self._one, v))
        return self.length is None and self._one(v)

    def _one(self, x: Any) -> bool:
        if self.kind is object:
            return True
        if self.choices:
            return any(x == c and type(x) is type(c) for c in self.choices)
        if self.kind is str:
            return isinstance(x, str)
        if self.kind is bool or isinstance(x, bool):
            return self.kind is bool and isinstance(x, bool)
        if not isinstance(x, int if self.kind is int else (int, float)) or not math.isfinite(x):
            return False
        return ((self.lo is None or (x > self.lo if self.gt else x >= self.lo)) and
                (self.hi is None or (x < self.hi if self.lt else x <= self.hi)))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config by dotted knob name: ``{"a": {"b": 1}, "c": [1, 2], "d": {}}`` → ``{"a.b": 1, "c": [1, 2],
    "d": {}}``. Lists are values, and so is an empty mapping: a key never vanishes (resume compares keys
    present on both sides; trackers log every key)."""
    flat: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def yaml_value(v: Any) -> str:
    """``v`` as YAML writes it: ``null``, ``true``, ``0.5``."""
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def integer(lo: Optional[int] = None, hi: Optional[int] = None, **kw: Any) -> Knob:
    return Knob(int, lo, hi, **kw)


def real(lo: Optional[float] = None, hi: Optional[float] = None, **kw: Any) -> Knob:
    return Knob(float, lo, hi, **kw)


def flag(**kw: Any) -> Knob:
    return Knob(bool, **kw)


def choice(*values: Any, **kw: Any) -> Knob:
    return Knob(str, choices=values, **kw)


def positive(**kw: Any) -> Knob:
    return real(0, gt=True, **kw)


def free_form(what: str, **kw: Any) -> Knob:
    """A knob whose value its consumer checks (a path, a preset name, true/false/N): declared for its
    default, resume policy and doc."""
    return Knob(object, what=what, **kw)


def text(**kw: Any) -> Knob:
    return Knob(str, **kw)


def path(**kw: Any) -> Knob:
    """A file or folder (a string that may not be empty)."""
    return Knob(str, path=True, **kw)
