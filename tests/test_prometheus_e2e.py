"""A real Prometheus scraping a real ``genai-collector run``: GenAI metrics and alert rules.

Spans go in through the official OTel SDK exporter; Prometheus (Debian's package) scrapes the
collector's prometheus exporter every second and evaluates a copy of the shipped alert rules with
short windows; the test asks it with PromQL over its HTTP API.  The expected values are computed
from what was sent (counts, tokens) and, for cost, by the same GenAI processors in-process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import OTLP_RECEIVERS, REPO, TELEMETRY, free_port, http_get, sdk_tracer_provider
from tests.genai_helpers import make_processor, make_span, run

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES = REPO / "config" / "prometheus" / "genai-rules.yml"
SCOPE = '{otel_scope_name="genai_metrics"}'  # the connector's series, not the app's of the same name

pytestmark = pytest.mark.skipif(
    not os.path.exists(PROMETHEUS) and os.environ.get("CI") != "true",
    reason="needs Debian's prometheus package (/usr/bin/prometheus); .ci/run installs it")

CONFIG = OTLP_RECEIVERS + """processors:
  genai_normalize:
  genai_cost:
  genai_token_rate:
connectors:
  genai_metrics:
    metrics_flush_interval: 200ms
exporters:
  prometheus:
    endpoint: 127.0.0.1:PROM_EXPORTER_PORT
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai_normalize, genai_cost, genai_token_rate]
      exporters: [genai_metrics]
    metrics/genai:
      receivers: [genai_metrics]
      exporters: [prometheus]
    metrics:              # the app's own metrics, through the same exporter (as the shipped config)
      receivers: [otlp]
      exporters: [prometheus]
""" + TELEMETRY

CALLS = [  # model, input tokens, output tokens, error type
    ("gpt-4o", 1200, 300, None), ("gpt-4o", 800, 150, None), ("gpt-4o", 40, 0, "openai.RateLimitError"),
    ("gpt-4o-mini", 5000, 700, None), ("gpt-4o-mini", 90, 10, None), ("gpt-4o-mini", 64, 16, None),
    ("claude-3-5-sonnet-20241022", 2000, 512, None),
]
PROVIDER = {"gpt-4o": "openai", "gpt-4o-mini": "openai", "claude-3-5-sonnet-20241022": "anthropic"}


def attributes(model: str, input_tokens: int, output_tokens: int, error: str | None) -> dict:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER[model],
             "gen_ai.request.model": model, "gen_ai.response.model": model,
             "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
             "user.id": "u-42", "session.id": "s-7"}
    if error:
        attrs["error.type"] = error
    else:
        attrs["gen_ai.response.time_to_first_chunk"] = 0.25  # seconds (a streamed call)
    return attrs


def send(endpoint: str, calls: list) -> None:
    from opentelemetry.trace import Status, StatusCode

    provider = sdk_tracer_provider(endpoint, "http", service="support-bot")
    tracer = provider.get_tracer("test")
    start = time.time_ns() - 10**10
    for i, (model, tin, tout, error) in enumerate(calls):
        span = tracer.start_span(f"chat {model}", start_time=start + i * 10**6,
                                 attributes=attributes(model, tin, tout, error))
        if error:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
        span.end(end_time=start + i * 10**6 + 1_500_000_000)
    provider.shutdown()


def send_app_token_metrics(endpoint: str, calls: list) -> None:
    """What openai-v2 also reports for the same calls: gen_ai.client.token.usage, via the SDK."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, timeout=10),
                                           export_interval_millis=3_600_000)
    meters = MeterProvider(resource=Resource.create({"service.name": "support-bot"}), metric_readers=[reader])
    usage = meters.get_meter("opentelemetry.instrumentation.openai_v2").create_histogram(
        "gen_ai.client.token.usage", unit="{token}")
    for model, tin, tout, _ in calls:
        usage.record(tin, {"gen_ai.request.model": model, "gen_ai.token.type": "input"})
        usage.record(tout, {"gen_ai.request.model": model, "gen_ai.token.type": "output"})
    assert reader.force_flush(10_000)
    meters.shutdown()


def expected_cost(calls: list) -> dict[str, float]:
    """Cost per model as the collector's processors compute it (genai-prices tables)."""
    spans = [make_span(attributes(*call)) for call in calls]
    spans = run([make_processor("genai_normalize"), make_processor("genai_cost")], spans)
    out: dict[str, float] = {}
    for (model, *_), span in zip(calls, spans):
        if span.genai.cost_usd is not None:
            out[model] = out.get(model, 0.0) + span.genai.cost_usd
    return out


class Prometheus:
    def __init__(self, tmp: Path, target_port: int, rules: Path) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "genai-collector",
                                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}]}))
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        self.tmp = tmp
        deadline = time.monotonic() + 60
        while http_get_quiet(f"http://127.0.0.1:{self.port}/-/ready") != 200:
            assert self.proc.poll() is None, (tmp / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus not ready in 60s"
            time.sleep(0.2)

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        code, body = http_get(url)
        assert code == 200, body
        return json.loads(body)["data"]["result"]

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def wait_for(self, promql: str, label: str, expected: dict, timeout: float = 60.0,
                 approx: float = 0.0) -> dict[str, float]:
        """Poll until the query's values equal ``expected`` (Prometheus scrapes every second)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.by(promql, label)
            if got.keys() == expected.keys() and all(abs(got[k] - expected[k]) <= approx for k in got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql}: {got} != {expected}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def http_get_quiet(url: str) -> int:
    try:
        return http_get(url, timeout=2)[0]
    except OSError:
        return 0


def fast_rules(tmp: Path) -> Path:
    """The shipped rules with `for:` of 1s and windows of seconds, so they can fire in a test."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = re.sub(r"\[(5m|1h)\]", "[30s]", rule["expr"])
            if "for" in rule:
                rule["for"] = "1s"
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def scrape_exporter(port: int) -> dict:
    code, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    return {f.name: f for f in text_string_to_metric_families(text)}


def counter_values(families: dict) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for name in ("gen_ai_client_calls", "gen_ai_client_cost_USD") if name in families
            for s in families[name].samples}


def test_shipped_rules_and_scrape_config_pass_promtool():
    if not os.path.exists(PROMTOOL) and os.environ.get("CI") != "true":
        pytest.skip("promtool not installed (Debian's prometheus package has it)")
    rules = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run([PROMTOOL, "check", "config", str(RULES.parent / "prometheus.yml")],
                            capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_shipped_alert_rules_fire_as_documented():
    """promtool's rule unit tests: every shipped alert fires (and only after its `for:`) on the
    series the connector serves, with the real windows and thresholds."""
    if not os.path.exists(PROMTOOL) and os.environ.get("CI") != "true":
        pytest.skip("promtool not installed (Debian's prometheus package has it)")
    tests = Path(__file__).parent / "prometheus" / "genai-rules.test.yml"
    result = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_prometheus_sees_what_was_sent_and_the_error_alert_fires(collector_factory, tmp_path):
    exporter_port = free_port()
    collector = collector_factory(CONFIG.replace("PROM_EXPORTER_PORT", str(exporter_port)))
    prometheus = Prometheus(tmp_path, exporter_port, fast_rules(tmp_path))
    try:
        send(collector.http_url, CALLS)
        send_app_token_metrics(collector.http_url.replace("/v1/traces", "/v1/metrics"), CALLS)
        calls, tokens, costs = {}, {}, expected_cost(CALLS)
        for model, tin, tout, _ in CALLS:
            calls[model] = calls.get(model, 0) + 1
            tokens[f"{model}/input"] = tokens.get(f"{model}/input", 0) + tin
            tokens[f"{model}/output"] = tokens.get(f"{model}/output", 0) + tout
        assert set(costs) == set(calls) and all(c > 0 for c in costs.values())

        prometheus.wait_for(f"sum by (gen_ai_request_model) (gen_ai_client_calls_total{SCOPE})",
                            "gen_ai_request_model", calls)
        prometheus.wait_for('sum by (gen_ai_request_model) (gen_ai_client_calls_total{otel_scope_name="genai_metrics",error_type!=""})',
                            "gen_ai_request_model", {"gpt-4o": 1})
        got_tokens = {f'{r["metric"]["gen_ai_request_model"]}/{r["metric"]["gen_ai_token_type"]}': float(r["value"][1])
                      for r in prometheus.query("sum by (gen_ai_request_model, gen_ai_token_type) "
                                                f"(gen_ai_client_token_usage_sum{SCOPE})")}
        assert got_tokens == tokens
        # the app reported the same calls: without the scope they count twice (docs/metrics.md)
        doubled = prometheus.wait_for("sum(gen_ai_client_token_usage_sum)", "", {"": 2 * sum(tokens.values())})
        assert doubled
        prometheus.wait_for(f"sum by (gen_ai_request_model) (gen_ai_client_cost_USD_total{SCOPE})",
                            "gen_ai_request_model", costs, approx=1e-9)
        durations = prometheus.by(f"sum by (gen_ai_request_model) (gen_ai_client_operation_duration_seconds_count{SCOPE})",
                                  "gen_ai_request_model")
        assert durations == calls
        ttfc = prometheus.by("sum by (gen_ai_request_model) "
                             "(gen_ai_client_operation_time_to_first_chunk_seconds_sum)", "gen_ai_request_model")
        ok_calls = {m: sum(1 for c in CALLS if c[0] == m and not c[3]) for m in calls}
        assert ttfc == pytest.approx({m: 0.25 * n for m, n in ok_calls.items()}, abs=1e-9)
        # no user or session id became a label
        series = prometheus.query("gen_ai_client_calls_total")
        assert not {"user_id", "session_id"} & {k for r in series for k in r["metric"]}

        before = counter_values(scrape_exporter(exporter_port))
        assert prometheus.query('ALERTS{alertname="GenAIHighErrorRate", alertstate="firing"}') == []

        # a burst of errors: the error-rate alert fires
        burst = [("gpt-4o", 30, 0, "openai.RateLimitError")] * 25
        send(collector.http_url, burst)
        prometheus.wait_for('sum by (gen_ai_request_model) (gen_ai_client_calls_total{otel_scope_name="genai_metrics",error_type!=""})',
                            "gen_ai_request_model", {"gpt-4o": 26})
        deadline = time.monotonic() + 90
        while not prometheus.query('ALERTS{alertname="GenAIHighErrorRate", alertstate="firing"}'):
            assert time.monotonic() < deadline, prometheus.query("ALERTS")
            time.sleep(0.5)
        (alert,) = prometheus.query('ALERTS{alertname="GenAIHighErrorRate", alertstate="firing"}')
        assert alert["metric"]["gen_ai_request_model"] == "gpt-4o"
        assert alert["metric"]["service_name"] == "support-bot"

        # counters only went up while the collector ran, in the exporter and as Prometheus saw them
        after = counter_values(scrape_exporter(exporter_port))
        assert before and all(after[key] >= value for key, value in before.items())
        assert prometheus.by("sum(resets(gen_ai_client_calls_total[10m]))", "") == {"": 0.0}
    finally:
        prometheus.stop()
    assert collector.stop(signal.SIGTERM) == 0


def test_a_restart_starts_the_series_over_from_zero(collector_factory):
    """What docs/metrics.md says a restart does: state is in memory, the counters begin again
    (Prometheus sees a counter reset, which rate()/increase() handle)."""
    exporter_port = free_port()
    config = CONFIG.replace("PROM_EXPORTER_PORT", str(exporter_port))

    def calls_served(expected: float) -> None:
        deadline = time.monotonic() + 60
        while True:
            families = scrape_exporter(exporter_port)
            got = sum(s.value for s in families["gen_ai_client_calls"].samples) if "gen_ai_client_calls" in families else 0
            if got == expected:
                return
            assert time.monotonic() < deadline, f"{got} calls served, expected {expected}"
            time.sleep(0.2)

    first = collector_factory(config)
    send(first.http_url, CALLS[:3])
    calls_served(3)
    assert first.stop(signal.SIGTERM) == 0
    second = collector_factory(config)
    send(second.http_url, CALLS[:1])
    calls_served(1)
