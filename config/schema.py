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
    "parse_bytesize", "to_plain", "KeyDoc", "describe", "format_duration", "format_bytesize",
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
            max: float | None = None, pattern: str | None = None, doc: str = "",
            null_enables: bool = False) -> Any:
    """A dataclass field with constraints checked at load (``min``/``max`` inclusive).

    ``doc`` is the key's documentation: the reference pages (``python -m collector.docgen``) are
    generated from it, and a test requires one on every key.  ``null_enables`` is for an optional
    section (``X | None = None``) that a bare key switches on with its defaults, as the Collector's
    ``protocols: {grpc:}``: absent means off, present (even empty) means on.
    """
    meta = {"min": min, "max": max, "pattern": re.compile(pattern) if pattern else None, "doc": doc,
            "null_enables": null_enables}
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
            given = raw[name]
            if given is None and f.metadata.get("null_enables"):
                given = {}
            value = self.convert(hints[name], given, path + (name,))
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


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One config key as the reference pages show it (see :func:`describe`)."""

    path: str       # dotted; ``a[].b`` for a list of mappings, ``a.<name>.b`` for a mapping of them
    type: str
    default: str    # "required" when the key must be given
    allowed: str    # Literal choices, range and pattern, or ""
    doc: str


def describe(cls: type, prefix: str = "") -> list[KeyDoc]:
    """Every key of config dataclass ``cls``, nested dataclasses flattened as dotted paths.

    The same field metadata that :func:`build` enforces, so the documentation cannot say
    something the loader does not do.
    """
    hints = typing.get_type_hints(cls, include_extras=False)
    rows: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        meta = f.metadata or {}
        path = prefix + f.name
        rows.append(KeyDoc(path, _doc_type(tp), _doc_default(f, tp), _doc_allowed(tp, meta, f.name),
                           meta.get("doc", "")))
        nested, suffix = _nested_dataclass(tp)
        if nested is not None:
            rows.extend(describe(nested, path + suffix + "."))
    return rows


def _strip_none(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        non_none = [a for a in get_args(tp) if a is not type(None)]
        if len(non_none) == 1:
            return non_none[0]
    return tp


def _nested_dataclass(tp: Any) -> tuple[type | None, str]:
    """The dataclass whose keys sit below this one, and the path step to them."""
    tp = _strip_none(tp)
    if dataclasses.is_dataclass(tp):
        return tp, ""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple) and args and dataclasses.is_dataclass(args[0]):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return args[1], ".<name>"
    return None, ""


def _doc_type(tp: Any) -> str:
    tp = _strip_none(tp)
    origin, args = get_origin(tp), get_args(tp)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", Duration: "duration",
              ByteSize: "size"}
    if tp in simple:
        return simple[tp]
    if origin is Literal:
        return "string" if all(isinstance(a, str) for a in args) else "value"
    if origin in (list, tuple):
        return f"list of {_doc_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of string to {_doc_type(args[1])}" if len(args) == 2 else "mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_doc_type(a) for a in args if a is not type(None))
    if dataclasses.is_dataclass(tp) or tp is dict:
        return "mapping"
    return "any" if tp is Any else getattr(tp, "__name__", str(tp))


def format_duration(seconds: float) -> str:
    """``0.2`` -> ``200ms``, ``300`` -> ``5m``: the largest unit that writes it as a whole number."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3)):
        count = seconds / size
        if seconds and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def format_bytesize(size: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _doc_value(value: Any, tp: Any) -> str:
    tp = _strip_none(tp)
    if value is None:
        return "unset"
    if tp is Duration and isinstance(value, (int, float)):
        return format_duration(value)
    if tp is ByteSize and isinstance(value, int):
        return format_bytesize(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        return f'"{value}"'
    if dataclasses.is_dataclass(value):
        return "(section)"
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(to_plain(value), ensure_ascii=False)
    return str(value)


def _number(value: float) -> str:
    """``100.0`` -> ``100``, ``2**32 - 1`` in full, ``0.5`` as is."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _doc_default(f: dataclasses.Field, tp: Any) -> str:
    if f.default is not MISSING:
        return _doc_value(f.default, tp)
    if f.default_factory is not MISSING:
        return _doc_value(f.default_factory(), tp)
    return "required"


def _doc_allowed(tp: Any, meta: typing.Mapping[str, Any], name: str) -> str:
    """Choices, range and pattern, in the words the loader's errors use."""
    tp = _strip_none(tp)
    parts = []
    literal = tp if get_origin(tp) is Literal else None
    if get_origin(tp) in (list, tuple, dict) and get_args(tp) and get_origin(get_args(tp)[-1]) is Literal:
        literal = get_args(tp)[-1]
    if literal is not None:
        parts.append("one of " + ", ".join(str(c) for c in get_args(literal)))
    lo, hi = meta.get("min"), meta.get("max")
    fmt = (lambda v: _doc_value(v, tp)) if tp in (Duration, ByteSize) else _number
    if lo is not None and hi is not None:
        parts.append(f"{fmt(lo)} to {fmt(hi)}")
    elif lo is not None:
        parts.append(f">= {fmt(lo)}")
    elif hi is not None:
        parts.append(f"<= {fmt(hi)}")
    if meta.get("pattern") is not None:
        parts.append(f"matches `{meta['pattern'].pattern}`")
    return "; ".join(parts)
