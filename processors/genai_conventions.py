"""Where each GenAI dialect puts things: the one table every GenAI-aware processor reads.

Dialects covered (docs/genai.md, "Canonical fields"): OpenTelemetry GenAI semantic conventions (current and older
names), OpenInference (Arize), OpenLLMetry (Traceloop), Langfuse and OpenLIT.

``ATTRIBUTE_MAP`` is consumed by ``genai_normalize`` in ONE pass over a span's attribute keys: a dict
lookup per key, with a prefix check only for the flattened message forms.  Each entry says which
canonical field the key feeds, how to convert the value, and its precedence (lower wins) when
several dialects are present on one span.

Which keys carry content (prompts, completions, tool arguments) is defined once, in
:mod:`processors.genai_content`, for redaction, sampling, storage and retention alike.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "ATTRIBUTE_MAP", "Conv", "FLAT_MESSAGE_PREFIXES", "MESSAGE_EVENT_ROLES", "MESSAGE_EVENT_NAMES",
    "OPERATION_DETAILS_EVENT", "EVALUATION_EVENT", "EVALUATION_FIELDS", "FIRST_CHUNK_EVENT_NAMES",
    "CANONICAL_ATTRIBUTES", "LEGACY_KEYS",
    "normalize_provider", "normalize_operation", "to_count", "to_seconds", "to_cost",
    "OPENINFERENCE_KINDS", "GENAI_PRICES_PROVIDER",
]


class Conv:
    """Value converters named in :data:`ATTRIBUTE_MAP`."""

    STR = 0        # non-empty string
    COUNT = 1      # non-negative integer token count
    SECONDS = 2    # duration in seconds -> stored as ms
    COST = 3       # USD amount
    PROVIDER = 4   # provider name, normalised
    OPERATION = 5  # operation name or a dialect's span kind, normalised
    MESSAGES = 6   # structured messages or a JSON string of them
    LEGACY_MESSAGES = 7  # JSON list of OpenAI-style {"role", "content"} (or plain text)
    ISO_TIME = 8   # ISO-8601 timestamp (Langfuse completion start) -> ttft
    JSON_USAGE = 9  # Langfuse usage_details JSON
    JSON_COST = 10  # Langfuse cost_details JSON
    FINISH = 11    # finish reason(s): a string or a list of strings


# canonical attribute names written by ``rewrite_attributes`` (GenAI semantic conventions v1.41)
CANONICAL_ATTRIBUTES: dict[str, str] = {
    "provider": "gen_ai.provider.name",
    "operation": "gen_ai.operation.name",
    "request_model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_write_tokens": "gen_ai.usage.cache_creation.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
    "finish_reasons": "gen_ai.response.finish_reasons",
    "ttft_ms": "gen_ai.response.time_to_first_chunk",
    "cost_usd": "gen_ai.usage.cost",
    "session_id": "gen_ai.conversation.id",
    "user_id": "user.id",
    "error_type": "error.type",
    "input_messages": "gen_ai.input.messages",
    "output_messages": "gen_ai.output.messages",
    "system_instructions": "gen_ai.system_instructions",
}

# key -> (canonical field, converter, precedence, signals a GenAI span)
# Precedence: 0 = current OTel name, higher = older / other dialects.  Keys that only identify a
# session or user do not by themselves make a span a GenAI span (a web request may carry user.id).
ATTRIBUTE_MAP: dict[str, tuple[str, int, int, bool]] = {
    # provider
    "gen_ai.provider.name": ("provider", Conv.PROVIDER, 0, True),
    "gen_ai.system": ("provider", Conv.PROVIDER, 1, True),
    "llm.vendor": ("provider", Conv.PROVIDER, 4, True),
    "llm.provider": ("provider", Conv.PROVIDER, 2, True),
    "llm.system": ("provider", Conv.PROVIDER, 3, True),
    # operation
    "gen_ai.operation.name": ("operation", Conv.OPERATION, 0, True),
    "llm.request.type": ("operation", Conv.OPERATION, 1, True),
    "openinference.span.kind": ("operation", Conv.OPERATION, 2, True),
    "traceloop.span.kind": ("operation", Conv.OPERATION, 3, True),
    "langfuse.observation.type": ("operation", Conv.OPERATION, 4, True),
    # models
    "gen_ai.request.model": ("request_model", Conv.STR, 0, True),
    "langfuse.observation.model.name": ("request_model", Conv.STR, 1, True),
    "embedding.model_name": ("request_model", Conv.STR, 2, True),
    "llm.request.model": ("request_model", Conv.STR, 3, True),
    "gen_ai.response.model": ("response_model", Conv.STR, 0, True),
    "llm.model_name": ("response_model", Conv.STR, 1, True),
    "llm.response.model": ("response_model", Conv.STR, 2, True),
    # tokens
    "gen_ai.usage.input_tokens": ("input_tokens", Conv.COUNT, 0, True),
    "gen_ai.usage.prompt_tokens": ("input_tokens", Conv.COUNT, 1, True),
    "llm.token_count.prompt": ("input_tokens", Conv.COUNT, 2, True),
    "llm.usage.prompt_tokens": ("input_tokens", Conv.COUNT, 3, True),
    "gen_ai.usage.output_tokens": ("output_tokens", Conv.COUNT, 0, True),
    "gen_ai.usage.completion_tokens": ("output_tokens", Conv.COUNT, 1, True),
    "llm.token_count.completion": ("output_tokens", Conv.COUNT, 2, True),
    "llm.usage.completion_tokens": ("output_tokens", Conv.COUNT, 3, True),
    "gen_ai.usage.total_tokens": ("total_tokens", Conv.COUNT, 0, True),
    "llm.token_count.total": ("total_tokens", Conv.COUNT, 1, True),
    "llm.usage.total_tokens": ("total_tokens", Conv.COUNT, 2, True),
    "gen_ai.usage.cache_read.input_tokens": ("cache_read_tokens", Conv.COUNT, 0, True),
    "gen_ai.usage.cache_read_input_tokens": ("cache_read_tokens", Conv.COUNT, 1, True),
    "llm.token_count.prompt_details.cache_read": ("cache_read_tokens", Conv.COUNT, 2, True),
    "llm.usage.cache_read_input_tokens": ("cache_read_tokens", Conv.COUNT, 3, True),
    "gen_ai.usage.cache_creation.input_tokens": ("cache_write_tokens", Conv.COUNT, 0, True),
    "gen_ai.usage.cache_write.input_tokens": ("cache_write_tokens", Conv.COUNT, 1, True),
    "gen_ai.usage.cache_creation_input_tokens": ("cache_write_tokens", Conv.COUNT, 2, True),
    "llm.token_count.prompt_details.cache_write": ("cache_write_tokens", Conv.COUNT, 3, True),
    "llm.usage.cache_creation_input_tokens": ("cache_write_tokens", Conv.COUNT, 4, True),
    "gen_ai.usage.reasoning.output_tokens": ("reasoning_tokens", Conv.COUNT, 0, True),
    "gen_ai.usage.reasoning_tokens": ("reasoning_tokens", Conv.COUNT, 1, True),
    "llm.token_count.completion_details.reasoning": ("reasoning_tokens", Conv.COUNT, 2, True),
    "llm.usage.reasoning_tokens": ("reasoning_tokens", Conv.COUNT, 3, True),
    "langfuse.observation.usage_details": ("usage_json", Conv.JSON_USAGE, 5, True),
    # session and user
    "gen_ai.conversation.id": ("session_id", Conv.STR, 0, False),
    "session.id": ("session_id", Conv.STR, 1, False),
    "langfuse.session.id": ("session_id", Conv.STR, 2, False),
    "traceloop.association.properties.session_id": ("session_id", Conv.STR, 3, False),
    "user.id": ("user_id", Conv.STR, 0, False),
    "langfuse.user.id": ("user_id", Conv.STR, 1, False),
    "traceloop.association.properties.user_id": ("user_id", Conv.STR, 2, False),
    "gen_ai.user": ("user_id", Conv.STR, 3, False),
    "enduser.id": ("user_id", Conv.STR, 4, False),
    # errors and finish reasons
    "error.type": ("error_type", Conv.STR, 0, False),
    "gen_ai.response.finish_reasons": ("finish_reasons", Conv.FINISH, 0, True),
    "llm.finish_reason": ("finish_reasons", Conv.FINISH, 1, True),
    # messages
    "gen_ai.input.messages": ("input_messages", Conv.MESSAGES, 0, True),
    "gen_ai.output.messages": ("output_messages", Conv.MESSAGES, 0, True),
    "gen_ai.system_instructions": ("system_instructions", Conv.MESSAGES, 0, True),
    "gen_ai.prompt": ("input_messages", Conv.LEGACY_MESSAGES, 3, True),
    "gen_ai.completion": ("output_messages", Conv.LEGACY_MESSAGES, 3, True),
    "langfuse.observation.input": ("input_messages", Conv.LEGACY_MESSAGES, 4, False),
    "langfuse.observation.output": ("output_messages", Conv.LEGACY_MESSAGES, 4, False),
    # time to first token
    "gen_ai.response.time_to_first_chunk": ("ttft_ms", Conv.SECONDS, 0, True),
    "gen_ai.server.time_to_first_token": ("ttft_ms", Conv.SECONDS, 1, True),
    "gen_ai.server.ttft": ("ttft_ms", Conv.SECONDS, 2, True),
    "langfuse.observation.completion_start_time": ("ttft_ms", Conv.ISO_TIME, 3, False),
    # cost the application already computed
    "gen_ai.usage.cost": ("cost_usd", Conv.COST, 0, True),
    "llm.cost.total": ("cost_usd", Conv.COST, 1, True),
    "langfuse.observation.cost_details": ("cost_usd", Conv.JSON_COST, 2, True),
}

# Flattened message forms, one attribute per message field:
#   gen_ai.prompt.0.role / .content / .tool_calls.0.name ...           (OpenLLMetry)
#   llm.input_messages.0.message.role / .content / .contents.0.message_content.text ...  (OpenInference)
FLAT_MESSAGE_PREFIXES: tuple[str, ...] = (
    "gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.",
)

# OpenInference generic I/O: used for messages only when no message attribute exists.
OPENINFERENCE_IO_KEYS = ("input.value", "output.value")
OPENINFERENCE_INVOCATION_PARAMETERS = "llm.invocation_parameters"

# Deprecated per-message span events (GenAI semconv <= 1.28) -> role; gen_ai.choice is the output.
MESSAGE_EVENT_ROLES: dict[str, str] = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
    "gen_ai.choice": "assistant",
}
# Log events (GenAI semconv >= 1.37): the whole call's content as attributes (the span-attribute
# names), and an evaluation of a call.  Both are parented to their span by trace_id / span_id.
OPERATION_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_FIELDS: dict[str, str] = {
    "name": "gen_ai.evaluation.name", "score_value": "gen_ai.evaluation.score.value",
    "score_label": "gen_ai.evaluation.score.label", "explanation": "gen_ai.evaluation.explanation",
    "response_id": "gen_ai.response.id",
}
"""An evaluation result's fields (as the query layer names them) -> its attribute."""
# Older prompt/completion events (Azure AI inference, Semantic Kernel, OpenLIT).
PROMPT_EVENT = "gen_ai.content.prompt"
COMPLETION_EVENT = "gen_ai.content.completion"
# Every event that carries one message (its attributes or a log event's body are the message).
MESSAGE_EVENT_NAMES: frozenset[str] = frozenset(MESSAGE_EVENT_ROLES) | {PROMPT_EVENT, COMPLETION_EVENT}

# Events that mark the first streamed chunk (time to first token).
FIRST_CHUNK_EVENT_NAMES: frozenset[str] = frozenset({
    "First Token Stream Event",          # OpenInference
    "gen_ai.content.completion.chunk",   # OpenLLMetry, one per chunk: the first one counts
    "llm.content.completion.chunk",      # older OpenLLMetry
})

# Every dialect key that ``rewrite_attributes`` replaces with its canonical name.
LEGACY_KEYS: frozenset[str] = frozenset(
    key for key, (field, _conv, prio, _sig) in ATTRIBUTE_MAP.items()
    if key != CANONICAL_ATTRIBUTES.get(field)
) - {"session.id", "enduser.id"}

# --- providers -----------------------------------------------------------------------------------
_PROVIDER_ALIASES: dict[str, str] = {
    "openai": "openai", "anthropic": "anthropic",
    "aws.bedrock": "aws.bedrock", "bedrock": "aws.bedrock", "aws_bedrock": "aws.bedrock",
    "aws": "aws.bedrock", "amazon_bedrock": "aws.bedrock", "amazon-bedrock": "aws.bedrock",
    "gcp.vertex_ai": "gcp.vertex_ai", "vertex_ai": "gcp.vertex_ai", "vertexai": "gcp.vertex_ai",
    "vertex": "gcp.vertex_ai", "google_vertex": "gcp.vertex_ai", "google.vertex_ai": "gcp.vertex_ai",
    "gcp.gemini": "gcp.gemini", "gemini": "gcp.gemini", "google_genai": "gcp.gemini",
    "google.generativeai": "gcp.gemini", "google_ai_studio": "gcp.gemini", "google-genai": "gcp.gemini",
    "gcp.gen_ai": "gcp.gen_ai", "google": "gcp.gen_ai",
    "azure.ai.openai": "azure.ai.openai", "az.ai.openai": "azure.ai.openai", "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai", "azure-openai": "azure.ai.openai", "azureopenai": "azure.ai.openai",
    "azure.ai.inference": "azure.ai.inference", "az.ai.inference": "azure.ai.inference",
    "mistral_ai": "mistral_ai", "mistralai": "mistral_ai", "mistral": "mistral_ai",
    "x_ai": "x_ai", "xai": "x_ai", "x-ai": "x_ai", "grok": "x_ai",
    "groq": "groq", "deepseek": "deepseek", "cohere": "cohere", "perplexity": "perplexity",
    "ibm.watsonx.ai": "ibm.watsonx.ai", "watsonx": "ibm.watsonx.ai", "ibm_watsonx": "ibm.watsonx.ai",
    "ollama": "ollama", "openrouter": "openrouter", "together": "together", "togetherai": "together",
    "together_ai": "together", "fireworks": "fireworks", "fireworks_ai": "fireworks",
    "cerebras": "cerebras", "huggingface": "huggingface", "hugging_face": "huggingface",
}
_provider_cache: dict[str, str] = {}


def normalize_provider(value: str) -> str:
    """``MistralAI`` -> ``mistral_ai``, ``vertex_ai`` -> ``gcp.vertex_ai``; unknown: lower-cased."""
    out = _provider_cache.get(value)
    if out is None:
        key = value.strip().lower()
        out = _PROVIDER_ALIASES.get(key) or _PROVIDER_ALIASES.get(key.replace(" ", "_")) or key
        if len(_provider_cache) < 4096:
            _provider_cache[value] = out
    return out


# OTel GenAI provider -> genai-prices provider id (their ids differ).
GENAI_PRICES_PROVIDER: dict[str, str] = {
    "openai": "openai", "anthropic": "anthropic", "aws.bedrock": "aws", "gcp.vertex_ai": "google",
    "gcp.gemini": "google", "gcp.gen_ai": "google", "azure.ai.openai": "azure",
    "azure.ai.inference": "azure", "mistral_ai": "mistral", "x_ai": "x-ai", "groq": "groq",
    "deepseek": "deepseek", "cohere": "cohere", "perplexity": "perplexity", "openrouter": "openrouter",
    "together": "together", "fireworks": "fireworks", "cerebras": "cerebras",
}

# --- operations ----------------------------------------------------------------------------------
OPENINFERENCE_KINDS: dict[str, str] = {
    "LLM": "chat", "EMBEDDING": "embeddings", "RETRIEVER": "retrieval", "RERANKER": "rerank",
    "TOOL": "execute_tool", "AGENT": "invoke_agent", "CHAIN": "invoke_workflow",
    "GUARDRAIL": "guardrail", "EVALUATOR": "evaluate", "PROMPT": "prompt",
}
_OPERATION_ALIASES: dict[str, str] = {
    **{k.lower(): v for k, v in OPENINFERENCE_KINDS.items()},
    "chat": "chat", "completion": "text_completion", "text_completion": "text_completion",
    "embedding": "embeddings", "embeddings": "embeddings", "rerank": "rerank",
    "generate_content": "generate_content", "retrieval": "retrieval",
    "invoke_agent": "invoke_agent", "create_agent": "create_agent", "execute_tool": "execute_tool",
    "invoke_workflow": "invoke_workflow", "workflow": "invoke_workflow", "task": "invoke_workflow",
    "generation": "chat", "retriever": "retrieval",
    # Langfuse observation types that say nothing about GenAI
    "span": "", "event": "",
}
_operation_cache: dict[str, str] = {}


def normalize_operation(value: str) -> str:
    """Map ``llm.request.type``, OpenInference / Traceloop / Langfuse kinds to an OTel operation.

    Returns ``""`` for kinds that do not make a span a GenAI span (Langfuse ``span``/``event``).
    """
    out = _operation_cache.get(value)
    if out is None:
        key = value.strip().lower()
        out = _OPERATION_ALIASES.get(key, key)
        if len(_operation_cache) < 4096:
            _operation_cache[value] = out
    return out


# --- value converters ----------------------------------------------------------------------------
def to_count(value: Any) -> int | None:
    """A token count from int / float / numeric string; None for anything else or negative."""
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value >= 0 else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number >= 0 else None
    return None


def to_seconds(value: Any) -> float | None:
    """A finite non-negative number of seconds (numbers or numeric strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number >= 0 else None


to_cost = to_seconds  # same rule: finite, non-negative number
