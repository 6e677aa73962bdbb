"""genai_normalize on every dialect's attribute names, message forms and events."""

from __future__ import annotations

import json
import math

import pytest

from collector.model import STATUS_ERROR, Event
from collector.telemetry import Telemetry
from tests.genai_helpers import START_NS, make_processor, make_span, run

USER_MSG = {"role": "user", "parts": [{"type": "text", "content": "Hi there"}]}
ASSISTANT_MSG = {"role": "assistant", "parts": [{"type": "text", "content": "Hello!"}]}


def normalize(attributes=None, events=None, **kw):
    return run([make_processor("genai_normalize")], [make_span(attributes, events, **kw)])[0].genai


def test_current_otel_conventions():
    g = normalize({
        "gen_ai.provider.name": "anthropic", "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-sonnet-4", "gen_ai.response.model": "claude-sonnet-4-20250514",
        "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
        "gen_ai.usage.cache_read.input_tokens": 30, "gen_ai.usage.cache_creation.input_tokens": 10,
        "gen_ai.usage.reasoning.output_tokens": 5, "gen_ai.conversation.id": "conv-1", "user.id": "u-1",
        "gen_ai.input.messages": json.dumps([USER_MSG]), "gen_ai.output.messages": [ASSISTANT_MSG],
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief"}]),
        "gen_ai.response.time_to_first_chunk": 0.25,
    })
    assert (g.provider, g.operation, g.request_model, g.response_model) == (
        "anthropic", "chat", "claude-sonnet-4", "claude-sonnet-4-20250514")
    assert (g.input_tokens, g.output_tokens, g.cache_read_tokens, g.cache_write_tokens, g.reasoning_tokens) == (
        100, 20, 30, 10, 5)
    assert (g.session_id, g.user_id, g.ttft_ms) == ("conv-1", "u-1", 250.0)
    assert g.input_messages == [USER_MSG] and g.output_messages == [ASSISTANT_MSG]
    assert g.system_instructions == [{"type": "text", "content": "Be brief"}]


def test_older_otel_names_and_deprecated_events():
    events = [
        Event("gen_ai.system.message", START_NS, {"gen_ai.system": "openai", "content": "Be brief"}),
        Event("gen_ai.user.message", START_NS, {"content": "Hi there"}),
        Event("gen_ai.choice", START_NS, {"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "Hello!"}}),
    ]
    g = normalize({"gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": "12",
                   "gen_ai.usage.completion_tokens": 3.0, "gen_ai.request.model": "gpt-4o"}, events)
    assert (g.provider, g.input_tokens, g.output_tokens) == ("openai", 12, 3)
    assert g.input_messages == [{"role": "system", "parts": [{"type": "text", "content": "Be brief"}]}, USER_MSG]
    assert g.output_messages == [{**ASSISTANT_MSG, "finish_reason": "stop"}]


def test_event_body_as_json_content_attribute():
    """Azure AI Inference / Semantic Kernel put the event body in ``gen_ai.event.content``."""
    events = [Event("gen_ai.user.message", START_NS, {"gen_ai.event.content": json.dumps({"content": "Hi there"})}),
              Event("gen_ai.choice", START_NS, {"gen_ai.event.content": json.dumps(
                  {"finish_reason": "stop", "message": {"content": "Hello!"}})})]
    g = normalize({"gen_ai.system": "az.ai.inference"}, events)
    assert g.provider == "azure.ai.inference"
    assert g.input_messages == [USER_MSG]
    assert g.output_messages == [{**ASSISTANT_MSG, "finish_reason": "stop"}]


def test_openinference_flattened_messages_with_tool_calls():
    g = normalize({
        "openinference.span.kind": "LLM", "llm.provider": "openai", "llm.system": "openai",
        "llm.model_name": "gpt-4o-mini", "llm.token_count.prompt": 50, "llm.token_count.completion": 7,
        "llm.token_count.total": 57, "llm.token_count.prompt_details.cache_write": 4,
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "Weather in Paris?",
        "llm.input_messages.1.message.role": "assistant",
        "llm.input_messages.1.message.tool_calls.0.tool_call.id": "call_1",
        "llm.input_messages.1.message.tool_calls.0.tool_call.function.name": "get_weather",
        "llm.input_messages.1.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
        "llm.input_messages.2.message.role": "tool",
        "llm.input_messages.2.message.tool_call_id": "call_1",
        "llm.input_messages.2.message.content": "18C",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "It is 18C.",
        "session.id": "s-9", "user.id": "u-9", "llm.cost.total": 0.002,
    })
    assert (g.provider, g.operation, g.response_model, g.input_tokens, g.output_tokens) == (
        "openai", "chat", "gpt-4o-mini", 50, 7)
    assert g.cache_write_tokens == 4 and g.cost_usd == 0.002
    assert (g.session_id, g.user_id) == ("s-9", "u-9")
    assert g.input_messages == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather",
                                         "arguments": '{"city": "Paris"}'}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "18C"}]},
    ]
    assert g.output_messages == [{"role": "assistant", "parts": [{"type": "text", "content": "It is 18C."}]}]


def test_openinference_input_value_when_no_message_attributes():
    g = normalize({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o",
                   "input.value": json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi there"}]}),
                   "input.mime_type": "application/json", "output.value": "Hello!"})
    assert g.input_messages == [USER_MSG]
    assert g.output_messages == [ASSISTANT_MSG]


def test_openllmetry_flattened_prompt_and_association_properties():
    g = normalize({
        "llm.request.type": "completion", "gen_ai.system": "MistralAI", "gen_ai.request.model": "mistral-large",
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Hi there",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Hello!",
        "gen_ai.completion.0.finish_reason": "length",
        "gen_ai.completion.1.role": "assistant", "gen_ai.completion.1.tool_calls.0.name": "search",
        "gen_ai.completion.1.tool_calls.0.arguments": "{}", "gen_ai.completion.1.tool_calls.0.id": "t1",
        "gen_ai.usage.prompt_tokens": 9, "llm.usage.total_tokens": 12,
        "gen_ai.usage.cache_read_input_tokens": 2, "llm.usage.reasoning_tokens": 1,
        "traceloop.association.properties.session_id": "s-1",
        "traceloop.association.properties.user_id": "u-1",
    })
    assert (g.provider, g.operation) == ("mistral_ai", "text_completion")
    assert (g.input_tokens, g.output_tokens, g.cache_read_tokens, g.reasoning_tokens) == (9, 3, 2, 1)
    assert (g.session_id, g.user_id) == ("s-1", "u-1")
    assert g.input_messages == [USER_MSG]
    assert g.output_messages == [
        {**ASSISTANT_MSG, "finish_reason": "length"},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "t1", "name": "search", "arguments": "{}"}]},
    ]


def test_langfuse_attributes():
    g = normalize({
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o",
        "langfuse.observation.usage_details": json.dumps({"input": 40, "output": 10, "cache_read_input_tokens": 8}),
        "langfuse.observation.cost_details": json.dumps({"input": 0.001, "output": 0.002}),
        "langfuse.observation.input": json.dumps([{"role": "user", "content": "Hi there"}]),
        "langfuse.observation.output": "Hello!",
        "langfuse.observation.completion_start_time": "2025-06-15T15:06:40.300Z",
        "langfuse.session.id": "lf-s", "langfuse.user.id": "lf-u",
    })
    assert (g.operation, g.request_model, g.input_tokens, g.output_tokens, g.cache_read_tokens) == (
        "chat", "gpt-4o", 40, 10, 8)
    assert g.cost_usd == pytest.approx(0.003)
    assert g.ttft_ms == pytest.approx(300.0)
    assert (g.session_id, g.user_id) == ("lf-s", "lf-u")
    assert g.input_messages == [USER_MSG] and g.output_messages == [ASSISTANT_MSG]


def test_openlit_ttft_cost_and_content_events():
    events = [Event("gen_ai.content.prompt", START_NS, {"gen_ai.prompt": "Hi there"}),
              Event("gen_ai.content.completion", START_NS, {"gen_ai.completion": "Hello!"})]
    g = normalize({"gen_ai.system": "vertex_ai", "gen_ai.request.model": "gemini-1.5-pro",
                   "gen_ai.server.ttft": 0.4, "gen_ai.usage.cost": 0.01, "gen_ai.usage.input_tokens": 5}, events)
    assert (g.provider, g.ttft_ms, g.cost_usd) == ("gcp.vertex_ai", 400.0, 0.01)
    assert g.input_messages == [USER_MSG] and g.output_messages == [ASSISTANT_MSG]


@pytest.mark.parametrize("raw, canonical", [
    ("vertex_ai", "gcp.vertex_ai"), ("MistralAI", "mistral_ai"), ("mistralai", "mistral_ai"),
    ("aws.bedrock", "aws.bedrock"), ("bedrock", "aws.bedrock"), ("az.ai.openai", "azure.ai.openai"),
    ("xai", "x_ai"), ("gemini", "gcp.gemini"), ("OpenAI", "openai"), ("Some New Co", "some new co"),
])
def test_provider_names_are_normalised(raw, canonical):
    assert normalize({"gen_ai.system": raw}).provider == canonical


def test_current_name_wins_over_older_dialects_whatever_the_key_order():
    g = normalize({"llm.token_count.prompt": 1, "gen_ai.usage.prompt_tokens": 2, "gen_ai.usage.input_tokens": 3,
                   "llm.system": "x", "gen_ai.provider.name": "openai"})
    assert (g.input_tokens, g.provider) == (3, "openai")


@pytest.mark.parametrize("attributes, operation", [
    ({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}, "invoke_agent"),
    ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}, "execute_tool"),
    ({"openinference.span.kind": "AGENT"}, "invoke_agent"),
    ({"openinference.span.kind": "TOOL", "tool.name": "search"}, "execute_tool"),
    ({"openinference.span.kind": "CHAIN"}, "invoke_workflow"),
    ({"traceloop.span.kind": "workflow"}, "invoke_workflow"),
    ({"gen_ai.agent.name": "planner"}, None),  # any gen_ai.* key makes it GenAI, operation unknown
])
def test_agent_and_tool_spans_get_an_operation(attributes, operation):
    g = normalize(attributes)
    assert g is not None and g.operation == operation


@pytest.mark.parametrize("attributes", [
    {}, {"http.method": "GET", "user.id": "u1", "session.id": "s1"}, {"langfuse.observation.type": "span"},
    {"db.system": "postgresql", "error.type": "timeout"},
])
def test_spans_that_are_not_genai_stay_none(attributes):
    assert normalize(attributes) is None


def test_error_type_from_status_and_exception_event():
    g = normalize({"gen_ai.operation.name": "chat"},
                  [Event("exception", START_NS, {"exception.type": "openai.RateLimitError"})],
                  status_code=STATUS_ERROR)
    assert g.error_type == "openai.RateLimitError"
    assert normalize({"gen_ai.operation.name": "chat"}, status_code=STATUS_ERROR).error_type == "_OTHER"
    assert normalize({"gen_ai.operation.name": "chat", "error.type": "timeout"}).error_type == "timeout"
    assert normalize({"gen_ai.operation.name": "chat", "error.type": "<class 'httpx.ReadTimeout'>"}).error_type == (
        "httpx.ReadTimeout")
    assert normalize({"gen_ai.operation.name": "chat", "error.type": "RateLimitError"},
                     [Event("exception", START_NS, {"exception.type": "openai.RateLimitError"})],
                     status_code=STATUS_ERROR).error_type == "openai.RateLimitError"


def test_total_tokens_fill_the_missing_side():
    assert normalize({"llm.token_count.total": 30, "llm.token_count.completion": 10}).input_tokens == 20


def test_hostile_values_are_counted_and_the_batch_survives():
    telemetry = Telemetry()
    processor = make_processor("genai_normalize", telemetry=telemetry)
    spans = [
        make_span({"gen_ai.usage.input_tokens": "many", "gen_ai.usage.output_tokens": math.nan,
                   "gen_ai.usage.cache_read.input_tokens": -5, "gen_ai.response.time_to_first_chunk": math.inf,
                   "gen_ai.request.model": ["not", "a", "string"], "gen_ai.provider.name": "openai",
                   "gen_ai.input.messages": "[{not json", "gen_ai.output.messages": 42,
                   "llm.input_messages.x.message.role": "user", "langfuse.observation.usage_details": "{bad",
                   "langfuse.observation.completion_start_time": "yesterday"}),
        make_span({"gen_ai.input.messages": "[" * 100_000 + "]" * 100_000, "gen_ai.system": "openai"}),
        make_span({"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 7}),
    ]
    out = run([processor], spans)
    g = out[0].genai
    assert g.provider == "openai"
    assert (g.input_tokens, g.output_tokens, g.cache_read_tokens, g.ttft_ms, g.request_model) == (
        None, None, None, None, None)
    assert g.input_messages == [{"role": "user", "parts": [{"type": "text", "content": "[{not json"}]}]
    assert out[2].genai.input_tokens == 7
    assert telemetry.value("otelcol_processor_genai_invalid_values", processor="genai_normalize") >= 7


def test_messages_option_off_skips_content():
    processor = make_processor("genai_normalize", {"messages": False})
    g = run([processor], [make_span({"gen_ai.system": "openai", "gen_ai.input.messages": json.dumps([USER_MSG]),
                                     "gen_ai.prompt.0.content": "x"})])[0].genai
    assert g.provider == "openai" and g.input_messages is None


def test_rewrite_attributes_to_current_conventions():
    processor = make_processor("genai_normalize", {"rewrite_attributes": True})
    span = make_span({
        "gen_ai.system": "vertex_ai", "llm.request.type": "chat", "gen_ai.request.model": "gemini-1.5-pro",
        "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 2,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Hi there", "gen_ai.completion.0.content": "Hello!",
        "traceloop.association.properties.session_id": "s1", "gen_ai.server.ttft": 0.5,
        "custom.key": "kept",
    }, [Event("gen_ai.user.message", START_NS, {"content": "older"})])
    run([processor], [span])
    assert span.attributes == {
        "gen_ai.request.model": "gemini-1.5-pro", "custom.key": "kept",
        "gen_ai.provider.name": "gcp.vertex_ai", "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2,
        "gen_ai.conversation.id": "s1", "gen_ai.response.time_to_first_chunk": 0.5,
        "gen_ai.input.messages": json.dumps([USER_MSG], separators=(",", ":")),
        "gen_ai.output.messages": json.dumps([ASSISTANT_MSG], separators=(",", ":")),
    }
    assert span.events == []


_KEYS = sorted(__import__("processors.genai_conventions", fromlist=["ATTRIBUTE_MAP"]).ATTRIBUTE_MAP) + [
    "gen_ai.prompt.0.content", "gen_ai.prompt.1.role", "llm.input_messages.0.message.tool_calls.0.tool_call.id",
    "llm.output_messages.x.message.content", "input.value", "output.value", "llm.invocation_parameters", "other"]


def _values():
    from hypothesis import strategies as st

    scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                       st.text(max_size=30), st.sampled_from(["[", "{}", '[{"role": 1}]', '{"messages": 5}',
                                                              '{"choices": [1, {"message": "x"}]}', "[[[]]]"]),
                       st.binary(max_size=8))
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["role", "content", "parts", "tool_calls", "message", "text", "type"]), inner, max_size=3),
        max_leaves=8)


def test_any_attribute_values_never_break_a_batch():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from processors.genai_normalize import normalize_span, rewrite_attributes

    @settings(max_examples=150, deadline=None)
    @given(st.dictionaries(st.sampled_from(_KEYS), _values(), max_size=12),
           st.lists(st.tuples(st.sampled_from(["gen_ai.user.message", "gen_ai.choice", "gen_ai.content.prompt",
                                               "First Token Stream Event", "exception"]),
                              st.dictionaries(st.sampled_from(["content", "message", "gen_ai.event.content",
                                                               "gen_ai.prompt", "exception.type"]), _values(),
                                              max_size=3)), max_size=3))
    def check(attributes, events):
        span = make_span(attributes, [Event(name, START_NS, attrs) for name, attrs in events])
        g = normalize_span(span)  # raises on any internal error: the processor would count it
        if g is not None:
            rewrite_attributes(span, g)
            assert all(isinstance(m, dict) and isinstance(m.get("parts"), list) for m in g.input_messages or [])

    check()


def test_content_orjson_refuses_still_serialises():
    """Found by the property test: a >64-bit integer inside structured content."""
    processor = make_processor("genai_normalize", {"rewrite_attributes": True})
    span = make_span({"gen_ai.system": "openai"},
                     [Event("gen_ai.user.message", START_NS, {"content": {"n": 2**70}})])
    g = run([processor], [span])[0].genai
    assert g.input_messages == [{"role": "user", "parts": [{"type": "text", "content": '{"n":%d}' % 2**70}]}]
    assert json.loads(span.attributes["gen_ai.input.messages"]) == g.input_messages


def test_anthropic_content_blocks_become_tool_parts():
    g = normalize({"gen_ai.system": "anthropic", "gen_ai.prompt": json.dumps([
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                          {"type": "tool_use", "id": "tu1", "name": "weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "-3C"}]},
    ])})
    assert g.input_messages == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Let me check."},
                                        {"type": "tool_call", "id": "tu1", "name": "weather", "arguments": {"city": "Oslo"}}]},
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "tu1", "response": "-3C"}]},
    ]
