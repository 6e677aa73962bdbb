"""A call's transcript from its log records: GenAI content sent as log events, joined to its span.

Instrumentations send a call's messages one of three ways: as span attributes, as one
``gen_ai.client.inference.operation.details`` log record (the span-attribute names as record
attributes, structured or JSON strings), or as the deprecated per-message log records
(``gen_ai.system.message`` ... ``gen_ai.choice``, content in the body).  The storage keeps every
record in ``logs`` and fills the span's ``input_messages`` / ``output_messages`` /
``system_instructions`` from them, so the query CLI reads one shape whichever way content came.

The join is a pure function of the span's own content and the set of its content records, so it
gives the same answer whatever order they arrive in, and again after a replay:

- a column the span carried itself is never touched (SPAN_AND_EVENT sends both: no duplicates);
- else the newest operation-details record that has it wins;
- else the per-message records, inputs in (time, arrival) order, choices by ``index``.

Replays cannot add messages: a record is stored once (``logs.record_key``).
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

from processors.genai_conventions import EVALUATION_EVENT, MESSAGE_EVENT_NAMES, OPERATION_DETAILS_EVENT
from processors.genai_normalize import message_from_event, messages_from_value, parts_from_value

__all__ = ["CONTENT_EVENTS", "ContentRecord", "record_kind", "transcript", "MESSAGE_COLUMNS"]

CONTENT_EVENTS: frozenset[str] = MESSAGE_EVENT_NAMES | {OPERATION_DETAILS_EVENT}
"""Log events that carry a call's content (``logs.kind = 'content'``): joined to their span's
transcript, and their body is content for ``content_ttl``."""

MESSAGE_COLUMNS: tuple[str, ...] = ("input_messages", "output_messages", "system_instructions")

_DETAILS_KEYS = {"input_messages": ("gen_ai.input.messages", "user"),
                 "output_messages": ("gen_ai.output.messages", "assistant"),
                 "system_instructions": ("gen_ai.system_instructions", None)}


def record_kind(event_name: str | None) -> str:
    """``logs.kind`` of a record: ``content``, ``evaluation`` or ``log``."""
    if event_name in CONTENT_EVENTS:
        return "content"
    if event_name == EVALUATION_EVENT:
        return "evaluation"
    return "log"


class ContentRecord(NamedTuple):
    """A stored content record, as the join reads it back (``body`` and ``content`` decoded)."""

    event_name: str
    timestamp: int
    id: int
    body: Any
    content: dict[str, Any] | None  # the record's content attributes (``logs.content``)


def _details(record: ContentRecord, column: str) -> Any:
    key, role = _DETAILS_KEYS[column]
    value = (record.content or {}).get(key)
    if value is None:
        return None
    return parts_from_value(value) if role is None else messages_from_value(value, role)


def _per_message(records: list[ContentRecord]) -> tuple[list[dict], list[dict]]:
    inputs: list[dict] = []
    choices: list[tuple[int, int, dict]] = []
    for r in records:
        body = r.body if isinstance(r.body, dict) else {"content": r.body}
        found = message_from_event(r.event_name, body)
        if found is None:
            continue
        is_output, message = found
        if is_output:
            index = body.get("index")
            choices.append((index if isinstance(index, int) else len(choices), len(choices), message))
        else:
            inputs.append(message)
    return inputs, [m for _i, _n, m in sorted(choices, key=lambda c: (c[0], c[1]))]


def transcript(records: Iterable[ContentRecord], fillable: Iterable[str]) -> dict[str, Any]:
    """The values of the ``fillable`` message columns that ``records`` give (absent: none)."""
    ordered = sorted(records, key=lambda r: (r.timestamp, r.id))
    details = [r for r in ordered if r.event_name == OPERATION_DETAILS_EVENT]
    per_message: tuple[list[dict], list[dict]] | None = None
    out: dict[str, Any] = {}
    for column in fillable:
        value = next((v for v in (_details(r, column) for r in reversed(details)) if v), None)
        if value is None and column != "system_instructions":
            if per_message is None:
                per_message = _per_message(ordered)
            value = per_message[column == "output_messages"] or None
        if value is not None:
            out[column] = value
    return out
