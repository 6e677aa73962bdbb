"""Log record -> ``logs`` row, made storable the same way span rows are (:mod:`.rows`).

The row's ``record_key`` is a digest of the stored values (the record as sent, with its resource
and scope): the write path inserts with ``ON CONFLICT (record_key) DO NOTHING``, so a client retry
or a journal replay of the same records stores each once.  ``timestamp_unix_nano`` (the record's
time, else its observed time, else the time it was stored) and ``received_unix_nano`` are left out
of the digest: only they can differ between two deliveries of one record.  A replay keeps the first
delivery's receipt time (the insert does nothing).
"""

from __future__ import annotations

import hashlib
from typing import Any

from exporters.storage.rows import RowBuilder, RowStats, uint64
from exporters.storage.transcript import record_kind
from processors.genai_content import is_content_event_attribute

__all__ = ["LOG_COLUMNS", "log_row"]

LOG_COLUMNS: tuple[str, ...] = (
    "record_key", "timestamp_unix_nano", "received_unix_nano", "time_unix_nano", "observed_time_unix_nano", "severity_number",
    "severity_text", "event_name", "kind", "trace_id", "span_id", "flags", "service_name", "scope_name",
    "scope_version", "body", "content", "attributes", "resource_attributes", "dropped_attributes_count",
)
"""Column order of the tuples :func:`log_row` returns (every ``logs`` column but ``id`` and
``content_purged``)."""

_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


def _split(event_name: str, attributes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Attributes that carry content (as :mod:`processors.genai_content` defines it for an event of
    this name) go to the ``content`` column, which ``content_ttl`` nulls."""
    content = {k: v for k, v in attributes.items() if is_content_event_attribute(event_name, k)}
    if not content:
        return attributes, None
    return {k: v for k, v in attributes.items() if k not in content}, content


def _body_json(builder: RowBuilder, body: Any, stats: RowStats) -> str | None:
    """Any body but an absent one is kept, falsy scalars (0, false) included."""
    if body is None or body == "":
        return None
    if not body and not isinstance(body, (dict, list)):
        return "false" if body is False else "0"
    return builder.json(body, stats)


def log_row(builder: RowBuilder, record: Any, resource_json: str | None, stats: RowStats, now: int) -> tuple:
    """The ``logs`` row of one decoded log record received at ``now`` (unix ns); never raises for
    bad values."""
    text, integer = builder.text, builder.integer
    trace_id, span_id = record.trace_id, record.span_id
    # Ids of the wrong length or all zero mean "no span": the record is kept, unjoined.
    has_span = len(trace_id) == 16 and len(span_id) == 8 and trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN
    t, observed = uint64(record.time_unix_nano) or None, uint64(record.observed_time_unix_nano) or None
    name = text(record.name, stats)  # event_name, else the older event.name attribute
    attributes, content = _split(name or "", record.attributes)
    resource, scope = record.resource, record.scope
    values = (
        t, observed, min(max(integer(record.severity_number) or 0, 0), 32767), text(record.severity_text, stats),
        name, record_kind(name), trace_id.hex() if has_span else None, span_id.hex() if has_span else None,
        integer(record.flags) or None, text(resource.service_name, stats), text(scope.name, stats),
        text(scope.version, stats), _body_json(builder, record.body, stats), builder.json(content, stats),
        builder.json(attributes, stats), resource_json, integer(record.dropped_attributes_count) or None,
    )
    key = hashlib.blake2b(repr(values).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return (key, t or observed or now, now, *values)
