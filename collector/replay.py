"""Replay a stored LLM call: send its messages (and tools) again, maybe with another model or
system prompt, to an OpenAI-compatible chat completions endpoint, and compare the answers.

One function, :func:`replay`, serves the ``replay`` command and ``POST /api/v1/replay``:

- the call is read through the query layer (:func:`collector.query.queries.trace_detail`: the
  transcript ``trace`` shows), never from a copy of it;
- it refuses, naming the reason, when what is stored is not what was sent: content removed by
  ``content_ttl`` (``content_purged``), stripped by content sampling (``sampling.content``),
  dropped or rewritten by redaction (``redaction.content.dropped`` / ``redaction.redacted.*``);
- the request goes out with the standard library's HTTP client (no SDK: the chat completions
  wire format is a small JSON document, and the ``openai`` package is only a test dependency);
  the API key comes from the environment and is only ever put in the ``Authorization`` header;
- tokens are priced by the ``genai_cost`` processor itself (genai-prices), as at ingest;
- ``record`` writes the replay through the storage exporter's write path as a new trace whose
  span carries ``replay.of`` and a link to the original.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from collector.model import LLM_OPERATIONS
from collector.query import queries
from collector.query.render import message_text
from collector.query.store import Store, error_reason
from exporters.storage.sqltext import Sql

__all__ = ["ReplayOptions", "ReplayRefused", "ReplayFailed", "RecordFailed", "replay", "find_call", "refusal",
           "chat_messages", "tool_definitions", "record", "REPLAY_OF", "DEFAULT_TIMEOUT"]

REPLAY_OF = "replay.of"
"""Attribute of a recorded replay: the original span id (``replay.of.trace_id``: its trace)."""
REPLAY_SERVICE = "genai-collector-replay"
DEFAULT_TIMEOUT = 60.0
REQUEST_PARAMS = {"gen_ai.request.max_tokens": "max_tokens", "gen_ai.request.top_p": "top_p",
                  "gen_ai.request.temperature": "temperature", "gen_ai.request.seed": "seed",
                  "gen_ai.request.stop_sequences": "stop"}
"""Stored request parameters sent again (OTel attribute -> chat completions field)."""
_SPAN_ID = re.compile(r"^[0-9a-fA-F]{16}$")


class ReplayRefused(Exception):
    """The call cannot be replayed faithfully (``kind``: not_found, bad_id, not_llm, expired,
    sampled, redacted, no_content); the message says why in one line."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ReplayFailed(Exception):
    """The endpoint could not be reached or answered with an error (one line, no secrets)."""


class RecordFailed(ReplayFailed):
    """The replay ran but could not be stored (``--record``)."""


@dataclass
class ReplayOptions:
    """What to change and where to send it; ``api_key`` lives only in this object."""

    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    allow_redacted: bool = False

    @staticmethod
    def base_url_from_env(given: str | None) -> str:
        return given or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"


# -- finding the call -----------------------------------------------------------------------------

def _is_llm(span: dict) -> bool:
    operation = span.get("operation")
    model = span.get("request_model") or span.get("response_model")
    return operation in LLM_OPERATIONS if operation is not None else model is not None


def find_call(store: Store, ident: str, span_id: str | None = None) -> tuple[dict, bool]:
    """The span (as the trace page shows it: record + attributes) and whether its content was
    purged.  ``ident`` is a trace id / unique prefix, or a 16-hex span id (a scan of the spans
    table: pass ``span_id`` with a trace id when the store is large)."""
    trace_id = None
    if span_id is None and _SPAN_ID.match(ident):
        with store.connect() as conn:
            found = conn.execute(Sql("SELECT trace_id FROM spans WHERE span_id = ? LIMIT 2",
                                     ident.lower())).fetchall()
        if len(found) == 1:
            trace_id, span_id = found[0][0], ident.lower()
        elif found:
            raise ReplayRefused("bad_id", f"span id {ident} is in more than one trace; pass the trace id "
                                          f"and --span {ident}")
    if trace_id is None:
        try:
            trace_id = queries.resolve_trace_id(store, ident)
        except queries.BadId as exc:
            raise ReplayRefused("bad_id", str(exc)) from None
    detail = queries.trace_detail(store, trace_id) if trace_id else None
    if detail is None:
        raise ReplayRefused("not_found", f"no trace or span {ident}")
    calls = [s for s in detail["spans"] if _is_llm(s)]
    if span_id is not None:
        chosen = [s for s in detail["spans"] if s["span_id"] == span_id.lower()]
        if not chosen:
            raise ReplayRefused("not_found", f"span {span_id} not in trace {trace_id}")
        if not _is_llm(chosen[0]):
            raise ReplayRefused("not_llm", f"span {span_id} ({chosen[0]['name']}) is not an LLM call")
    elif len(calls) != 1:
        if not calls:
            raise ReplayRefused("not_llm", f"trace {trace_id} has no LLM call")
        raise ReplayRefused("bad_id", f"trace {trace_id} has {len(calls)} LLM calls; name one by span id: "
                                      + ", ".join(s["span_id"] for s in calls))
    else:
        chosen = calls
    span = chosen[0]
    with store.connect() as conn:
        purged = conn.scalar(Sql("SELECT content_purged FROM spans WHERE trace_id = ? AND span_id = ?",
                                 span["trace_id"], span["span_id"]))
    return span, bool(purged)


def refusal(span: dict, purged: bool, allow_redacted: bool = False) -> ReplayRefused | None:
    """Why the stored messages are not the ones that were sent, if they are not; the markers
    are those the pipeline leaves: ``content_purged`` (content_ttl), ``sampling.content``
    (content sampling), ``redaction.content.dropped`` / ``redaction.redacted.count`` (redaction)."""
    attrs = span.get("attributes") or {}
    where = f"span {span['span_id']}"
    if purged:
        return ReplayRefused("expired", f"{where}: content expired (content_ttl removed its messages)")
    if attrs.get("sampling.content") == "stripped":
        return ReplayRefused("sampled", f"{where}: content was sampled out (sampling.content=stripped); "
                                        f"its messages were never stored")
    if attrs.get("redaction.content.dropped"):
        return ReplayRefused("redacted", f"{where}: content was redacted (redaction.content.dropped)")
    count = attrs.get("redaction.redacted.count")
    if count and not allow_redacted:
        types = attrs.get("redaction.redacted.types") or []
        kinds = f" ({', '.join(map(str, types))})" if isinstance(types, list) and types else ""
        return ReplayRefused("redacted", f"{where}: content was redacted ({count} values replaced{kinds}); "
                                         f"--allow-redacted replays it with the placeholders")
    if not span.get("input_messages"):
        return ReplayRefused("no_content", f"{where}: no input messages stored (the instrumentation did "
                                           f"not capture content)")
    return None


# -- the request ----------------------------------------------------------------------------------

def _text_of(parts: list) -> str:
    return "\n".join(message_text({"parts": [p]}) for p in parts
                     if isinstance(p, dict) and p.get("type") not in ("tool_call", "tool_call_response"))


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value if value is not None else {})


def _from_otel(message: dict) -> list[dict]:
    """One stored message (OTel ``parts`` form or an OpenAI-style dict) -> chat messages."""
    role = str(message.get("role") or "user")
    parts = message.get("parts")
    if not isinstance(parts, list):
        out = {"role": role, "content": message_text(message) if not isinstance(message.get("content"), str)
               else message["content"]}
        for key in ("tool_calls", "tool_call_id", "name"):
            if message.get(key) is not None:
                out[key] = message[key]
        return [out]
    responses = [p for p in parts if isinstance(p, dict) and p.get("type") == "tool_call_response"]
    if responses:
        return [{"role": "tool", "tool_call_id": str(p.get("id") or ""),
                 "content": _arguments(p.get("response", p.get("result")))} for p in responses]
    calls = [p for p in parts if isinstance(p, dict) and p.get("type") == "tool_call"]
    out = {"role": role, "content": _text_of(parts) or (None if calls else "")}
    if calls:
        out["tool_calls"] = [{"id": str(c.get("id") or f"call_{i}"), "type": "function",
                              "function": {"name": str(c.get("name") or ""),
                                           "arguments": _arguments(c.get("arguments"))}}
                             for i, c in enumerate(calls)]
    return [out]


def chat_messages(span: dict, system: str | None = None) -> list[dict]:
    """The chat completions ``messages`` of a stored call; ``system`` replaces its system prompt."""
    stored = [m for m in span.get("input_messages") or [] if isinstance(m, dict)]
    if system is None:
        instructions = span.get("system_instructions") or []
        instructions = instructions if isinstance(instructions, list) else [instructions]
        text = "\n".join(message_text(p) for p in instructions)
        head = [{"role": "system", "content": text}] if text else []
    else:
        stored = [m for m in stored if m.get("role") != "system"]
        head = [{"role": "system", "content": system}] if system else []
    return head + [chat for m in stored for chat in _from_otel(m)]


def _tool(definition: Any) -> dict | None:
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except ValueError:
            return None
    if not isinstance(definition, dict):
        return None
    if isinstance(definition.get("function"), dict):
        return {"type": "function", "function": definition["function"]}
    if not definition.get("name"):
        return None
    return {"type": "function", "function": {k: definition[k] for k in ("name", "description", "parameters")
                                             if k in definition}}


def tool_definitions(span: dict) -> list[dict]:
    """The tools the call offered, from the content attributes of the dialects that record them:
    ``gen_ai.tool.definitions`` (OTel), ``llm.tools.N.tool.json_schema`` (OpenInference)."""
    content = span.get("content_attributes") or {}
    raw = content.get("gen_ai.tool.definitions")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    found = list(raw) if isinstance(raw, list) else []
    found += [v for k, v in sorted(content.items()) if k.startswith("llm.tools.") and k.endswith(".json_schema")]
    return [t for t in map(_tool, found) if t is not None]


def build_request(span: dict, options: ReplayOptions) -> dict:
    body: dict[str, Any] = {"model": options.model or span["request_model"] or span["response_model"],
                            "messages": chat_messages(span, options.system)}
    attrs = span.get("attributes") or {}
    for key, name in REQUEST_PARAMS.items():
        if attrs.get(key) is not None:
            body[name] = attrs[key]
    if options.temperature is not None:
        body["temperature"] = options.temperature
    tools = tool_definitions(span)
    if tools:
        body["tools"] = tools
    return body


def _post(options: ReplayOptions, body: dict) -> tuple[dict, float]:
    """The endpoint's JSON answer and the wall time it took (ms)."""
    url = options.base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if options.api_key:
        headers["Authorization"] = f"Bearer {options.api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=options.timeout) as response:  # noqa: S310 - configured URL
            payload = response.read()
    except urllib.error.HTTPError as exc:
        raise ReplayFailed(f"{url} answered {exc.code}: {_error_message(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReplayFailed(f"cannot reach {url}: {reason}") from None
    except ValueError as exc:  # a malformed URL
        raise ReplayFailed(f"bad base URL {options.base_url!r}: {exc}") from None
    elapsed = (time.perf_counter() - started) * 1000
    try:
        document = json.loads(payload)
        document["choices"][0]["message"]  # noqa: B018 - the shape check
    except (ValueError, KeyError, IndexError, TypeError):
        raise ReplayFailed(f"{url} did not answer with a chat completion") from None
    return document, elapsed


def _error_message(payload: bytes) -> str:
    try:
        message = json.loads(payload)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = payload[:200].decode("utf-8", "replace")
    return " ".join(str(message).split())[:300]


# -- the answer -----------------------------------------------------------------------------------

def _usage(document: dict) -> dict[str, int | None]:
    usage = document.get("usage") or {}
    details_in = usage.get("prompt_tokens_details") or {}
    details_out = usage.get("completion_tokens_details") or {}
    return {"input_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("completion_tokens"),
            "cache_read_tokens": details_in.get("cached_tokens") or None,
            "reasoning_tokens": details_out.get("reasoning_tokens") or None}


def answer_text(messages: Any) -> str:
    """The readable text of a call's output messages (what the diff compares)."""
    if not messages:
        return ""
    messages = messages if isinstance(messages, list) else [messages]
    return "\n".join(message_text(m) for m in messages)


def _priced(provider: str | None, model: str, usage: dict, start_ns: int) -> tuple[Any, float | None]:
    """A replay span priced by the ``genai_cost`` processor (defaults: genai-prices)."""
    import logging

    from collector.component import ComponentContext
    from collector.model import GenAI, Resource, Scope, Span, SpanBatch
    from collector.telemetry import Telemetry
    from processors import PROCESSORS
    from config.schema import build

    factory = PROCESSORS.get("genai_cost")
    config, _ = build(factory.config_class, {})
    ctx = ComponentContext(id="genai_cost/replay", kind="processor", telemetry=Telemetry(),
                           logger=logging.getLogger("genai_collector.replay"))
    span = Span(resource=Resource({"service.name": REPLAY_SERVICE}), scope=Scope("genai-collector.replay"),
                trace_id=secrets.token_bytes(16), span_id=secrets.token_bytes(8), kind=3,
                start_time_unix_nano=start_ns,
                genai=GenAI(provider=provider, operation="chat", request_model=model, **usage))
    factory.create(config, ctx).process(SpanBatch([span]))
    return span, span.genai.cost_usd


def replay(store: Store, ident: str, options: ReplayOptions, span_id: str | None = None) -> dict:
    """Replay one call; the comparison as a JSON-ready dict (``original``, ``replay``, ``diff``)
    plus, under ``"_span"``, the priced replay span for :func:`record`."""
    span, purged = find_call(store, ident, span_id)
    refused = refusal(span, purged, options.allow_redacted)
    if refused is not None:
        raise refused
    body = build_request(span, options)
    start_ns = time.time_ns()
    document, latency_ms = _post(options, body)
    choice = document["choices"][0]
    from processors.genai_normalize import message_from_openai

    output = [message_from_openai({**choice["message"], "finish_reason": choice.get("finish_reason")},
                                  "assistant")]
    usage = _usage(document)
    same_model = body["model"] in (span["request_model"], span["response_model"])
    new_span, cost = _priced(span["provider"] if same_model else None, body["model"], usage, start_ns)
    g = new_span.genai
    g.response_model = document.get("model") or body["model"]
    g.input_messages = span["input_messages"]
    g.system_instructions = ([{"type": "text", "content": options.system}] if options.system is not None
                             else span["system_instructions"])
    g.output_messages = output
    g.user_id = span["user_id"]  # `delete --user` must find a replay of that person's prompt
    new_span.end_time_unix_nano = start_ns + int(latency_ms * 1e6)
    new_span.name = f"chat {g.request_model}"
    new_span.attributes.update({REPLAY_OF: span["span_id"], f"{REPLAY_OF}.trace_id": span["trace_id"],
                                "gen_ai.operation.name": "chat", "gen_ai.request.model": g.request_model})
    stored_text, new_text = answer_text(span["output_messages"]), answer_text(output)
    diff = "".join(line + "\n" for line in difflib.unified_diff(
        stored_text.splitlines(), new_text.splitlines(), "stored", "replay", lineterm=""))
    return {
        "original": {"trace_id": span["trace_id"], "span_id": span["span_id"],
                     "model": span["response_model"] or span["request_model"], "answer": stored_text,
                     "input_tokens": span["input_tokens"], "output_tokens": span["output_tokens"],
                     "latency_ms": span["duration_ms"], "cost_usd": span["cost_usd"]},
        "replay": {"model": g.response_model, "request_model": body["model"], "answer": new_text,
                   "output_messages": output, "finish_reason": choice.get("finish_reason"),
                   "input_tokens": g.input_tokens, "output_tokens": g.output_tokens,
                   "latency_ms": latency_ms, "cost_usd": cost,
                   "system_changed": options.system is not None, "tools": len(body.get("tools", []))},
        "diff": diff,
        "same_answer": stored_text == new_text,
        "_span": new_span,
    }


def record(store: Store, result: dict) -> dict:
    """Store the replay span (from :func:`replay`) through the storage write path, linked to the
    original: rollups, full-text index and migrations as for any exported span."""
    from collector.model import Link
    from exporters.storage.store import open_writer

    span = result.pop("_span")
    original = result["original"]
    span.links.append(Link(trace_id=bytes.fromhex(original["trace_id"]),
                           span_id=bytes.fromhex(original["span_id"]), attributes={"replay": True}))
    try:
        writer = open_writer(store.target.sqlalchemy_url)
        try:
            written = writer.write([span])
        finally:
            writer.close()
    except Exception as exc:  # noqa: BLE001 - any driver / migration failure: one line for the user
        raise RecordFailed(f"the replay could not be stored: {error_reason(exc)}") from None
    if written.written != 1:
        raise RecordFailed("the replay could not be stored: " + "; ".join(written.row_errors))
    result["recorded"] = {"trace_id": span.trace_id.hex(), "span_id": span.span_id.hex()}
    return result
