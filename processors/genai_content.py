"""What is *content*: the one definition every privacy feature uses.

Content is what a person or a model wrote: messages, system instructions, tool definitions, tool
call arguments and results, prompts and completions, retrieved documents.  Everything else about a
call (model, tokens, cost, timings, finish reasons, ids) is metadata and is kept.

Who reads this module, and nothing else, to decide:

- ``redaction`` (which attributes and events to scan, and what to drop when it fails closed),
- ``sampling``'s content sampling (what a span without sampled content loses),
- the storage exporters (which attributes go to the ``content_attributes`` column), and
- retention's ``content_ttl`` (what it removes from rows already stored, in every column),
- the log-record store (which log events carry content in their body and attributes).

Adding a dialect's key is one line in :data:`CONTENT_KEY_FAMILIES`: a *family* is a key and every
key under it (``gen_ai.prompt`` covers ``gen_ai.prompt`` and ``gen_ai.prompt.0.content``), which is
how the flattened dialects (OpenLLMetry, OpenInference) spread one message over many attributes.

Speed: :func:`is_content_key` runs for every attribute key of every span.  It is a set lookup and
one ``str.startswith`` over a precompiled tuple (both in C), memoised per key in a bounded dict:
an instrumentation uses a few dozen distinct keys, so after warm-up it is one dict lookup.
"""

from __future__ import annotations

from typing import Any

from processors.genai_conventions import MESSAGE_EVENT_NAMES

__all__ = [
    "CONTENT_KEY_FAMILIES", "CONTENT_EVENT_NAMES", "EVENT_METADATA_KEYS", "CONTENT_GENAI_FIELDS",
    "is_content_key", "is_content_event_attribute", "event_body_is_content", "content_keys",
    "strip_attributes", "strip_event_attributes",
]

# A family is the key itself and every ``key.``-prefixed key.  One line per dialect key.
CONTENT_KEY_FAMILIES: tuple[str, ...] = (
    # OpenTelemetry GenAI semantic conventions (current)
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.event.content",
    # OTel GenAI <= 1.26 and OpenLLMetry / Traceloop (gen_ai.prompt.0.content, ...)
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.request.functions",
    "llm.request.functions",
    "llm.prompts",
    "llm.completions",
    "traceloop.entity.input",
    "traceloop.entity.output",
    # OpenLIT
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
    "gen_ai.content.reasoning",
    # OpenInference (Arize Phoenix)
    "input.value",
    "output.value",
    "llm.input_messages",
    "llm.output_messages",
    "llm.tools",
    "llm.prompt_template",
    "llm.invocation_parameters",
    "tool.parameters",
    "tool_call.function.arguments",
    "retrieval.documents",
    "reranker.query",
    "reranker.input_documents",
    "reranker.output_documents",
    "embedding.embeddings",
    # Langfuse
    "langfuse.observation.input",
    "langfuse.observation.output",
    "langfuse.trace.input",
    "langfuse.trace.output",
    # Vercel AI SDK
    "ai.prompt",                 # also ai.prompt.messages, ai.prompt.tools
    "ai.response.text",
    "ai.response.toolCalls",
    "ai.response.object",
    "ai.response.reasoning",
    "ai.result.text",            # AI SDK 3.x names
    "ai.result.toolCalls",
    "ai.result.object",
    "ai.toolCall.args",
    "ai.toolCall.result",
    "ai.value",                  # embed: the text(s) embedded
    "ai.values",
)

# Span / log events whose every attribute (but the metadata below) and whose body are content:
# the deprecated per-message events (GenAI semconv <= 1.36) and OpenLIT's prompt/completion events.
CONTENT_EVENT_NAMES: frozenset[str] = MESSAGE_EVENT_NAMES
# Attributes of those events that describe rather than carry content (kept when content goes).
EVENT_METADATA_KEYS: frozenset[str] = frozenset({
    "event.name", "gen_ai.system", "gen_ai.provider.name", "gen_ai.operation.name", "role", "index",
    "finish_reason", "gen_ai.response.finish_reasons", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.response.id",
})
# Canonical fields of ``collector.model.GenAI`` that hold content (the normalize processor's output).
CONTENT_GENAI_FIELDS: tuple[str, ...] = ("input_messages", "output_messages", "system_instructions")

_EXACT: frozenset[str] = frozenset(CONTENT_KEY_FAMILIES)
_PREFIXES: tuple[str, ...] = tuple(f"{family}." for family in CONTENT_KEY_FAMILIES)
_MEMO: dict[str, bool] = {}
_MEMO_LIMIT = 65536  # hostile senders may invent keys; bound the memory they can take


def is_content_key(key: str) -> bool:
    """Whether an attribute ``key`` carries content in any dialect we read."""
    known = _MEMO.get(key)
    if known is None:
        known = key in _EXACT or (key.__class__ is str and key.startswith(_PREFIXES))
        if len(_MEMO) >= _MEMO_LIMIT:
            _MEMO.clear()
        _MEMO[key] = known
    return known


def is_content_event_attribute(event_name: str, key: str) -> bool:
    """Whether attribute ``key`` of a span event or log event named ``event_name`` is content."""
    return is_content_key(key) or (event_name in CONTENT_EVENT_NAMES and key not in EVENT_METADATA_KEYS)


def event_body_is_content(event_name: str) -> bool:
    """Whether the body of a log event named ``event_name`` is content (``{"content": ...}``,
    ``{"message": {...}}``): the per-message events put the text there."""
    return event_name in CONTENT_EVENT_NAMES


def content_keys(attributes: dict[str, Any]) -> list[str]:
    """The keys of ``attributes`` that carry content (in their order)."""
    return [key for key in attributes if is_content_key(key)]


def strip_attributes(attributes: dict[str, Any]) -> int:
    """Remove content keys from ``attributes`` in place; how many went."""
    doomed = content_keys(attributes)
    for key in doomed:
        del attributes[key]
    return len(doomed)


def strip_event_attributes(event_name: str, attributes: dict[str, Any]) -> int:
    """Remove content from the attributes of one span / log event in place; how many went."""
    doomed = [key for key in attributes if is_content_event_attribute(event_name, key)]
    for key in doomed:
        del attributes[key]
    return len(doomed)
