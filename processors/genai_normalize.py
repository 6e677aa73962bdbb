"""``genai_normalize``: one canonical GenAI view of every span, whatever SDK produced it.

Fills ``span.genai`` (:class:`collector.model.GenAI`) from the OpenTelemetry GenAI conventions
(current and older names), OpenInference, OpenLLMetry, Langfuse and OpenLIT, including the flattened
message forms and the deprecated per-message events (the table is in
:mod:`processors.genai_conventions`).  Spans with no GenAI signal keep ``span.genai = None``.

This is the hot path of the default pipeline, so it costs one pass over the attribute keys with a
dict lookup per key (prefix checks only for keys the table does not know), one pass over events
only when a span has events, and JSON parsing only for message attributes.

With ``rewrite_attributes: true`` the span's attributes are also rewritten to the current
conventions (dialect keys removed, canonical keys written), so upstream stacks see one dialect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from collector.component import ComponentContext, Factory, Processor
from collector.model import STATUS_ERROR, GenAI, Span, SpanBatch
from config.schema import setting
from processors.genai_conventions import (
    ATTRIBUTE_MAP, CANONICAL_ATTRIBUTES, COMPLETION_EVENT, FLAT_MESSAGE_PREFIXES, LEGACY_KEYS,
    MESSAGE_EVENT_NAMES, MESSAGE_EVENT_ROLES, OPENINFERENCE_INVOCATION_PARAMETERS, OPENINFERENCE_IO_KEYS, PROMPT_EVENT,
    Conv, normalize_operation, normalize_provider, to_cost, to_count, to_seconds,
)

__all__ = ["GenAINormalizeConfig", "GenAINormalizeProcessor", "normalize_span", "FACTORY",
           "messages_from_value", "message_from_openai", "message_from_event", "parts_from_value"]


@dataclass
class GenAINormalizeConfig:
    rewrite_attributes: bool = setting(False, doc="also rewrite span attributes to the current "
                                                  "GenAI semantic conventions")
    messages: bool = setting(True, doc="parse prompt/completion messages into span.genai; turn off "
                                       "when content is not captured or not wanted")


# --------------------------------------------------------------------------------------------
# messages

def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def _tool_call_part(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function")
    fn = fn if isinstance(fn, dict) else call
    return {"type": "tool_call", "id": call.get("id"), "name": fn.get("name"),
            "arguments": fn.get("arguments")}


def _content_parts(content: Any) -> list[dict[str, Any]]:
    """OpenAI-style ``content`` (a string or a list of typed items) -> OTel message parts."""
    if isinstance(content, str):
        return [_text_part(content)] if content else []
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for item in content:
            if isinstance(item, str):
                parts.append(_text_part(item))
            elif isinstance(item, dict):
                kind = item.get("type", "text")
                text = item.get("text", item.get("content"))
                if isinstance(text, str) and kind in ("text", "input_text", "output_text"):
                    parts.append(_text_part(text))
                elif kind == "tool_use":  # Anthropic content blocks
                    parts.append({"type": "tool_call", "id": item.get("id"), "name": item.get("name"),
                                  "arguments": item.get("input")})
                elif kind == "tool_result":
                    parts.append({"type": "tool_call_response", "id": item.get("tool_use_id"),
                                  "response": item.get("content")})
                else:
                    parts.append({"type": str(item.get("type") or "unknown"),
                                  **{k: v for k, v in item.items() if k != "type"}})
        return parts
    if content is None:
        return []
    return [_text_part(_dumps(content) if isinstance(content, dict) else str(content))]


def message_from_openai(msg: dict[str, Any], default_role: str) -> dict[str, Any]:
    """An OpenAI-style chat message (``role``/``content``/``tool_calls``) -> the OTel message form.

    A message already in the OTel form (with ``parts``) is returned unchanged.
    """
    if isinstance(msg.get("parts"), list):
        return msg
    role = msg.get("role") or default_role
    content = msg.get("content")
    if role == "tool" or msg.get("tool_call_id"):
        parts = [{"type": "tool_call_response", "id": msg.get("tool_call_id") or msg.get("id"),
                  "response": content}]
    else:
        parts = _content_parts(content)
        calls = msg.get("tool_calls")
        if isinstance(calls, str):
            calls = _loads(calls)
        if isinstance(calls, list):
            parts.extend(_tool_call_part(c) for c in calls if isinstance(c, dict))
    out = {"role": role, "parts": parts}
    if msg.get("finish_reason"):
        out["finish_reason"] = msg["finish_reason"]
    return out


def _loads(text: str) -> Any:
    """orjson: ~4x faster than json here, and message JSON is most of normalize's work."""
    try:
        return orjson.loads(text)
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return None


def _looks_like_json(text: str) -> bool:
    """An array or object, judged by the first character (no copy of a long prompt)."""
    first = text[:1]
    if first == "[" or first == "{":
        return True
    return first.isspace() and text.lstrip()[:1] in ("[", "{")


def messages_from_value(value: Any, default_role: str) -> list[dict[str, Any]] | None:
    """Messages from an attribute value: structured list, JSON string, or plain text.

    Plain (non-JSON) text becomes one message with ``default_role``: OpenLIT and Langfuse store
    prompts that way.
    """
    if isinstance(value, str):
        parsed = _loads(value) if _looks_like_json(value) else None
        if parsed is None:
            return [{"role": default_role, "parts": [_text_part(value)]}] if value else None
        value = parsed
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):  # a request body
            value = value["messages"]
        elif isinstance(value.get("choices"), list):  # a chat completion response
            return _messages_from_choices(value["choices"]) or None
        else:
            value = [value]
    if type(value) is not list or not value:
        return None
    for m in value:  # the common case: already the OTel form, returned as parsed
        if type(m) is not dict or type(m.get("parts")) is not list:
            break
    else:
        return value
    return [message_from_openai(m, default_role) if isinstance(m, dict)
            else {"role": default_role, "parts": [_text_part(str(m))]} for m in value]


def parts_from_value(value: Any) -> list[dict[str, Any]] | None:
    """``gen_ai.system_instructions``: a list of parts (or a JSON string of one)."""
    if isinstance(value, str):
        parsed = _loads(value) if _looks_like_json(value) else None
        if parsed is None:
            return [_text_part(value)] if value else None
        value = parsed
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        return [p if isinstance(p, dict) else _text_part(str(p)) for p in value] or None
    return None


def _messages_from_choices(choices: list[Any]) -> list[dict[str, Any]]:
    out = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        msg = choice.get("message") or choice.get("delta") or {}
        if isinstance(msg, str):
            msg = _loads(msg) or {"content": msg}
        if isinstance(choice.get("text"), str):
            msg = {"content": choice["text"]}
        if isinstance(msg, dict):
            converted = message_from_openai({**msg, "finish_reason": choice.get("finish_reason")}, "assistant")
            out.append(converted)
    return out


def _flat_messages(entries: dict[int, dict[str, Any]], default_role: str) -> list[dict[str, Any]]:
    """Rebuild messages from flattened ``<prefix>.<i>.<field>`` attributes."""
    out = []
    for index in sorted(entries):
        fields = entries[index]
        msg: dict[str, Any] = {"role": fields.get("role") or default_role}
        content = fields.get("content")
        if fields.get("tool_call_id") is not None:
            msg["parts"] = [{"type": "tool_call_response", "id": fields["tool_call_id"], "response": content}]
        else:
            parts = _content_parts(content) if content is not None else []
            nested = fields.get(".")
            if nested:
                parts.extend(_nested_parts(nested))
            msg["parts"] = parts
        if fields.get("finish_reason"):
            msg["finish_reason"] = fields["finish_reason"]
        out.append(msg)
    return out


def _nested_parts(nested: dict[str, Any]) -> list[dict[str, Any]]:
    """``contents.<j>.message_content.text`` and ``tool_calls.<j>.(tool_call.function.)name`` keys."""
    contents: dict[int, dict[str, Any]] = {}
    calls: dict[int, dict[str, Any]] = {}
    for key, value in nested.items():
        head, _, rest = key.partition(".")
        if head not in ("contents", "tool_calls") or not rest:
            continue
        num, _, sub = rest.partition(".")
        if not num.isdigit():
            continue
        for prefix in ("message_content.", "tool_call.function.", "tool_call.", "function."):
            if sub.startswith(prefix):
                sub = sub[len(prefix):]
                break
        (contents if head == "contents" else calls).setdefault(int(num), {})[sub] = value
    parts = []
    for j in sorted(contents):
        item = contents[j]
        if isinstance(item.get("text"), str):
            parts.append(_text_part(item["text"]))
        elif item:
            parts.append({"type": str(item.pop("type", "unknown")), **item})
    for j in sorted(calls):
        call = calls[j]
        parts.append({"type": "tool_call", "id": call.get("id"), "name": call.get("name"),
                      "arguments": call.get("arguments")})
    return parts


def _flat_entry(key: str) -> tuple[Any, str, int, str] | None:
    """Parse a flattened-message key once: ``(_FLAT, segment, message index, field)``.

    Every flattened form has the message index third: ``gen_ai.prompt.<i>.<field>``,
    ``llm.input_messages.<i>.message.<field>``.  The parsed entry is remembered in the dispatch
    table (up to ``_MAX_LEARNED_KEYS`` keys), so the next span with the same key pays one dict
    lookup, like a known key.
    """
    pieces = key.split(".", 3)
    if len(pieces) != 4 or not pieces[2].isdigit():
        return None
    sub = pieces[3][8:] if pieces[3].startswith("message.") else pieces[3]
    entry = (_FLAT, pieces[1], int(pieces[2]), sub)
    global _learned_keys
    if _learned_keys < _MAX_LEARNED_KEYS:
        _learned_keys += 1
        _DISPATCH[key] = entry
    return entry


def message_from_event(name: str, fields: dict[str, Any]) -> tuple[bool, dict[str, Any]] | None:
    """One deprecated per-message event (``gen_ai.<role>.message``, ``gen_ai.choice``) ->
    (is an output, the message in the OTel form); None for other names.

    ``fields`` is where the event keeps its content: a span event's attributes, or a log record's
    body map (``{"content": ...}``, ``{"message": {...}, "finish_reason", "index"}``).  Shared by
    span events (here) and log records (:mod:`exporters.storage.transcript`).
    """
    role = MESSAGE_EVENT_ROLES.get(name)
    if role is None:
        return None
    body = fields.get("gen_ai.event.content")
    body = _loads(body) if isinstance(body, str) else body
    if not isinstance(body, dict):
        body = fields
    if name == "gen_ai.choice":
        msg = body.get("message")
        msg = _loads(msg) if isinstance(msg, str) else msg
        msg = dict(msg) if isinstance(msg, dict) else {"content": body.get("content")}
        msg.setdefault("finish_reason", body.get("finish_reason"))
        return True, message_from_openai(msg, role)
    return False, message_from_openai({k: body.get(k) for k in ("role", "content", "tool_calls", "tool_call_id", "id")
                                       if body.get(k) is not None}, role)


def _event_messages(span: Span) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Messages from the deprecated ``gen_ai.<role>.message`` / ``gen_ai.choice`` events and the
    older ``gen_ai.content.prompt`` / ``gen_ai.content.completion`` events."""
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for event in span.events:
        name = event.name
        attrs = event.attributes
        found = message_from_event(name, attrs)
        if found is not None:
            (outputs if found[0] else inputs).append(found[1])
        elif name == PROMPT_EVENT:
            inputs.extend(messages_from_value(attrs.get("gen_ai.prompt"), "user") or ())
        elif name == COMPLETION_EVENT:
            outputs.extend(messages_from_value(attrs.get("gen_ai.completion"), "assistant") or ())
    return inputs, outputs


# --------------------------------------------------------------------------------------------
# the single pass

def _iso_to_ns(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1e9)


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _provider(value: Any) -> str | None:
    return normalize_provider(value) if isinstance(value, str) and value else None


def _operation(value: Any) -> str | None:
    return normalize_operation(value) or None if isinstance(value, str) and value else None


def _seconds_to_ms(value: Any) -> float | None:
    seconds = to_seconds(value)
    return None if seconds is None else seconds * 1000.0


def _finish(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value] if value else None
    if type(value) is list:  # a fresh list decoded for this span: no copy needed
        return value or None
    return None


def _json_dict(value: Any) -> dict[str, Any] | None:
    value = _loads(value) if isinstance(value, str) else value
    return value if isinstance(value, dict) else None


def _json_cost(value: Any) -> float | None:
    details = _json_dict(value)
    if details is None:
        return None
    total = details.get("total")
    if total is None:
        costs = [to_cost(v) for v in details.values()]
        return sum(costs) if costs and None not in costs else None  # type: ignore[arg-type]
    return to_cost(total)


def _input_messages(value: Any) -> list[dict[str, Any]] | None:
    return messages_from_value(value, "user")


def _output_messages(value: Any) -> list[dict[str, Any]] | None:
    return messages_from_value(value, "assistant")


_CONVERTERS: dict[int, Callable[[Any], Any]] = {
    Conv.STR: _str, Conv.COUNT: to_count, Conv.SECONDS: _seconds_to_ms, Conv.COST: to_cost,
    Conv.PROVIDER: _provider, Conv.OPERATION: _operation, Conv.ISO_TIME: _iso_to_ns,
    Conv.JSON_USAGE: _json_dict, Conv.JSON_COST: _json_cost, Conv.FINISH: _finish,
}
_MESSAGE_FIELDS = {"input_messages": _input_messages, "output_messages": _output_messages,
                   "system_instructions": parts_from_value}
# (converter, field, precedence, signal) per key, resolved once: the loop does no further lookups.
_DISPATCH: dict[str, tuple[Callable[[Any], Any], str, int, bool]] = {
    key: (_MESSAGE_FIELDS[field] if conv in (Conv.MESSAGES, Conv.LEGACY_MESSAGES) else _CONVERTERS[conv],
          field, prio, signal)
    for key, (field, conv, prio, signal) in ATTRIBUTE_MAP.items()
}
# with ``messages: false`` the message keys are simply not looked at
_DISPATCH_NO_MESSAGES = {k: v for k, v in _DISPATCH.items() if v[1] not in _MESSAGE_FIELDS}
_GENAI_NAMESPACES = ("gen_ai.", "llm.")
_FLAT = object()  # converter slot of a learned flattened-message key
_MAX_LEARNED_KEYS = 20_000
_learned_keys = 0
_FLAT_PRECEDENCE = 2  # flattened messages rank after structured ones, before legacy JSON blobs
_ABSOLUTE_TTFT_PRECEDENCE = ATTRIBUTE_MAP["langfuse.observation.completion_start_time"][2]
_LANGFUSE_USAGE = {"input": "input_tokens", "output": "output_tokens",
                   "cache_read_input_tokens": "cache_read_tokens", "input_cached_tokens": "cache_read_tokens",
                   "cache_creation_input_tokens": "cache_write_tokens",
                   "output_reasoning_tokens": "reasoning_tokens", "reasoning_tokens": "reasoning_tokens"}


class _Stats:
    __slots__ = ("invalid",)

    def __init__(self) -> None:
        self.invalid = 0


def normalize_span(span: Span, parse_messages: bool = True, stats: _Stats | None = None) -> GenAI | None:
    """The canonical GenAI fields of ``span``, or None when nothing marks it as a GenAI span."""
    values: dict[str, Any] = {}
    prios: dict[str, int] = {}
    flat: dict[str, dict[int, dict[str, Any]]] | None = None
    is_genai = False
    invalid = 0
    dispatch_get = (_DISPATCH if parse_messages else _DISPATCH_NO_MESSAGES).get
    for key, value in span.attributes.items():
        entry = dispatch_get(key)
        if entry is None:
            if not key.startswith(_GENAI_NAMESPACES):
                continue
            is_genai = True  # any gen_ai.* / llm.* key marks a GenAI span
            if not parse_messages or not key.startswith(FLAT_MESSAGE_PREFIXES):
                continue
            entry = _flat_entry(key)
            if entry is None:
                continue
        convert, field, prio, signal = entry
        if convert is _FLAT:  # a flattened message field: (segment, message index, field name)
            is_genai = True
            if flat is None:
                flat = {}
            fields = flat.setdefault(field, {}).setdefault(prio, {})
            if "." in signal:  # nested (tool calls, content lists): parsed only when present
                fields.setdefault(".", {})[signal] = value
            else:
                fields[signal] = value
            continue
        current = prios.get(field)
        if current is not None and current <= prio:
            continue
        # plain strings and counts are most values: checked inline, no call
        if (convert is _str and type(value) is str and value) or (
                convert is to_count and type(value) is int and value >= 0):
            converted = value
        else:
            converted = convert(value)
        if converted is None:
            if convert is not _operation:  # an uninformative kind (Langfuse "span") is not invalid
                invalid += 1
            continue
        values[field] = converted
        prios[field] = prio
        if signal:
            is_genai = True
    if stats is not None and invalid:
        stats.invalid += invalid
    event_in: list[dict[str, Any]] = []
    event_out: list[dict[str, Any]] = []
    if span.events and parse_messages:
        event_in, event_out = _event_messages(span)
        is_genai = is_genai or bool(event_in or event_out)
    if not is_genai:
        return None
    return _build(span, values, prios, flat, event_in, event_out, parse_messages)


def _build(span: Span, values: dict[str, Any], prios: dict[str, int], flat: dict | None,
           event_in: list, event_out: list, parse_messages: bool) -> GenAI:
    v = values.get
    g = GenAI(
        provider=v("provider"), operation=v("operation"), request_model=v("request_model"),
        response_model=v("response_model"), input_tokens=v("input_tokens"), output_tokens=v("output_tokens"),
        cache_read_tokens=v("cache_read_tokens"), cache_write_tokens=v("cache_write_tokens"),
        reasoning_tokens=v("reasoning_tokens"), cost_usd=v("cost_usd"), session_id=v("session_id"),
        user_id=v("user_id"), error_type=v("error_type"),
    )
    if "usage_json" in values or "total_tokens" in values:
        _fill_tokens(g, values)
    ttft = v("ttft_ms")
    if ttft is not None:
        if prios["ttft_ms"] == _ABSOLUTE_TTFT_PRECEDENCE:  # an absolute time, not a duration
            delta = ttft - span.start_time_unix_nano
            g.ttft_ms = delta / 1e6 if span.start_time_unix_nano and delta >= 0 else None
        else:
            g.ttft_ms = ttft
    if g.error_type is not None or span.status_code == STATUS_ERROR:
        g.error_type = _error_type(span, g.error_type)
    if parse_messages:
        _fill_messages(g, span, values, prios, flat, event_in, event_out)
    if g.request_model is None:
        params = span.attributes.get(OPENINFERENCE_INVOCATION_PARAMETERS)
        if isinstance(params, str) and '"model"' in params:
            model = (_json_dict(params) or {}).get("model")
            g.request_model = model if isinstance(model, str) and model else None
    return g


def _fill_tokens(g: GenAI, values: dict[str, Any]) -> None:
    """Langfuse's usage JSON, and the side a dialect left out when it sent a total."""
    usage = values.get("usage_json")
    if usage:
        for name, field in _LANGFUSE_USAGE.items():
            count = to_count(usage.get(name))
            if count is not None and getattr(g, field) is None:
                setattr(g, field, count)
    total = values.get("total_tokens")
    if total is None and usage:
        total = to_count(usage.get("total"))
    if total is not None:
        if g.input_tokens is None and g.output_tokens is not None and total >= g.output_tokens:
            g.input_tokens = total - g.output_tokens
        elif g.output_tokens is None and g.input_tokens is not None and total >= g.input_tokens:
            g.output_tokens = total - g.input_tokens


def _error_type(span: Span, reported: str | None) -> str:
    """One name per error whatever the dialect: the fully qualified exception class when the span
    has an ``exception`` event that agrees (``InternalServerError`` ->
    ``openai.InternalServerError``), without the ``<class '...'>`` wrapping some SDKs send."""
    if reported is not None and reported.startswith("<class '") and reported.endswith("'>"):
        reported = reported[8:-2]
    exception = _exception_type(span) if span.events else None
    if exception and (reported is None or exception.endswith("." + reported)):
        return exception
    return reported or "_OTHER"


def _exception_type(span: Span) -> str | None:
    for event in span.events:
        if event.name == "exception":
            kind = event.attributes.get("exception.type")
            if isinstance(kind, str) and kind:
                return kind
    return None


# (field, flattened forms by their second key segment, default role, OpenInference I/O key)
_INPUT_SOURCES = ("input_messages", ("prompt", "input_messages"), "user", OPENINFERENCE_IO_KEYS[0])
_OUTPUT_SOURCES = ("output_messages", ("completion", "output_messages"), "assistant", OPENINFERENCE_IO_KEYS[1])


def _pick_messages(span: Span, values: dict[str, Any], prios: dict[str, int], flat: dict | None,
                   events: list, sources: tuple) -> list[dict[str, Any]] | None:
    """Messages by precedence: structured attribute, flattened form, legacy JSON/text attribute,
    deprecated events, and last OpenInference's generic ``input.value`` / ``output.value``."""
    field, segments, role, io_key = sources
    messages = values.get(field)
    if messages is not None and prios[field] < _FLAT_PRECEDENCE:
        return messages
    if flat:
        for segment in segments:
            if segment in flat:
                return _flat_messages(flat[segment], role)
    if messages is not None:
        return messages
    if events:
        return events
    io_value = span.attributes.get(io_key)
    return messages_from_value(io_value, role) if io_value is not None else None


def _fill_messages(g: GenAI, span: Span, values: dict[str, Any], prios: dict[str, int], flat: dict | None,
                   event_in: list, event_out: list) -> None:
    g.input_messages = _pick_messages(span, values, prios, flat, event_in, _INPUT_SOURCES)
    outputs = g.output_messages = _pick_messages(span, values, prios, flat, event_out, _OUTPUT_SOURCES)
    g.system_instructions = values.get("system_instructions")
    reasons = values.get("finish_reasons")
    if reasons and outputs and len(reasons) == len(outputs):
        for msg, reason in zip(outputs, reasons):
            if "finish_reason" not in msg:
                msg["finish_reason"] = reason


# --------------------------------------------------------------------------------------------
# rewrite to the current conventions

def _dumps(value: Any) -> str:
    """Compact JSON; integers beyond 64 bits or very deep nesting (which orjson refuses) go
    through the json module, and whatever that refuses too becomes its ``str``."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        except (ValueError, RecursionError):
            return str(value)


def rewrite_attributes(span: Span, g: GenAI) -> None:
    """Replace every dialect key with its canonical GenAI semconv name (values from ``g``)."""
    attrs = span.attributes
    derived_messages = g.input_messages is not None or g.output_messages is not None
    for key in [k for k in attrs if k in LEGACY_KEYS or k.startswith(FLAT_MESSAGE_PREFIXES)
                or (derived_messages and k in _IO_KEYS)]:
        del attrs[key]
    for field, key in CANONICAL_ATTRIBUTES.items():
        value = getattr(g, field, None)
        if value is None:
            continue
        if field in _MESSAGE_FIELDS:
            current = attrs.get(key)
            if type(current) is not str or current[:1] != "[":  # else: the JSON g was parsed from
                attrs[key] = _dumps(value)
        elif field == "ttft_ms":
            attrs.setdefault(key, value / 1000.0)
        else:
            attrs[key] = value
    if derived_messages and span.events:
        span.events = [e for e in span.events if e.name not in MESSAGE_EVENT_NAMES]


_IO_KEYS = frozenset(OPENINFERENCE_IO_KEYS) | {"input.mime_type", "output.mime_type"}


# --------------------------------------------------------------------------------------------
# the processor

class GenAINormalizeProcessor(Processor):
    def __init__(self, config: GenAINormalizeConfig, ctx: ComponentContext) -> None:
        self.rewrite = config.rewrite_attributes
        self.parse_messages = config.messages
        self.logger = ctx.logger
        self.genai_spans = ctx.counter("genai_spans", "spans recognised as GenAI spans")
        self.invalid_values = ctx.counter(
            "genai_invalid_values", "GenAI attributes whose value had the wrong type or range (ignored)")
        self.failed = ctx.counter("genai_normalize_errors", "spans whose normalization failed (kept as is)")

    def process(self, batch: SpanBatch) -> SpanBatch:
        stats = _Stats()
        recognised = failed = 0
        parse, rewrite = self.parse_messages, self.rewrite
        for span in batch.spans:
            try:
                g = normalize_span(span, parse, stats)
                span.genai = g
                if g is not None:
                    recognised += 1
                    if rewrite:
                        rewrite_attributes(span, g)
            except Exception:  # one hostile span must not cost the batch
                failed += 1
                if failed == 1:
                    self.logger.warning("genai_normalize failed on span %r", span, exc_info=True)
        self.genai_spans.add(recognised)
        self.invalid_values.add(stats.invalid)
        self.failed.add(failed)
        return batch

    def shutdown(self) -> None:
        pass


def _create(config: GenAINormalizeConfig, ctx: ComponentContext) -> GenAINormalizeProcessor:
    return GenAINormalizeProcessor(config, ctx)


FACTORY = Factory("genai_normalize", GenAINormalizeConfig, _create,
                  doc="canonical GenAI fields from every dialect (OTel GenAI, OpenInference, "
                      "OpenLLMetry, Langfuse, OpenLIT)",
                  example="""\
rewrite_attributes: false    # true: upstream stacks see only the current conventions
""")
