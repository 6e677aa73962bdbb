"""Typed component configs: a dataclass per component, built from YAML with precise errors.

A component declares its config as a plain dataclass.  Field types drive conversion and checks
(``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``list[T]``, ``dict[str, T]``,
``T | None``, nested dataclasses, :data:`Duration`, :data:`ByteSize`), and :func:`setting` adds
range / pattern constraints.  Errors carry the path the OTel Collector way
(``processors::redaction/strict::operator: must be one of replace, mask, hash, drop``); all errors
of a config are collected, not just the first.  A ``validate(self)`` method on the dataclass may
raise :class:`ConfigError` (or return a list of messages) for cross-field rules.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import MISSING, field
from typing import Any, Literal, NewType, Union, get_args, get_origin

__all__ = [
    "ConfigError", "ConfigErrors", "Duration", "ByteSize", "setting", "build", "parse_duration",
    "parse_bytesize", "to_plain",
]

Duration = NewType("Duration", float)
"""Seconds, written in YAML as ``200ms``, ``5s``, ``30m``, ``12h``, ``30d`` or a bare number of seconds."""

ByteSize = NewType("ByteSize", int)
"""Bytes, written as ``512``, ``64KiB``, ``16MiB``, ``1GiB`` (KB/MB/GB are decimal)."""


class ConfigError(Exception):
    """One problem at one path (``path`` joined with ``::``)."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
        self.line = line

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class ConfigErrors(Exception):
    """Every problem found in a config; ``str()`` gives one per line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, min: float | None = None,
            max: float | None = None, pattern: str | None = None, doc: str = "") -> Any:
    """A dataclass field with constraints checked at load (``min``/``max`` inclusive)."""
    meta = {"min": min, "max": max, "pattern": re.compile(pattern) if pattern else None, "doc": doc}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|K|M|G)?\s*$", re.I)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10,
               "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, None: 1}


def parse_duration(value: Any) -> float:
    """``"1m30s"`` is not accepted; one number and one unit, as most configs write them."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 200ms, 30m, 12h, 30d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            raise ValueError(f"invalid duration {value!r} (expected e.g. 5s, 200ms, 30m, 12h, 30d)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be >= 0")
    return seconds


def parse_bytesize(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512, 64KiB, 16MiB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.match(str(value))
        if not match:
            raise ValueError(f"invalid size {value!r} (expected e.g. 512, 64KiB, 16MiB, 1GiB)")
        unit = match.group(2).lower() if match.group(2) else None
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError(f"invalid size {value!r}: must be >= 0")
    return size


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if tp is Duration:
        return "duration"
    if tp is ByteSize:
        return "size"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "list"
    if origin is dict or tp is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


class _Builder:
    def __init__(self, lines: dict[tuple[str, ...], int] | None) -> None:
        self.errors: list[ConfigError] = []
        self.lines = lines or {}

    def error(self, path: tuple[str, ...], message: str) -> None:
        line = None
        for i in range(len(path), -1, -1):
            line = self.lines.get(path[:i])
            if line:
                break
        self.errors.append(ConfigError("::".join(path), message, line))

    def convert(self, tp: Any, value: Any, path: tuple[str, ...]) -> Any:
        """Convert ``value`` to ``tp`` or record an error and return a sentinel."""
        origin = get_origin(tp)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            args = get_args(tp)
            if value is None and type(None) in args:
                return None
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) == 1:
                return self.convert(non_none[0], value, path)
            for arg in non_none:  # first that fits without errors
                sub = _Builder(self.lines)
                out = sub.convert(arg, value, path)
                if not sub.errors:
                    return out
            self.error(path, f"expected {' or '.join(_type_name(a) for a in args)}, got {_describe(value)}")
            return _INVALID
        if tp is Duration:
            try:
                return parse_duration(value)
            except ValueError as exc:
                self.error(path, str(exc))
                return _INVALID
        if tp is ByteSize:
            try:
                return parse_bytesize(value)
            except ValueError as exc:
                self.error(path, str(exc))
                return _INVALID
        if origin is Literal:
            choices = get_args(tp)
            if value in choices and not isinstance(value, bool) or (isinstance(value, bool) and value in choices):
                return value
            self.error(path, "must be one of " + ", ".join(str(c) for c in choices))
            return _INVALID
        if dataclasses.is_dataclass(tp):
            if value is None:
                value = {}
            return self.build(tp, value, path)
        if origin in (list, tuple) or tp in (list, tuple):
            if value is None:
                return []
            if not isinstance(value, list):
                self.error(path, f"expected a list, got {_describe(value)}")
                return _INVALID
            (item_tp,) = get_args(tp)[:1] or (Any,)
            return [self.convert(item_tp, v, path + (str(i),)) for i, v in enumerate(value)]
        if origin is dict or tp is dict:
            if value is None:
                return {}
            if not isinstance(value, dict):
                self.error(path, f"expected a mapping, got {_describe(value)}")
                return _INVALID
            args = get_args(tp)
            val_tp = args[1] if len(args) == 2 else Any
            out = {}
            for k, v in value.items():
                out[str(k)] = self.convert(val_tp, v, path + (str(k),))
            return out
        if tp is bool:
            if isinstance(value, bool):
                return value
            self.error(path, f"expected true or false, got {_describe(value)}")
            return _INVALID
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            self.error(path, f"expected an integer, got {_describe(value)}")
            return _INVALID
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
            self.error(path, f"expected a number, got {_describe(value)}")
            return _INVALID
        if tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            self.error(path, f"expected a string, got {_describe(value)}")
            return _INVALID
        return value

    def build(self, cls: type, raw: Any, path: tuple[str, ...]) -> Any:
        if not isinstance(raw, dict):
            self.error(path, f"expected a mapping, got {_describe(raw)}")
            return _INVALID
        hints = typing.get_type_hints(cls, include_extras=False)
        known = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        before = len(self.errors)
        for key in raw:
            if key not in known:
                valid = ", ".join(sorted(known)) or "none"
                self.error(path + (str(key),), f"unknown key (valid keys: {valid})")
        for name, f in known.items():
            if name not in raw:
                if f.default is MISSING and f.default_factory is MISSING:
                    self.error(path + (name,), "required")
                continue
            value = self.convert(hints[name], raw[name], path + (name,))
            if value is _INVALID:
                continue
            self._check_constraints(f, value, path + (name,))
            kwargs[name] = value
        if len(self.errors) > before:
            return _INVALID
        try:
            obj = cls(**kwargs)
        except ConfigError as exc:
            self.error(path + tuple(p for p in exc.path.split("::") if p), exc.message)
            return _INVALID
        except (TypeError, ValueError) as exc:
            self.error(path, str(exc))
            return _INVALID
        validate = getattr(obj, "validate", None)
        if callable(validate):
            try:
                problems = validate() or []
            except ConfigError as exc:
                problems = []
                self.error(path + tuple(p for p in exc.path.split("::") if p), exc.message)
            for problem in problems:
                if isinstance(problem, ConfigError):
                    self.error(path + tuple(p for p in problem.path.split("::") if p), problem.message)
                else:
                    self.error(path, str(problem))
        return obj if len(self.errors) == before else _INVALID

    def _check_constraints(self, f: dataclasses.Field, value: Any, path: tuple[str, ...]) -> None:
        meta = f.metadata or {}
        lo, hi, pattern = meta.get("min"), meta.get("max"), meta.get("pattern")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if lo is not None and value < lo:
                self.error(path, f"must be >= {lo}, got {value}")
            if hi is not None and value > hi:
                self.error(path, f"must be <= {hi}, got {value}")
        if pattern is not None and isinstance(value, str) and not pattern.fullmatch(value):
            self.error(path, f"invalid value {value!r} (must match {pattern.pattern})")


class _Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


_INVALID = _Invalid()


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def build(cls: type, raw: Any, path: tuple[str, ...] = (),
          lines: dict[tuple[str, ...], int] | None = None) -> tuple[Any, list[ConfigError]]:
    """Build ``cls`` from ``raw``; returns (instance or None, errors)."""
    builder = _Builder(lines)
    obj = builder.convert(cls, raw, path)
    if builder.errors or obj is _INVALID:
        return None, builder.errors
    return obj, []


def to_plain(obj: Any) -> Any:
    """A config dataclass as plain data (for ``validate --print`` and debugging)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
