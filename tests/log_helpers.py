"""Builders of log records for the storage and query tests: plain records, GenAI content records
(operation details, the deprecated per-message events) and evaluation results, with readable ids
(trace 7 -> '00..07') matching :func:`tests.storage_helpers.span`."""

from __future__ import annotations

import json
from typing import Any

from collector.model_logs import LogBatch, LogRecord
from tests.storage_helpers import RESOURCE, SCOPE


def log(trace: int, span_no: int, *, body: Any = None, name: str = "", attributes: dict | None = None,
        severity: int = 9, severity_text: str = "INFO", time_s: float = 1000.0) -> LogRecord:
    """A record parented to span ``span_no`` of trace ``trace`` (0, 0: no span)."""
    return LogRecord(resource=RESOURCE, scope=SCOPE, time_unix_nano=int(time_s * 1e9),
                     observed_time_unix_nano=int(time_s * 1e9) if time_s else 0, severity_number=severity,
                     severity_text=severity_text, body=body, attributes=dict(attributes or {}),
                     trace_id=trace.to_bytes(16, "big") if trace else b"",
                     span_id=span_no.to_bytes(8, "big") if span_no else b"", event_name=name)


def details(trace: int, span_no: int, inputs: list | None = None, outputs: list | None = None,
            system: list | None = None, *, as_json: bool = False, time_s: float = 1000.95) -> LogRecord:
    """``gen_ai.client.inference.operation.details`` (structured values, or JSON strings)."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    for key, value in (("gen_ai.input.messages", inputs), ("gen_ai.output.messages", outputs),
                       ("gen_ai.system_instructions", system)):
        if value is not None:
            attributes[key] = json.dumps(value) if as_json else value
    return log(trace, span_no, name="gen_ai.client.inference.operation.details", attributes=attributes,
               severity=5, severity_text="", time_s=time_s)


def message(trace: int, span_no: int, name: str, body: dict, *, time_s: float = 1000.0,
            legacy_name: bool = False) -> LogRecord:
    """A deprecated per-message event; ``legacy_name`` puts the name in the ``event.name`` attribute."""
    attributes = {"gen_ai.system": "openai"} | ({"event.name": name} if legacy_name else {})
    return log(trace, span_no, body=body, name="" if legacy_name else name, attributes=attributes,
               severity=0, severity_text="", time_s=time_s)


def choice(trace: int, span_no: int, text: str, *, index: int = 0, time_s: float = 1000.0) -> LogRecord:
    return message(trace, span_no, "gen_ai.choice", {
        "index": index, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}, time_s=time_s)


def evaluation(trace: int, span_no: int, name: str, score: float | None, label: str | None = None,
               explanation: str | None = None, *, time_s: float = 1000.0) -> LogRecord:
    attributes = {"gen_ai.evaluation.name": name, "gen_ai.evaluation.score.value": score,
                  "gen_ai.evaluation.score.label": label, "gen_ai.evaluation.explanation": explanation}
    return log(trace, span_no, name="gen_ai.evaluation.result", severity=0, severity_text="", time_s=time_s,
               attributes={k: v for k, v in attributes.items() if v is not None})


def logs_batch(*records: LogRecord) -> LogBatch:
    return LogBatch(list(records))
