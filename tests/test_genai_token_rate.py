"""genai_token_rate: latency, time to first token from every source, a rate that is never inf."""

from __future__ import annotations

import math

import pytest

from collector.model import Event
from tests.genai_helpers import START_NS, make_processor, make_span, run


def rate(attributes, events=None, duration_ms=2000.0, raw=None):
    span = make_span(attributes, events, duration_ms=duration_ms)
    return run([make_processor("genai_normalize"), make_processor("genai_token_rate", raw)], [span])[0]


def ms(value: float) -> int:
    return START_NS + int(value * 1e6)


@pytest.mark.parametrize("attributes, events, ttft", [
    ({"gen_ai.response.time_to_first_chunk": 0.5}, [], 500.0),
    ({"gen_ai.server.ttft": "0.5"}, [], 500.0),  # OpenLIT, numeric string
    ({}, [Event("First Token Stream Event", ms(500))], 500.0),  # OpenInference
    ({}, [Event("gen_ai.content.completion.chunk", ms(500)), Event("gen_ai.content.completion.chunk", ms(900))],
     500.0),  # OpenLLMetry: the first chunk counts
])
def test_time_to_first_token_sources_and_rate_after_it(attributes, events, ttft):
    span = rate({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 300, **attributes}, events)
    g = span.genai
    assert g.ttft_ms == pytest.approx(ttft)
    assert g.output_tokens_per_second == pytest.approx(300 / 1.5)  # 300 tokens over 2.0 s - 0.5 s
    assert span.attributes["gen_ai.ttft_ms"] == pytest.approx(ttft)
    assert span.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(ttft / 1000)
    assert span.attributes["gen_ai.latency_ms"] == pytest.approx(2000.0)
    assert span.attributes["gen_ai.output_tokens_per_second"] == pytest.approx(200.0)


def test_without_first_token_the_rate_spans_the_whole_call():
    g = rate({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 100}).genai
    assert g.ttft_ms is None and g.output_tokens_per_second == pytest.approx(50.0)


@pytest.mark.parametrize("attributes, duration_ms", [
    ({"gen_ai.operation.name": "chat"}, 2000.0),  # no tokens: no rate
    ({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 10}, 0.0),  # zero duration
    ({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 10}, -5.0),  # end before start
])
def test_no_rate_without_tokens_or_time(attributes, duration_ms):
    span = rate(attributes, duration_ms=duration_ms)
    assert span.genai.output_tokens_per_second is None
    assert "gen_ai.output_tokens_per_second" not in span.attributes


def test_first_token_after_the_end_falls_back_to_the_whole_call():
    span = rate({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 100,
                 "gen_ai.response.time_to_first_chunk": 5.0}, duration_ms=2000.0)
    assert span.genai.output_tokens_per_second == pytest.approx(50.0)
    assert math.isfinite(span.attributes["gen_ai.output_tokens_per_second"])


def test_ttft_at_the_very_end_never_divides_by_zero():
    span = rate({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 100},
                [Event("First Token Stream Event", ms(2000))], duration_ms=2000.0)
    assert span.genai.output_tokens_per_second == pytest.approx(50.0)


def test_standard_ttft_attribute_is_not_overwritten_and_attributes_can_be_off():
    span = rate({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 1,
                 "gen_ai.response.time_to_first_chunk": 0.25})
    assert span.attributes["gen_ai.response.time_to_first_chunk"] == 0.25
    quiet = rate({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 10}, raw={"write_attributes": False})
    assert quiet.genai.output_tokens_per_second == pytest.approx(5.0)
    assert not [k for k in quiet.attributes if k.startswith("gen_ai.latency")]


def test_non_genai_spans_are_untouched():
    span = rate({"http.method": "GET"})
    assert span.genai is None and span.attributes == {"http.method": "GET"}
