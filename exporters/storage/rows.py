"""Span -> database row, with every value made storable (the exporter's hot path).

Why a hand-written converter instead of SQLAlchemy Core per row: at tens of thousands of spans per
second every microsecond per span counts.  Rows are plain tuples in :data:`SPAN_COLUMNS` order,
handed to the DBAPI's ``executemany``.

Sanitising follows "fast path first": ``json.dumps`` in C handles the ordinary span; only when it
fails (NaN, bytes inside odd containers, non-string keys, lone surrogates, NUL characters, values
above ``max_content_bytes``) does the slow recursive cleaner run.  Nothing in here raises for bad
*values*; a span is rejected only when its ids cannot be keys (wrong length).
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

import orjson

from collector.model import LLM_OPERATIONS, Span
from processors.genai_content import content_keys

__all__ = ["SPAN_COLUMNS", "RowBuilder", "RowStats", "clean_value", "truncate_text", "uint64"]

SPAN_COLUMNS: tuple[str, ...] = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_unix_nano",
    "end_time_unix_nano", "duration_ms", "status_code", "status_message", "service_name",
    "scope_name", "scope_version", "trace_state", "flags",
    "provider", "operation", "request_model", "response_model", "model", "input_tokens",
    "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd",
    "ttft_ms", "output_tokens_per_second", "session_id", "user_id", "error_type",
    "input_messages", "output_messages", "system_instructions", "content_attributes", "events",
    "content_from_logs", "attributes", "resource_attributes", "links", "dropped_counts",
)
"""Column order of the tuples :meth:`RowBuilder.row` returns (every ``spans`` column but ``id``
and ``content_purged``)."""

INT64_MAX = 2**63 - 1
MAX_COST_USD = 1e12
"""A span's cost is clamped to +/- this (and counted as sanitized): sums of clamped costs stay
finite, where Postgres would refuse a float8 sum that overflows to infinity."""
_REPLACEMENT = "\ufffd"
_SURROGATES = re.compile("[\ud800-\udfff]")
_MARKER = "…[truncated {} bytes]"
_MAX_DEPTH = 64


def _default(obj: Any) -> Any:
    """``json.dumps`` fallback for the types OTLP attributes can hold but JSON cannot."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


_OPTIONS = orjson.OPT_NON_STR_KEYS


def _dumps(value: Any) -> str:
    """Compact JSON; orjson is ~5x faster than the stdlib here, which matters at 50k spans/s.

    It writes NaN and infinities as ``null`` (JSON has no such numbers) and raises on lone
    surrogates and integers beyond 64 bits, which sends the value through :func:`clean_value`.
    """
    return orjson.dumps(value, default=_default, option=_OPTIONS).decode()


class RowStats:
    """Per-batch tallies that become counters (one counter update per batch, not per value)."""

    __slots__ = ("sanitized", "truncated", "rejected")

    def __init__(self) -> None:
        self.sanitized = 0
        self.truncated = 0
        self.rejected = 0


def truncate_text(text: str, limit: int) -> str:
    """Cut ``text`` to about ``limit`` UTF-8 bytes and say how much was cut."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    keep = raw[:max(0, limit)].decode("utf-8", "ignore")
    return keep + _MARKER.format(len(raw) - len(keep.encode("utf-8")))


def _clean_str(text: str, limit: int) -> str:
    """Make a string storable everywhere: no lone surrogates, no NUL (Postgres refuses both)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (invalid UTF-8 decoded with surrogateescape)
            text = _SURROGATES.sub(_REPLACEMENT, text)
    if "\x00" in text:
        text = text.replace("\x00", _REPLACEMENT)
    if len(text) > limit // 4:
        text = truncate_text(text, limit)
    return text


def clean_value(value: Any, limit: int, depth: int = 0) -> Any:
    """Recursively turn any attribute value into JSON-safe data (the slow path)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _clean_str(value, limit)
    if isinstance(value, int):
        return value if -INT64_MAX <= value <= INT64_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return _clean_str(repr(value), limit)
    if isinstance(value, dict):
        return {_clean_str(str(k), limit): clean_value(v, limit, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [clean_value(v, limit, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _default(value)
    return _clean_str(str(value), limit)


TRUNCATED_KEY = "…[truncated]"
"""Key added to an object cut to fit ``max_content_bytes`` (arrays get a last string item)."""


def _fit_items(value: Any, limit: int) -> str:
    """The leading items of an object or array that fit ``limit`` bytes with a marker saying how
    many were dropped: still a JSON object (or array), so queries on the kept keys work."""
    reserve = 128  # the marker
    if isinstance(value, dict):
        kept: dict = {}
        used = 2
        for key, item in value.items():
            size = len(_dumps({key: item}).encode("utf-8")) - 1  # minus the braces, plus a comma
            if used + size + reserve > limit:
                break
            kept[key] = item
            used += size
        kept[TRUNCATED_KEY] = f"{len(value) - len(kept)} of {len(value)} entries dropped to fit max_content_bytes"
        return _dumps(kept)
    if isinstance(value, list):
        items: list = []
        used = 2
        for item in value:
            size = len(_dumps(item).encode("utf-8")) + 1
            if used + size + reserve > limit:
                break
            items.append(item)
            used += size
        items.append(f"{TRUNCATED_KEY} {len(value) - len(items)} of {len(value)} items dropped to fit "
                     f"max_content_bytes")
        return _dumps(items)
    return _dumps(truncate_text(_dumps(value), limit))


def _fits(text: str, limit: int) -> bool:
    return len(text) <= limit // 4 or len(text.encode("utf-8")) <= limit


_UNKNOWN = object()
_CLEAN_CACHE_SIZE = 50_000


class RowBuilder:
    """Builds ``spans`` rows; one instance per exporter (limits and a cache of clean strings)."""

    def __init__(self, max_content_bytes: int) -> None:
        self.limit = max(256, int(max_content_bytes))
        self._clean: dict[str, str | None] = {}

    # -- JSON ------------------------------------------------------------------------------------

    def json(self, value: Any, stats: RowStats) -> str | None:
        """JSON text for a column, or None for empty values; never raises."""
        if not value:
            return None
        try:
            # Without OPT_NON_STR_KEYS first: it costs ~8 % of the dump, and keys are strings
            # but in odd spans, which raise TypeError here and take the second try.
            raw = orjson.dumps(value, default=_default)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            try:
                raw = orjson.dumps(value, default=_default, option=_OPTIONS)
            except (TypeError, ValueError, RecursionError):
                return self._json_slow(value, stats)
        except (ValueError, RecursionError):
            return self._json_slow(value, stats)
        # orjson output is valid UTF-8 (it refuses lone surrogates), so only size and NUL remain.
        if len(raw) <= self.limit and b"\\u0000" not in raw:
            return raw.decode()
        return self._json_slow(value, stats)

    def _json_slow(self, value: Any, stats: RowStats) -> str:
        """Clean, then shrink long strings until the document fits ``max_content_bytes``.

        The first cut is by what overflows (a 15 MiB prompt keeps ~``max_content_bytes`` of
        text, not a quarter of it); when shortening strings no longer helps (200,000 small
        attributes), the leading items are kept with a marker (:func:`_fit_items`).
        """
        stats.sanitized += 1
        limit = self.limit
        per_string = limit
        previous = None
        while True:
            cleaned = clean_value(value, per_string)
            text = _dumps(cleaned)
            size = len(text.encode("utf-8")) if not _fits(text, limit) else 0
            if not size:
                if per_string < limit or text.count("…[truncated "):
                    stats.truncated += 1
                return text
            if per_string <= 256 or size == previous:
                break
            previous = size
            excess = size - limit
            per_string = per_string - excess - 64 if excess < per_string // 2 else per_string // 4
            per_string = max(per_string, 256)
        stats.truncated += 1
        return _fit_items(cleaned, limit)

    # -- scalars ---------------------------------------------------------------------------------

    def text(self, value: Any, stats: RowStats) -> str | None:
        """A storable string.  Names, models, session and user ids repeat from span to span, so
        strings already known to be clean are remembered: one dict lookup instead of checks."""
        known = self._clean.get(value, _UNKNOWN) if type(value) is str else _UNKNOWN
        if known is not _UNKNOWN:
            return known
        if value is None:
            return None
        cleaned = _clean_str(value if isinstance(value, str) else str(value), min(self.limit, 65536))
        if cleaned != value:
            stats.sanitized += 1
        elif len(value) <= 256:
            if len(self._clean) >= _CLEAN_CACHE_SIZE:
                self._clean.clear()
            self._clean[value] = cleaned or None
        return cleaned or None

    @staticmethod
    def integer(value: Any) -> int | None:
        """An int64 or None (tokens may arrive as floats or strings from sloppy instrumentations)."""
        if type(value) is int:
            return value if -INT64_MAX <= value <= INT64_MAX else None
        if value is None or isinstance(value, bool):
            return None
        try:
            number = int(float(value))
        except (TypeError, ValueError, OverflowError):
            return None
        return number if -INT64_MAX <= number <= INT64_MAX else None

    @staticmethod
    def real(value: Any) -> float | None:
        """A finite float or None (NaN/inf are not numbers a user can sum)."""
        if type(value) is float:
            return value if math.isfinite(value) else None
        if value is None or isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return number if math.isfinite(number) else None

    def cost(self, value: Any, stats: RowStats) -> float | None:
        """A finite cost within +/- :data:`MAX_COST_USD`."""
        number = self.real(value)
        if number is not None and abs(number) > MAX_COST_USD:
            stats.sanitized += 1
            return math.copysign(MAX_COST_USD, number)
        return number

    # -- a span ----------------------------------------------------------------------------------

    def row(self, span: Span, resource_json: str | None, stats: RowStats) -> tuple | None:
        """The ``spans`` row for ``span`` (None when its ids cannot be stored)."""
        trace_id, span_id = span.trace_id, span.span_id
        if len(trace_id) != 16 or len(span_id) != 8:
            stats.rejected += 1
            return None
        parent = span.parent_span_id
        start = uint64(span.start_time_unix_nano)
        end = uint64(span.end_time_unix_nano)
        text, integer, real, as_json = self.text, self.integer, self.real, self.json
        attributes, content_attributes = _split_attributes(span.attributes)
        scope = span.scope
        g = span.genai
        if g is None:
            genai: tuple = (None,) * 16 + (None, None, None)
        else:
            genai = (
                text(g.provider, stats), text(g.operation, stats), text(g.request_model, stats),
                text(g.response_model, stats), text(g.response_model or g.request_model, stats),
                integer(g.input_tokens), integer(g.output_tokens), integer(g.cache_read_tokens),
                integer(g.cache_write_tokens), integer(g.reasoning_tokens), self.cost(g.cost_usd, stats),
                real(g.ttft_ms), real(g.output_tokens_per_second), text(g.session_id, stats),
                text(g.user_id, stats), text(g.error_type, stats),
                as_json(g.input_messages, stats), as_json(g.output_messages, stats),
                as_json(g.system_instructions, stats),
            )
        dropped = None
        if span.dropped_attributes_count or span.dropped_events_count or span.dropped_links_count:
            dropped = _dumps({"attributes": integer(span.dropped_attributes_count) or 0,
                              "events": integer(span.dropped_events_count) or 0,
                              "links": integer(span.dropped_links_count) or 0})
        return (
            trace_id.hex(), span_id.hex(), parent.hex() if len(parent) == 8 else None,
            text(span.name, stats) or "", _enum(span.kind), start, end,
            max(0, end - start) / 1e6, _enum(span.status_code),
            text(span.status_message, stats), text(span.resource.service_name, stats),
            text(scope.name, stats), text(scope.version, stats), text(span.trace_state, stats),
            integer(span.flags),
            *genai,
            as_json(content_attributes, stats),
            as_json([_event(e) for e in span.events], stats) if span.events else None,
            0,  # content_from_logs: the write path sets it when it joins log records
            as_json(attributes, stats), resource_json,
            as_json([_link(lk) for lk in span.links], stats) if span.links else None,
            dropped,
        )


def _enum(value: Any) -> int:
    """OTLP enums fit a SMALLINT; anything else (hostile or future values) becomes 0."""
    if type(value) is int and 0 <= value <= 32767:
        return value
    number = RowBuilder.integer(value)
    return number if number is not None and 0 <= number <= 32767 else 0


def uint64(value: Any) -> int:
    """Times are uint64 on the wire; the columns are int64 (good until the year 2262).  The
    receivers reject spans with later times (partial success, ``collector.otlp``); anything
    else still reaching here is clamped to the nearest bound, never turned into 0."""
    if type(value) is int and 0 <= value <= INT64_MAX:
        return value
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, 0), INT64_MAX)


_CONTENT_KEYS: dict[tuple, tuple] = {}


def _split_attributes(attributes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Separate prompt/response-carrying attributes so ``content_ttl`` can null them.

    Spans from one instrumentation carry the same keys, so the answer is cached per key set.
    """
    keys = tuple(attributes)
    found = _CONTENT_KEYS.get(keys)
    if found is None:
        found = tuple(content_keys(attributes))
        if len(_CONTENT_KEYS) >= _CLEAN_CACHE_SIZE:
            _CONTENT_KEYS.clear()
        _CONTENT_KEYS[keys] = found
    if not found:
        return attributes, None
    plain = dict(attributes)
    content = {k: plain.pop(k) for k in found}
    return plain, content


def _event(event) -> dict[str, Any]:
    out: dict[str, Any] = {"name": event.name, "time_unix_nano": event.time_unix_nano}
    if event.attributes:
        out["attributes"] = event.attributes
    if event.dropped_attributes_count:
        out["dropped_attributes_count"] = event.dropped_attributes_count
    return out


def _link(link) -> dict[str, Any]:
    out: dict[str, Any] = {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
    if link.trace_state:
        out["trace_state"] = link.trace_state
    if link.attributes:
        out["attributes"] = link.attributes
    if link.flags:
        out["flags"] = link.flags
    return out


def is_turn(operation: str | None, model: str | None) -> bool:
    """Whether a span is an LLM call (a "turn" in the rollups)."""
    if operation is not None:
        return operation in LLM_OPERATIONS
    return model is not None
