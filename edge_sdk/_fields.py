"""Typed reading of untrusted JSON objects (manifests, wire payloads).

A :class:`Fields` wraps one JSON object and hands out its values by name and
type; when anything is wrong it calls ``fail(key, reason)``, which raises the
caller's own error type, so each schema gets messages in its own vocabulary.
After reading, :meth:`Fields.done` rejects keys that nobody asked for.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NoReturn

Fail = Callable[[str, str], NoReturn]

_MISSING = object()


def _type_name(value: Any) -> str:
    return type(value).__name__


class Fields:
    """Hands out the values of one JSON object by name, checking each type once."""

    def __init__(self, data: Any, fail: Fail, prefix: str = "") -> None:
        self._fail = fail
        self._prefix = prefix
        if not isinstance(data, Mapping):
            fail(prefix or "<root>", f"expected an object, got {_type_name(data)} {data!r:.80}")
        self._data = data
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def fail(self, name: str, reason: str) -> NoReturn:
        self._fail(self.key(name), reason)

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if name in self._data:
            return self._data[name]
        if default is _MISSING:
            self.fail(name, "required field is missing")
        return default

    def str(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            self.fail(name, f"expected a string, got {_type_name(value)} {value!r:.80}")
        return value

    def int(self, name: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"expected an integer, got {_type_name(value)} {value!r:.80}")
        if minimum is not None and value < minimum:
            self.fail(name, f"must be >= {minimum}, got {value!r}")
        return value

    def float(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        return self._as_float(name, value)

    def _as_float(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name, f"expected a number, got {_type_name(value)} {value!r:.80}")
        if not math.isfinite(value):
            self.fail(name, f"expected a finite number, got {value!r}")
        return float(value)

    def bool(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, bool):
            self.fail(name, f"expected true or false, got {_type_name(value)} {value!r:.80}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.str(name, default)
        if value is default and default is not _MISSING:
            return value
        if value not in allowed:
            self.fail(name, f"expected one of {', '.join(allowed)}; got {value!r}")
        return value

    def list(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list):
            self.fail(name, f"expected a list, got {_type_name(value)} {value!r:.80}")
        return value

    def int_tuple(self, name: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        values = self.list(name, default)
        if values is default and default is not _MISSING:
            return values
        for i, item in enumerate(values):
            if isinstance(item, bool) or not isinstance(item, int):
                self.fail(f"{name}[{i}]", f"expected an integer, got {_type_name(item)} {item!r:.80}")
            if minimum is not None and item < minimum:
                self.fail(f"{name}[{i}]", f"must be >= {minimum}, got {item!r}")
        return tuple(values)

    def float_tuple(self, name: str, default: Any = _MISSING) -> Any:
        values = self.list(name, default)
        if values is default and default is not _MISSING:
            return values
        return tuple(self._as_float(f"{name}[{i}]", item) for i, item in enumerate(values))

    def str_tuple(self, name: str, default: Any = _MISSING) -> Any:
        values = self.list(name, default)
        if values is default and default is not _MISSING:
            return values
        for i, item in enumerate(values):
            if not isinstance(item, str):
                self.fail(f"{name}[{i}]", f"expected a string, got {_type_name(item)} {item!r:.80}")
        return tuple(values)

    def object(self, name: str, default: Any = _MISSING) -> Any:
        """A nested object, returned as :class:`Fields` (or ``default`` when absent)."""
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        return Fields(value, self._fail, self.key(name))

    def objects(self, name: str, default: Any = _MISSING) -> Any:
        """A list of objects, each returned as :class:`Fields`."""
        values = self.list(name, default)
        if values is default and default is not _MISSING:
            return values
        return [Fields(item, self._fail, f"{self.key(name)}[{i}]") for i, item in enumerate(values)]

    def json(self, name: str, default: Any = _MISSING) -> Any:
        """A free-form JSON object (reports), returned as a plain dict."""
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, Mapping):
            self.fail(name, f"expected an object, got {_type_name(value)} {value!r:.80}")
        return dict(value)

    def done(self) -> None:
        """Reject keys that were present but never read."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            allowed = ", ".join(sorted(self._seen))
            self._fail(self.key(unknown[0]), f"unknown field; allowed fields here: {allowed}")
