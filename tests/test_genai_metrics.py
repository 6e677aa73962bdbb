"""The genai_metrics connector: what it aggregates from span.genai, and the bounds it keeps."""

from __future__ import annotations

import logging

import pytest

from collector.component import ComponentContext, Overloaded
from collector.model import GenAI, Resource, SpanBatch
from collector.pipeline import Router
from collector.telemetry import Telemetry
from config.schema import build
from connectors import CONNECTORS
from connectors.genai_metrics import DURATION_BOUNDS, TOKEN_BOUNDS
from tests.span_helpers import T0, span


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def make(raw: dict | None = None, clock: Clock | None = None):
    factory = CONNECTORS.get("genai_metrics")
    config, errors = build(factory.config_class, raw or {})
    assert not errors, errors
    telemetry = Telemetry()
    ctx = ComponentContext("genai_metrics", "connector", telemetry, logging.getLogger("test.genai_metrics"))
    connector = factory.create(config, ctx)
    if clock is not None:
        connector.clock = clock
    return connector, telemetry


def call(model: str = "gpt-4o", *, service: str = "chat-api", error: str | None = None, input_tokens=100,
         output_tokens=20, cost=0.0015, ttft_ms: float | None = 250.0, rate: float | None = 40.0,
         duration_ms: float = 1200, **attributes):
    s = span(service=service, duration_ms=duration_ms, **attributes)
    s.genai = GenAI(provider="openai", operation="chat", request_model=model, response_model=model + "-2024",
                    input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost, ttft_ms=ttft_ms,
                    output_tokens_per_second=rate, error_type=error, user_id="u-1", session_id="s-1")
    return s


def points(resource_metrics, name: str) -> list[tuple[dict, object]]:
    """(attributes, data point) of metric ``name`` in the connector's output."""
    from collector.model import attributes_from_proto

    out = []
    for rm in resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    data = getattr(m, m.WhichOneof("data"))
                    out += [(attributes_from_proto(p.attributes), p) for p in data.data_points]
    return out


def by_model(resource_metrics, name: str, **match) -> dict[str, object]:
    return {a["gen_ai.request.model"]: p for a, p in points(resource_metrics, name)
            if all(a.get(k.replace("__", ".")) == v for k, v in match.items())}


def test_calls_tokens_cost_and_errors_per_model():
    connector, _ = make()
    spans = [call("gpt-4o"), call("gpt-4o", input_tokens=300, cost=0.0025),
             call("gpt-4o", error="openai.RateLimitError", output_tokens=None, cost=None),
             call("claude", input_tokens=7, output_tokens=3, cost=0.0001)]
    connector.export(SpanBatch(spans))
    out = connector.collect()

    calls = {(a["gen_ai.request.model"], a.get("error.type")): p.as_int for a, p in points(out, "gen_ai.client.calls")}
    assert calls == {("gpt-4o", None): 2, ("gpt-4o", "openai.RateLimitError"): 1, ("claude", None): 1}
    tokens_in = by_model(out, "gen_ai.client.token.usage", gen_ai__token__type="input", error__type=None)
    assert (tokens_in["gpt-4o"].sum, tokens_in["gpt-4o"].count) == (400, 2)
    assert (tokens_in["claude"].sum, tokens_in["claude"].count) == (7, 1)
    cost = by_model(out, "gen_ai.client.cost", error__type=None)
    assert cost["gpt-4o"].as_double == pytest.approx(0.004, abs=1e-12)
    assert cost["claude"].as_double == pytest.approx(0.0001, abs=1e-12)
    # the failed call had no cost and no output tokens: no point rather than a zero
    failed = [(a, p) for a, p in points(out, "gen_ai.client.cost") if a.get("error.type")]
    assert failed == []
    attrs, _ = points(out, "gen_ai.client.calls")[0]
    assert attrs == {"service.name": "chat-api", "gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
                     "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024"}


def test_histograms_use_the_semantic_convention_buckets_upper_inclusive():
    connector, _ = make()
    connector.export(SpanBatch([call(input_tokens=16, output_tokens=17, duration_ms=10.0, ttft_ms=20.0)]))
    out = connector.collect()
    tokens_in = by_model(out, "gen_ai.client.token.usage", gen_ai__token__type="input")["gpt-4o"]
    assert list(tokens_in.explicit_bounds) == list(TOKEN_BOUNDS) and TOKEN_BOUNDS[-1] == 67108864
    assert list(tokens_in.bucket_counts).index(1) == TOKEN_BOUNDS.index(16)  # 16 is in (4, 16]
    tokens_out = by_model(out, "gen_ai.client.token.usage", gen_ai__token__type="output")["gpt-4o"]
    assert list(tokens_out.bucket_counts).index(1) == TOKEN_BOUNDS.index(64)
    duration = by_model(out, "gen_ai.client.operation.duration")["gpt-4o"]
    assert DURATION_BOUNDS[0] == 0.01 and DURATION_BOUNDS[-1] == pytest.approx(81.92)
    assert list(duration.bucket_counts).index(1) == 0 and duration.sum == pytest.approx(0.01)
    ttfc = by_model(out, "gen_ai.client.operation.time_to_first_chunk")["gpt-4o"]
    assert ttfc.sum == pytest.approx(0.02) and list(ttfc.bucket_counts).index(1) == 1
    rate = by_model(out, "gen_ai.client.output_tokens_per_second")["gpt-4o"]
    assert rate.sum == 40.0 and rate.count == 1


def test_no_user_or_session_dimension_by_default_and_extra_dimensions_on_request():
    connector, _ = make()
    connector.export(SpanBatch([call(user__id="u-1", session__id="s-1", gen_ai__agent__name="support")]))
    attrs, _ = points(connector.collect(), "gen_ai.client.calls")[0]
    assert not {"user.id", "session.id", "gen_ai.agent.name", "gen_ai.conversation.id"} & set(attrs)

    connector, _ = make({"dimensions": ["gen_ai.agent.name", "feature"]})
    s = call(gen_ai__agent__name="support")
    s.resource = Resource({"service.name": "chat-api", "feature": "refunds"})  # resource fallback
    connector.export(SpanBatch([s, call(gen_ai__agent__name="triage")]))
    found = {(a.get("gen_ai.agent.name"), a.get("feature")) for a, _ in points(connector.collect(), "gen_ai.client.calls")}
    assert found == {("support", "refunds"), ("triage", None)}


def test_a_user_or_session_id_dimension_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        make({"dimensions": ["langfuse.session.id", "gen_ai.agent.name"]})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "langfuse.session.id is a user or session id" in warnings[0]


def test_max_series_sends_new_sets_to_one_counted_overflow_series():
    connector, telemetry = make({"max_series": 2})
    connector.export(SpanBatch([call(f"model-{i}") for i in range(5)] + [call("model-0")]))
    out = connector.collect()
    calls = points(out, "gen_ai.client.calls")
    assert len(calls) == 3
    overflow = [p.as_int for a, p in calls if a == {"otel.metric.overflow": True}]
    assert overflow == [3]
    assert sum(p.as_int for _, p in calls) == 6  # nothing lost, only merged
    assert telemetry.value("otelcol_connector_overflow_spans", connector="genai_metrics") == 3
    assert telemetry.value("otelcol_connector_series", connector="genai_metrics") == 2


def test_cumulative_keeps_start_time_and_grows_delta_reports_since_last_flush():
    clock = Clock()
    connector, _ = make(clock=clock)
    connector.export(SpanBatch([call()]))
    first = by_model(connector.collect(), "gen_ai.client.calls")["gpt-4o"]
    clock.now += 15 * 10**9
    connector.export(SpanBatch([call()]))
    second = by_model(connector.collect(), "gen_ai.client.calls")["gpt-4o"]
    assert (first.as_int, second.as_int) == (1, 2)
    assert first.start_time_unix_nano == second.start_time_unix_nano == T0
    assert second.time_unix_nano == T0 + 15 * 10**9

    clock = Clock()
    connector, _ = make({"aggregation_temporality": "delta"}, clock=clock)
    connector.export(SpanBatch([call(), call()]))
    clock.now += 10**9
    first = by_model(connector.collect(), "gen_ai.client.calls")["gpt-4o"]
    connector.export(SpanBatch([call()]))
    clock.now += 10**9
    out = connector.collect()
    second = by_model(out, "gen_ai.client.calls")["gpt-4o"]
    assert (first.as_int, second.as_int) == (2, 1)
    assert second.start_time_unix_nano == first.time_unix_nano
    metric = next(m for m in out[0].scope_metrics[0].metrics if m.name == "gen_ai.client.calls")
    assert metric.sum.aggregation_temporality == 1 and metric.sum.is_monotonic


def test_metrics_expiration_drops_idle_series():
    clock = Clock()
    connector, telemetry = make({"metrics_expiration": "1m"}, clock=clock)
    connector.export(SpanBatch([call("old")]))
    clock.now += 50 * 10**9
    connector.export(SpanBatch([call("new")]))
    clock.now += 20 * 10**9
    assert set(by_model(connector.collect(), "gen_ai.client.calls")) == {"new"}
    assert telemetry.value("otelcol_connector_expired_series", connector="genai_metrics") == 1


def test_a_negative_or_not_finite_cost_never_moves_the_cost_counter():
    connector, _ = make()
    connector.export(SpanBatch([call(cost=0.5), call(cost=-1.0), call(cost=float("nan")), call(cost=float("inf"))]))
    out = connector.collect()
    assert by_model(out, "gen_ai.client.cost")["gpt-4o"].as_double == 0.5
    assert by_model(out, "gen_ai.client.calls")["gpt-4o"].as_int == 4


def test_spans_that_are_not_genai_calls_are_ignored_and_empty_state_sends_nothing():
    connector, _ = make()
    connector.export(SpanBatch([span()]))
    assert connector.collect() == []


def test_an_app_span_with_only_a_conversation_id_is_not_counted_as_a_call():
    """A request span the app tags with gen_ai.conversation.id (so genai_normalize gives it a GenAI
    record) has no operation and no model: counting it would disagree with `stats`."""
    wrapper = span(service="chat-api")
    wrapper.genai = GenAI(session_id="conv-1", user_id="alice")
    connector, _ = make()
    connector.export(SpanBatch([wrapper, call()]))
    out = connector.collect()
    calls = points(out, "gen_ai.client.calls")
    assert [(a.get("gen_ai.request.model"), p.as_int) for a, p in calls] == [("gpt-4o", 1)]
    assert len(points(out, "gen_ai.client.operation.duration")) == 1


def test_flush_thread_emits_and_a_refused_flush_is_counted():
    import threading

    connector, telemetry = make({"metrics_flush_interval": "50ms"})
    got = threading.Event()
    emitted = []

    class Refusing:
        def consume(self, batch, timeout=None):
            emitted.append(batch)
            got.set()
            raise Overloaded("pipeline full")

    connector.export(SpanBatch([call()]))
    connector.start(Router("genai_metrics", {"metrics": Refusing()}, Telemetry()))
    assert got.wait(10)
    connector.shutdown()
    assert len(emitted[0]) == 7  # one series: input + output tokens, duration, TTFC, rate, cost, calls
    assert emitted and telemetry.value("otelcol_connector_flush_failed", connector="genai_metrics") >= 1


@pytest.mark.parametrize("raw, message", [
    ({"dimensions": ["error.type"]}, "always a dimension"),
    ({"dimensions": ["a", "a"]}, "more than once"),
    ({"max_series": 0}, "max_series"),
    ({"aggregation_temporality": "sometimes"}, "aggregation_temporality"),
])
def test_config_errors(raw, message):
    factory = CONNECTORS.get("genai_metrics")
    _, errors = build(factory.config_class, raw, ("connectors", "genai_metrics"))
    assert errors and message in "\n".join(str(e) for e in errors)


def test_benchmark_smoke_run(capsys):
    """bench/bench_genai_metrics.py runs on the shared span mix (its figures are not checked here)."""
    import json

    from bench import bench_genai_metrics

    assert bench_genai_metrics.main(["--spans", "600", "--runs", "1"]) == 0
    result = json.loads(capsys.readouterr().out)["results"]["default"]
    assert result["series"] > 5 and result["data_points"] > result["series"] and result["cpu_us_per_span"] > 0
