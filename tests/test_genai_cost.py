"""genai_cost against genai-prices' own answers, user prices, model names seen in the wild."""

from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timezone

import pytest
from genai_prices import Usage, calc_price

from collector.model import GenAI
from collector.telemetry import Telemetry
from config.schema import build
from processors.genai_cost import GenAICostConfig
from tests.genai_helpers import START_NS, make_processor, make_span, run

START_DT = datetime.fromtimestamp(START_NS / 1e9, tz=timezone.utc)


def priced(genai: GenAI, raw: dict | None = None, start_ns: int = START_NS, attributes=None, processor=None):
    span = make_span(attributes, start_ns=start_ns)
    span.genai = genai
    return run([processor or make_processor("genai_cost", raw)], [span])[0]


def reference(model: str, provider_id: str | None, when: datetime = START_DT, **usage) -> float:
    return float(calc_price(Usage(**usage), model, provider_id=provider_id,
                            genai_request_timestamp=when).total_price)


@pytest.mark.parametrize("provider, model, gp_provider, usage", [
    ("openai", "gpt-4o", "openai", dict(input_tokens=1200, output_tokens=300, cache_read_tokens=200,
                                        output_reasoning_tokens=100)),
    ("openai", "o3-mini", "openai", dict(input_tokens=5000, output_tokens=4000, cache_read_tokens=1000,
                                         output_reasoning_tokens=3500)),
    ("anthropic", "claude-3-5-sonnet", "anthropic", dict(input_tokens=3000, output_tokens=500,
                                                        cache_read_tokens=1000, cache_write_tokens=800)),
    # tiered: above 200k input tokens every token costs the higher rate
    ("gcp.gemini", "gemini-2.5-pro", "google", dict(input_tokens=150_000, output_tokens=900, cache_read_tokens=5000)),
    ("gcp.gemini", "gemini-2.5-pro", "google", dict(input_tokens=250_000, output_tokens=900, cache_read_tokens=5000)),
    # the one family with its own reasoning-token price
    ("perplexity", "sonar-deep-research", "perplexity", dict(input_tokens=1000, output_tokens=800,
                                                             output_reasoning_tokens=600)),
    ("deepseek", "deepseek-chat", "deepseek", dict(input_tokens=4000, output_tokens=1000, cache_read_tokens=3000)),
])
def test_cost_equals_genai_prices(provider, model, gp_provider, usage):
    genai = GenAI(provider=provider, response_model=model, input_tokens=usage["input_tokens"],
                  output_tokens=usage["output_tokens"], cache_read_tokens=usage.get("cache_read_tokens"),
                  cache_write_tokens=usage.get("cache_write_tokens"),
                  reasoning_tokens=usage.get("output_reasoning_tokens"))
    span = priced(genai)
    expected = reference(model, gp_provider, **usage)
    assert span.genai.cost_usd == pytest.approx(expected, rel=1e-9)
    details = {k: v for k, v in span.attributes.items() if k.startswith("gen_ai.usage.cost_details.")}
    assert sum(details.values()) == pytest.approx(expected, rel=1e-9)
    assert span.attributes["gen_ai.usage.cost"] == span.genai.cost_usd
    if usage.get("cache_read_tokens"):
        assert details["gen_ai.usage.cost_details.cache_read"] > 0


def test_time_dependent_builtin_prices_follow_the_span_time():
    """DeepSeek's off-peak discount is a time-of-day price in genai-prices."""
    processor = make_processor("genai_cost")
    usage = dict(input_tokens=10_000, output_tokens=2000)
    costs = []
    for hour in (3, 18):
        when = datetime(2025, 3, 1, hour, 0, tzinfo=timezone.utc)
        span = priced(GenAI(provider="deepseek", response_model="deepseek-chat", **usage),
                      start_ns=int(when.timestamp()) * 10**9, processor=processor)
        assert span.genai.cost_usd == pytest.approx(reference("deepseek-chat", "deepseek", when, **usage))
        costs.append(span.genai.cost_usd)
    assert costs[0] != costs[1]


@pytest.mark.parametrize("provider, model, gp_provider, gp_model", [
    ("openai", "gpt-4o-2024-08-06", "openai", "gpt-4o"),
    ("openai", "openai/gpt-4o", "openai", "gpt-4o"),
    ("openrouter", "openai/gpt-4o", "openrouter", "openai/gpt-4o"),
    (None, "openai/gpt-4o-mini", "openai", "gpt-4o-mini"),
    ("aws.bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", "aws", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"),
    (None, "anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic", "claude-3-5-sonnet"),
    ("gcp.vertex_ai", "claude-3-5-sonnet@20240620", "anthropic", "claude-3-5-sonnet"),
    ("gcp.vertex_ai", "publishers/google/models/gemini-1.5-pro", "google", "gemini-1.5-pro"),
    ("azure.ai.openai", "gpt-4o", "azure", "gpt-4o"),
])
def test_model_names_in_the_wild(provider, model, gp_provider, gp_model):
    usage = dict(input_tokens=1000, output_tokens=500, cache_read_tokens=100)
    genai = GenAI(provider=provider, response_model=model, input_tokens=1000, output_tokens=500,
                  cache_read_tokens=100)
    assert priced(genai).genai.cost_usd == pytest.approx(reference(gp_model, gp_provider, **usage), rel=1e-9)


def test_model_alias_prices_an_azure_deployment():
    genai = GenAI(provider="azure.ai.openai", request_model="prod-chat-deployment", input_tokens=1000,
                  output_tokens=100)
    span = priced(genai, {"model_aliases": {"prod-chat-deployment": "gpt-4o-mini"}})
    assert span.genai.cost_usd == pytest.approx(reference("gpt-4o-mini", "openai", input_tokens=1000, output_tokens=100))


def test_response_model_first_then_request_model():
    genai = GenAI(provider="openai", request_model="gpt-4o", response_model="unknown-proxy-name",
                  input_tokens=1000, output_tokens=100)
    assert priced(genai).genai.cost_usd == pytest.approx(reference("gpt-4o", "openai", input_tokens=1000,
                                                                   output_tokens=100))


USER_PRICES = {"prices": [
    {"model": "my-llama-70b", "input_mtok": 0.5, "output_mtok": 1.5},
    {"model_regex": "ft:gpt-4o-mini:.*", "provider": "openai", "input_mtok": 0.3, "output_mtok": 1.2,
     "cache_read_mtok": 0.15, "reasoning_mtok": 2.0},
    {"model": "gpt-4o", "input_mtok": 2.0, "output_mtok": 8.0, "effective_from": "2025-06-01"},
    {"model": "gpt-4o", "input_mtok": 1.0, "output_mtok": 4.0, "effective_from": "2025-07-01T00:00:00Z"},
]}


def test_user_prices_exact_and_regex_per_token_type():
    processor = make_processor("genai_cost", USER_PRICES)
    span = priced(GenAI(response_model="my-llama-70b", input_tokens=2_000_000, output_tokens=1_000_000),
                  processor=processor)
    assert span.genai.cost_usd == pytest.approx(2 * 0.5 + 1.5)
    assert span.attributes["gen_ai.usage.cost_source"] == "config"
    ft = GenAI(provider="openai", response_model="ft:gpt-4o-mini:acme::abc123", input_tokens=1_000_000,
               output_tokens=1_000_000, cache_read_tokens=400_000, reasoning_tokens=250_000)
    assert priced(ft, processor=processor).genai.cost_usd == pytest.approx(
        0.6 * 0.3 + 0.4 * 0.15 + 0.75 * 1.2 + 0.25 * 2.0)
    other_provider = GenAI(provider="together", response_model="ft:gpt-4o-mini:acme::abc123",
                           input_tokens=1000, output_tokens=1000)
    assert priced(other_provider, processor=processor).genai.cost_usd is None


@pytest.mark.parametrize("yaml_dates", [False, True], ids=["iso-strings", "yaml-dates"])
def test_effective_dates_switch_prices_and_fall_back_to_builtin_before(yaml_dates):
    import yaml

    raw = USER_PRICES
    if yaml_dates:  # unquoted dates in YAML arrive as date/datetime objects
        raw = yaml.safe_load("prices:\n  - {model: gpt-4o, input_mtok: 2.0, output_mtok: 8.0, effective_from: 2025-06-01}\n"
                             "  - {model: gpt-4o, input_mtok: 1.0, output_mtok: 4.0, "
                             "effective_from: 2025-07-01T00:00:00Z}\n")
    processor = make_processor("genai_cost", raw)

    def cost_at(iso: str) -> float:
        when = datetime.fromisoformat(iso).replace(tzinfo=timezone.utc)
        genai = GenAI(provider="openai", response_model="gpt-4o", input_tokens=1_000_000, output_tokens=1_000_000)
        return priced(genai, start_ns=int(when.timestamp() * 1e9), processor=processor).genai.cost_usd

    assert cost_at("2025-05-31T23:59:59") == pytest.approx(
        reference("gpt-4o", "openai", datetime(2025, 5, 31, tzinfo=timezone.utc),
                  input_tokens=1_000_000, output_tokens=1_000_000))
    assert cost_at("2025-06-01T00:00:00") == pytest.approx(10.0)
    assert cost_at("2025-06-30T23:59:59") == pytest.approx(10.0)
    assert cost_at("2025-07-01T00:00:00") == pytest.approx(5.0)


def test_app_cost_is_kept_unless_override():
    genai = GenAI(provider="openai", response_model="gpt-4o", input_tokens=1000, output_tokens=100, cost_usd=0.5)
    span = priced(genai, attributes={"llm.cost.total": 0.5})
    assert span.genai.cost_usd == 0.5
    assert span.attributes["gen_ai.usage.cost"] == 0.5 and span.attributes["gen_ai.usage.cost_source"] == "app"
    genai.cost_usd = 0.5
    span = priced(genai, {"override": True})
    assert span.genai.cost_usd == pytest.approx(reference("gpt-4o", "openai", input_tokens=1000, output_tokens=100))
    unknown = GenAI(response_model="in-house-model", input_tokens=10, output_tokens=1, cost_usd=0.25)
    assert priced(unknown, {"override": True}).genai.cost_usd == 0.25  # nothing better to replace it with


def test_unknown_model_null_cost_one_warning_and_counter(caplog):
    telemetry = Telemetry()
    processor = make_processor("genai_cost", telemetry=telemetry)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            span = priced(GenAI(provider="openai", response_model="totally-new-model", input_tokens=10,
                                output_tokens=5), processor=processor)
            assert span.genai.cost_usd is None and span.genai.input_tokens == 10
            assert "gen_ai.usage.cost" not in span.attributes
    assert sum("totally-new-model" in r.getMessage() for r in caplog.records) == 1
    assert telemetry.value("otelcol_processor_unpriced_spans", processor="genai_cost",
                           model="totally-new-model") == 3


def test_spans_without_tokens_or_genai_are_left_alone():
    processor = make_processor("genai_cost")
    assert "gen_ai.usage.cost" not in priced(GenAI(provider="openai", response_model="gpt-4o"),
                                             processor=processor).attributes
    span = make_span({"http.method": "GET"})
    assert run([processor], [span])[0].attributes == {"http.method": "GET"}


def test_no_network_at_run_time(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("genai_cost tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    span = priced(GenAI(provider="mistral_ai", response_model="mistral-large-latest", input_tokens=1000,
                        output_tokens=100))
    assert span.genai.cost_usd > 0


@pytest.mark.parametrize("raw, message", [
    ({"prices": [{"model": "a", "model_regex": "b"}]}, "exactly one of model, model_regex"),
    ({"prices": [{"input_mtok": 1}]}, "exactly one of model, model_regex"),
    ({"prices": [{"model_regex": "(unclosed"}]}, "invalid regular expression"),
    ({"prices": [{"model": "a", "effective_from": "June"}]}, "invalid date"),
    ({"prices": [{"model": "a", "effective_from": 20250601}]}, "invalid date"),
    ({"prices": [{"model": "a", "input_mtok": -1}]}, "must be >= 0"),
    ({"prices": [{"model": "a", "per_token": 1}]}, "unknown key"),
])
def test_config_errors_are_precise(raw, message):
    _, errors = build(GenAICostConfig, raw, ("processors", "genai_cost"))
    assert errors and message in str(errors[0]) and str(errors[0]).startswith("processors::genai_cost::prices::0")


def test_unpriced_labels_and_warnings_stay_bounded(caplog):
    telemetry = Telemetry()
    processor = make_processor("genai_cost", telemetry=telemetry)
    spans = [make_span() for _ in range(260)]
    for i, span in enumerate(spans):
        span.genai = GenAI(response_model=f"random-{i}", input_tokens=1, output_tokens=1)
    with caplog.at_level(logging.WARNING):
        run([processor], spans)
    assert len(caplog.records) == 201  # 200 models named, then one line about the rest
    assert telemetry.value("otelcol_processor_unpriced_spans", processor="genai_cost", model="_other") == 60


def test_the_guide_example_is_a_valid_config():
    import yaml

    from tests.conftest import REPO

    section = (REPO / "docs" / "genai.md").read_text().split("<!-- section:processors-genai -->", 1)[1]
    example = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])["processors"]
    for type_name in ("genai_normalize", "genai_cost", "genai_token_rate"):
        make_processor(type_name, example[type_name])  # asserts no config errors


def test_new_model_lookups_are_rate_limited():
    """A flood of random model names cannot make every span pay a genai-prices lookup."""
    processor = make_processor("genai_cost")
    spans = [make_span() for _ in range(450)]
    for i, span in enumerate(spans):
        span.genai = GenAI(provider="openai", response_model=f"random-{i}", input_tokens=1, output_tokens=1)
    spans[-1].genai.response_model = "gpt-4o"  # past the budget: not priced in this second...
    started = time.monotonic()
    run([processor], spans)
    if time.monotonic() - started < 1.0:
        assert spans[-1].genai.cost_usd is None
    time.sleep(1.0)
    span = priced(GenAI(provider="openai", response_model="gpt-4o", input_tokens=1, output_tokens=1),
                  processor=processor)
    assert span.genai.cost_usd is not None  # ...but as soon as the budget refills
