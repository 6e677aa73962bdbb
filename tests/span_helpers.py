"""Span builders shared by the session and sampling tests (real model objects, no mocks)."""

from __future__ import annotations

import os
from typing import Any

from collector.component import ComponentContext
from collector.model import Resource, Scope, Span, SpanBatch
from collector.telemetry import Telemetry

MINUTE_NS = 60 * 10**9
T0 = 1_700_000_000 * 10**9  # an arbitrary wall-clock instant for span times

_RESOURCES: dict[str, Resource] = {}
_SCOPE = Scope("tests")


def resource(service: str) -> Resource:
    """One shared Resource per service, as the decoder shares them per ResourceSpans."""
    if service not in _RESOURCES:
        _RESOURCES[service] = Resource({"service.name": service})
    return _RESOURCES[service]


def trace_id() -> bytes:
    return os.urandom(16)


def span(tid: bytes | None = None, *, service: str = "chat-api", start: int = T0, duration_ms: float = 100,
         status: int = 0, name: str = "chat gpt-4o", **attributes: Any) -> Span:
    """A span; keyword attributes use ``__`` for dots (``gen_ai__conversation__id=...``)."""
    attrs = {key.replace("__", "."): value for key, value in attributes.items()}
    return Span(resource=resource(service), scope=_SCOPE, trace_id=tid or trace_id(), span_id=os.urandom(8),
                name=name, start_time_unix_nano=start, end_time_unix_nano=start + int(duration_ms * 1e6),
                attributes=attrs, status_code=status)


def batch(*spans: Span) -> SpanBatch:
    return SpanBatch(list(spans), nbytes=100 * len(spans))


def context(component_id: str, telemetry: Telemetry | None = None) -> ComponentContext:
    import logging

    return ComponentContext(id=component_id, kind="processor", telemetry=telemetry or Telemetry(),
                            logger=logging.getLogger(f"test.{component_id}"), pipeline="traces")
