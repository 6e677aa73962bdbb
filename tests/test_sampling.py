"""sampling: the OTel hash_seed decision, keep rules, held traces, rate limit, content sampling."""

from __future__ import annotations

import math
import random

import pytest

from collector.model import STATUS_ERROR, Event, GenAI
from collector.telemetry import Telemetry
from config.schema import build
from processors import PROCESSORS
from processors.genai_content import is_content_key
from processors.sampling import (
    SamplingConfig, SamplingProcessor, fnv1a32_seeded, hash_seed_sampled, hash_seed_threshold,
    strip_content,
)
from tests.span_helpers import batch, context, span


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(raw: dict, telemetry: Telemetry | None = None, clock: Clock | None = None) -> SamplingProcessor:
    config, errors = build(SamplingConfig, raw)
    assert not errors, errors
    PROCESSORS.get("sampling")  # the registry line resolves to this module
    return SamplingProcessor(config, context("sampling", telemetry), clock=clock or Clock())


def ids(b) -> set[bytes]:
    return {s.span_id for s in b.spans}


def seeded_ids(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(n)]


def traces_metric(telemetry: Telemetry, decision: str, reason: str) -> float:
    return telemetry.value("otelcol_processor_sampling_traces", processor="sampling",
                           decision=decision, reason=reason)


# -- the OTel Collector probabilistic_sampler hash_seed algorithm -------------------------------


def test_hash_matches_the_otel_collector_vectors():
    # probabilisticsamplerprocessor/tracesprocessor_test.go TestEmptyHashFunction
    assert fnv1a32_seeded(b"", 0) & 0x3FFF == 0x3515
    assert fnv1a32_seeded(bytes(16), 0) & 0x3FFF == 0x2455


def test_hash_is_fnv1a_over_the_little_endian_seed_then_the_trace_id():
    # published FNV-1a 32 vectors: "foobar" -> 0xbf9cf968, "a" -> 0xe40c292c; the seed's 4 bytes
    # are hashed first, little-endian, so seed=b"foob" read as little-endian + data "ar" == "foobar"
    assert fnv1a32_seeded(b"ar", int.from_bytes(b"foob", "little")) == 0xBF9CF968
    assert fnv1a32_seeded(b"", int.from_bytes(b"a\0\0\0", "little")) != 0xE40C292C  # 4 seed bytes, always


def test_threshold_is_computed_in_float32_and_truncated_like_go():
    assert hash_seed_threshold(25) == 4096
    assert hash_seed_threshold(100) == 16384
    assert hash_seed_threshold(0) == 0
    assert hash_seed_threshold(13.33) == 2183
    # float64 would give 9619.9998 -> 9619; Go multiplies float32s: 9620.0 -> 9620
    assert hash_seed_threshold(58.71581914282377) == 9620
    # TestHashSeedRoundingDown: 75% of the smallest 14-bit probability rounds down to never
    assert hash_seed_threshold(3 * 2**-16 * 100) == 0


def test_a_percentage_below_one_bucket_samples_nothing_and_says_so(caplog):
    p = make({"probabilistic": {"sampling_percentage": 0.005}, "keep": {"errors": False}})
    assert len(p.process(batch(*[span() for _ in range(500)]))) == 0
    assert "rounded to zero" in caplog.text


def test_processor_decisions_equal_the_reference_function_and_agree_across_instances():
    tids = seeded_ids(3000)
    a, b = make({"probabilistic": {"sampling_percentage": 30, "hash_seed": 42}}), \
        make({"probabilistic": {"sampling_percentage": 30, "hash_seed": 42}})
    spans_a = [span(t) for t in tids]
    kept_a = {s.trace_id for s in a.process(batch(*spans_a)).spans}
    kept_b = {s.trace_id for s in b.process(batch(*[span(t) for t in tids])).spans}
    expected = {t for t in tids if hash_seed_sampled(t, 42, hash_seed_threshold(30))}
    assert kept_a == kept_b == expected
    other_seed = make({"probabilistic": {"sampling_percentage": 30, "hash_seed": 43}})
    kept_c = {s.trace_id for s in other_seed.process(batch(*[span(t) for t in tids])).spans}
    assert kept_c != kept_a


@pytest.mark.parametrize("percentage", [1, 25, 50, 90])
def test_sampling_rate_is_within_statistical_bounds(percentage):
    n = 20000
    p = make({"probabilistic": {"sampling_percentage": percentage, "hash_seed": 7}, "keep": {"errors": False}})
    tids = seeded_ids(n, seed=percentage)
    kept = len(p.process(batch(*[span(t) for t in tids])).spans)
    q = percentage / 100
    sigma = math.sqrt(n * q * (1 - q))
    assert abs(kept - n * q) < 5 * sigma, (kept, n * q, sigma)


def test_all_spans_of_a_trace_share_the_decision():
    p = make({"probabilistic": {"sampling_percentage": 50}, "keep": {"errors": False}})
    tids = seeded_ids(200)
    spans = [span(t) for t in tids for _ in range(3)]
    out = p.process(batch(*spans))
    per_trace: dict[bytes, int] = {}
    for s in out.spans:
        per_trace[s.trace_id] = per_trace.get(s.trace_id, 0) + 1
    assert set(per_trace.values()) == {3}


# -- keep rules --------------------------------------------------------------------------------


def dropped_trace_ids(n: int, percentage: float = 10, seed: int = 0) -> list[bytes]:
    """Trace ids that the probabilistic stage drops (so only a keep rule can keep them)."""
    threshold = hash_seed_threshold(percentage)
    return [t for t in seeded_ids(n * 20, seed=99) if not hash_seed_sampled(t, seed, threshold)][:n]


@pytest.mark.parametrize("keep,make_spans,reason", [
    ({"errors": True}, lambda t: [span(t), span(t, status=STATUS_ERROR)], "error"),
    ({"latency_threshold": "5s"}, lambda t: [span(t, duration_ms=3000), span(t, duration_ms=6000)], "latency"),
    ({"cost_threshold_usd": 0.5}, lambda t: [span(t, gen_ai__usage__cost=0.3), span(t, llm__cost__total=0.3)], "cost"),
    ({"tokens_threshold": 1000}, lambda t: [span(t, gen_ai__usage__input_tokens=600),
                                            span(t, llm__token_count__prompt=300, llm__token_count__completion=200)],
     "tokens"),
    ({"attributes": [{"key": "user.feedback", "values": ["negative"]}]},
     lambda t: [span(t), span(t, user__feedback="negative")], "attribute"),
    ({"attributes": [{"key": "eval.score", "max_value": 0.2}]},
     lambda t: [span(t), span(t, eval__score=0.1)], "attribute"),
    ({"attributes": [{"key": "http.route", "pattern": "/admin/.*"}]},
     lambda t: [span(t), span(t, http__route="/admin/users")], "attribute"),
    ({"services": ["billing-agent"]}, lambda t: [span(t), span(t, service="billing-agent")], "service"),
])
def test_keep_rules_override_the_probabilistic_drop(keep, make_spans, reason):
    telemetry = Telemetry()
    p = make({"probabilistic": {"sampling_percentage": 10}, "keep": {"errors": False, **keep}}, telemetry)
    keep_tid, boring_tid = dropped_trace_ids(2)
    matching = make_spans(keep_tid)
    boring = [span(boring_tid) for _ in matching]
    out = p.process(batch(*matching, *boring))
    assert ids(out) == {s.span_id for s in matching}
    assert traces_metric(telemetry, "kept", reason) == 1


def test_rules_that_do_not_match_keep_nothing():
    p = make({"probabilistic": {"sampling_percentage": 10},
              "keep": {"latency_threshold": "5s", "cost_threshold_usd": 1.0,
                       "attributes": [{"key": "user.feedback", "values": ["negative"]}]}})
    (tid,) = dropped_trace_ids(1)
    out = p.process(batch(span(tid, duration_ms=4000, gen_ai__usage__cost=0.9, user__feedback="positive")))
    assert len(out) == 0


def test_a_later_error_releases_the_held_spans_of_its_trace():
    telemetry, clock = Telemetry(), Clock()
    p = make({"probabilistic": {"sampling_percentage": 10}, "decision_wait": "10s"}, telemetry, clock)
    (tid,) = dropped_trace_ids(1)
    first = [span(tid), span(tid)]
    assert len(p.process(batch(*first))) == 0  # held, not dropped
    assert telemetry.value("otelcol_processor_sampling_held_traces", processor="sampling") == 1
    clock.now += 5
    error = span(tid, status=STATUS_ERROR)
    out = p.process(batch(error))
    assert ids(out) == {s.span_id for s in first} | {error.span_id}
    assert telemetry.value("otelcol_processor_sampling_held_spans", processor="sampling") == 0
    late = span(tid)
    assert ids(p.process(batch(late))) == {late.span_id}  # the trace is decided "keep"


def test_a_trace_without_a_match_is_dropped_after_decision_wait():
    telemetry, clock = Telemetry(), Clock()
    p = make({"probabilistic": {"sampling_percentage": 10}, "decision_wait": "10s"}, telemetry, clock)
    (tid,) = dropped_trace_ids(1)
    p.process(batch(span(tid)))
    clock.now += 9
    assert len(p.flush()) == 0 and len(p.held) == 1
    clock.now += 2  # no traffic: the pipeline's periodic flush decides it
    assert len(p.flush()) == 0
    assert traces_metric(telemetry, "dropped", "probabilistic") == 1
    assert telemetry.value("otelcol_processor_sampling_held_traces", processor="sampling") == 0
    assert len(p.process(batch(span(tid)))) == 0  # late span follows the decision
    rescued = span(tid, status=STATUS_ERROR)  # ... unless it matches a keep rule itself
    assert ids(p.process(batch(rescued))) == {rescued.span_id}
    assert telemetry.value("otelcol_processor_sampling_late_spans", processor="sampling") == 2


def test_held_memory_is_bounded_and_overflow_is_counted():
    telemetry = Telemetry()
    p = make({"probabilistic": {"sampling_percentage": 10}, "max_traces": 10, "max_spans": 25}, telemetry)
    tids = dropped_trace_ids(30)
    for tid in tids:
        p.process(batch(span(tid), span(tid)))
    assert len(p.held) <= 10 and p.held_spans <= 25
    evicted = telemetry.value("otelcol_processor_sampling_evicted_traces", processor="sampling")
    assert evicted == 30 - len(p.held)
    # the oldest were evicted: an error for the first trace can no longer bring its spans back
    out = p.process(batch(span(tids[0], status=STATUS_ERROR)))
    assert len(out) == 1


def test_without_keep_rules_nothing_is_held():
    p = make({"probabilistic": {"sampling_percentage": 10}, "keep": {"errors": False}})
    p.process(batch(*[span() for _ in range(100)]))
    assert not p.held and p.held_spans == 0


def test_shutdown_drops_held_traces_and_counts_them():
    telemetry = Telemetry()
    p = make({"probabilistic": {"sampling_percentage": 10}}, telemetry)
    p.process(batch(*[span(t) for t in dropped_trace_ids(5)]))
    p.shutdown()
    assert traces_metric(telemetry, "dropped", "probabilistic") == 5 and not p.held


# -- rate limit --------------------------------------------------------------------------------


def test_rate_limit_caps_spans_per_second_by_whole_traces():
    telemetry, clock = Telemetry(), Clock()
    p = make({"rate_limit": 100}, telemetry, clock)
    spans = [span(t) for t in seeded_ids(50) for _ in range(4)]  # 50 traces x 4 spans
    out = p.process(batch(*spans))
    assert 100 <= len(out) < 104 and len(out) % 4 == 0
    assert traces_metric(telemetry, "dropped", "rate_limited") == 50 - len(out) // 4
    clock.now += 1.0  # a second later the bucket is full again
    out = p.process(batch(*[span(t) for t in seeded_ids(50, seed=8) for _ in range(4)]))
    assert 100 <= len(out) < 104


# -- content sampling --------------------------------------------------------------------------


def content_span(tid: bytes | None = None):
    s = span(tid, **{
        "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]',
        "gen_ai.system_instructions": "be nice",
        "gen_ai.prompt.0.content": "hello", "gen_ai.prompt.0.role": "user",
        "gen_ai.completion.0.content": "hi there",
        "llm.input_messages.0.message.content": "hello",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city":"Paris"}',
        "input.value": "hello", "output.value": "hi there",
        "gen_ai.tool.call.arguments": '{"q": 1}', "traceloop.entity.input": "{}",
        "ai.prompt.messages": "[...]", "ai.toolCall.args": "{}", "ai.response.text": "hi",
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 5, "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.cost": 0.001, "llm.token_count.prompt": 12,
    })
    s.events.append(Event("gen_ai.choice", 1, {"index": 0, "finish_reason": "stop", "message": "{...}"}))
    s.genai = GenAI(input_tokens=12, output_tokens=5, request_model="gpt-4o", cost_usd=0.001,
                    input_messages=[{"role": "user", "parts": []}], output_messages=[{"role": "assistant"}])
    return s


def test_content_is_stripped_in_every_dialect_and_metrics_stay():
    s = content_span()
    strip_content(s)
    assert sorted(s.attributes) == ["gen_ai.request.model", "gen_ai.usage.cost", "gen_ai.usage.input_tokens",
                                    "gen_ai.usage.output_tokens", "llm.token_count.prompt"]
    assert s.events[0].attributes == {"index": 0, "finish_reason": "stop"}
    assert s.genai.input_messages is None and s.genai.output_messages is None
    assert (s.genai.input_tokens, s.genai.output_tokens, s.genai.cost_usd) == (12, 5, 0.001)
    assert s.duration_ms == 100
    assert not is_content_key("gen_ai.usage.prompt_tokens") and is_content_key("gen_ai.prompt")


def test_content_sampling_keeps_content_for_a_share_of_traces_and_metadata_for_all():
    telemetry = Telemetry()
    p = make({"content_sampling": {"percentage": 30}}, telemetry)
    n = 4000
    out = p.process(batch(*[content_span(t) for t in seeded_ids(n, seed=3)]))
    assert len(out) == n  # metadata for 100% of calls
    with_content = sum(1 for s in out.spans if "input.value" in s.attributes)
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert abs(with_content - 0.3 * n) < 5 * sigma
    stripped = [s for s in out.spans if "input.value" not in s.attributes]
    assert all(s.attributes["sampling.content"] == "stripped" for s in stripped)
    assert all(s.attributes["gen_ai.usage.input_tokens"] == 12 for s in stripped)
    assert telemetry.value("otelcol_processor_sampling_content_stripped_spans", processor="sampling") == len(stripped)


def test_rule_kept_traces_get_content_at_the_configured_rate_too():
    # the content decision uses its own seed: traces kept by a rule (hash said "drop") are not all stripped
    p = make({"probabilistic": {"sampling_percentage": 10}, "content_sampling": {"percentage": 50}})
    tids = dropped_trace_ids(1000)
    out = p.process(batch(*[span(t, status=STATUS_ERROR, input__value="x") for t in tids]))
    with_content = sum(1 for s in out.spans if "input.value" in s.attributes)
    assert len(out) == 1000 and abs(with_content - 500) < 5 * math.sqrt(250)


# -- config ------------------------------------------------------------------------------------


def test_config_errors_name_the_key():
    _, errors = build(SamplingConfig, {"probabilistic": {"sampling_percentage": 120}})
    assert [e.path for e in errors] == ["probabilistic::sampling_percentage"]
    _, errors = build(SamplingConfig, {"keep": {"attributes": [{"key": "a", "pattern": "("}]}})
    assert errors and "regular expression" in str(errors[0])
    _, errors = build(SamplingConfig, {"probabilistic": {"hash_seed": -1}})
    assert errors
    _, errors = build(SamplingConfig, {"decision_wait": "soon"})
    assert [e.path for e in errors] == ["decision_wait"]


def test_decision_wait_zero_holds_nothing():
    p = make({"probabilistic": {"sampling_percentage": 10}, "decision_wait": "0s"})
    (tid,) = dropped_trace_ids(1)
    assert len(p.process(batch(span(tid)))) == 0 and not p.held
    failing = span(tid, status=STATUS_ERROR)
    assert ids(p.process(batch(failing))) == {failing.span_id}  # only the span that matched
