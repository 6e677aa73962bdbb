"""Shared helpers for the GenAI processor tests: build processors the way the runtime does."""

from __future__ import annotations

import logging
from typing import Any

from collector.component import ComponentContext
from collector.model import Event, Resource, Scope, Span, SpanBatch
from collector.telemetry import Telemetry
from config.schema import build
from processors import PROCESSORS

START_NS = 1_750_000_000_000_000_000  # 2025-06-15T15:06:40Z


def make_processor(type_name: str, raw: dict[str, Any] | None = None, telemetry: Telemetry | None = None):
    """Config built and validated from a plain dict (as YAML would give), factory from the registry."""
    factory = PROCESSORS.get(type_name)
    config, errors = build(factory.config_class, raw or {})
    assert not errors, errors
    ctx = ComponentContext(type_name, "processor", telemetry or Telemetry(), logging.getLogger(type_name))
    return factory.create(config, ctx)


def make_span(attributes: dict[str, Any] | None = None, events: list[Event] | None = None,
              duration_ms: float = 1000.0, start_ns: int = START_NS, status_code: int = 0,
              name: str = "chat") -> Span:
    return Span(resource=Resource({"service.name": "app"}), scope=Scope("test"), trace_id=b"\x01" * 16,
                span_id=b"\x02" * 8, name=name, start_time_unix_nano=start_ns,
                end_time_unix_nano=start_ns + int(duration_ms * 1e6), attributes=dict(attributes or {}),
                events=events or [], status_code=status_code)


def run(processors: list, spans: list[Span]) -> list[Span]:
    batch = SpanBatch(spans)
    for processor in processors:
        batch = processor.process(batch)
    return batch.spans
