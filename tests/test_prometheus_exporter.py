"""The prometheus exporter over real HTTP: names, labels, formats, delta sums, expiry."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request

import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from collector.component import ComponentContext
from collector.model import attributes_to_proto
from collector.telemetry import Telemetry
from config.schema import build
from exporters import EXPORTERS
from exporters.prometheus import metric_name
from tests.conftest import OTLP_RECEIVERS, TELEMETRY


@pytest.fixture
def exporter_factory():
    made = []

    def make(raw: dict | None = None):
        factory = EXPORTERS.get("prometheus")
        config, errors = build(factory.config_class, {"endpoint": "127.0.0.1:0", **(raw or {})})
        assert not errors, errors
        ctx = ComponentContext("prometheus", "exporter", Telemetry(), logging.getLogger("test.prometheus"))
        exporter = factory.create(config, ctx)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown()


def scrape(exporter, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{exporter.port}/metrics",
                                     headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def resource_metrics(resource: dict | None = None, *, temporality: int = 2, calls: int = 3,
                     attrs: dict | None = None) -> metrics_pb2.ResourceMetrics:
    rm = metrics_pb2.ResourceMetrics()
    attributes_to_proto(resource or {}, rm.resource.attributes)
    sm = rm.scope_metrics.add()
    sm.scope.name, sm.scope.version = "opentelemetry.instrumentation.openai_v2", "2.4b0"
    point_attrs = attrs or {"gen_ai.request.model": "gpt-4o", "error.type": "timeout"}
    counter = sm.metrics.add(name="gen_ai.client.calls", unit="{call}", description="calls")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = temporality
    p = counter.sum.data_points.add(as_int=calls)
    attributes_to_proto(point_attrs, p.attributes)
    hist = sm.metrics.add(name="gen_ai.client.operation.duration", unit="s", description="duration")
    hist.histogram.aggregation_temporality = temporality
    h = hist.histogram.data_points.add(count=3, sum=1.5, explicit_bounds=[0.1, 1.0], bucket_counts=[1, 1, 1])
    attributes_to_proto(point_attrs, h.attributes)
    gauge = sm.metrics.add(name="process.cpu.utilization", unit="1")
    gauge.gauge.data_points.add(as_double=0.25)
    updown = sm.metrics.add(name="queue.size", unit="{item}")
    updown.sum.is_monotonic = False
    updown.sum.data_points.add(as_int=-4)
    summary = sm.metrics.add(name="rpc.latency", unit="ms")
    q = summary.summary.data_points.add(count=4, sum=10.0)
    q.quantile_values.add(quantile=0.5, value=2.0)
    q.quantile_values.add(quantile=0.99, value=4.5)
    stale = sm.metrics.add(name="gone", unit="1")
    stale.gauge.data_points.add(as_double=1.0, flags=1)  # no recorded value
    return rm


@pytest.mark.parametrize("name, unit, kind, expected", [
    ("gen_ai.client.operation.duration", "s", "histogram", ("gen_ai_client_operation_duration_seconds", "seconds")),
    ("gen_ai.client.token.usage", "{token}", "histogram", ("gen_ai_client_token_usage", "")),
    ("gen_ai.client.output_tokens_per_second", "{token}/s", "histogram",
     ("gen_ai_client_output_tokens_per_second", "")),
    ("gen_ai.client.cost", "USD", "counter", ("gen_ai_client_cost_USD", "USD")),
    ("http.server.request.size", "By", "histogram", ("http_server_request_size_bytes", "bytes")),
    ("system.cpu.utilization", "1", "gauge", ("system_cpu_utilization_ratio", "ratio")),
    ("requests", "1", "counter", ("requests", "")),
    ("db.io", "By/s", "gauge", ("db_io_bytes_per_second", "")),
    ("latency.seconds", "s", "gauge", ("latency_seconds", "seconds")),
    ("2xx.count", "", "counter", ("_2xx_count", "")),
])
def test_otel_to_prometheus_name_translation(name, unit, kind, expected):
    assert metric_name(name, unit, kind) == expected


def test_text_format_parses_with_translated_names_and_labels(exporter_factory):
    exporter = exporter_factory()
    exporter.export_resource_metrics([resource_metrics({"service.name": "chat", "service.instance.id": "pod-1",
                                                        "host.name": "h1"})])
    content_type, text = scrape(exporter)
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = families["gen_ai_client_calls"]
    assert calls.type == "counter"
    (sample,) = calls.samples
    assert sample.name == "gen_ai_client_calls_total" and sample.value == 3
    assert sample.labels == {"gen_ai_request_model": "gpt-4o", "error_type": "timeout", "job": "chat",
                             "instance": "pod-1", "otel_scope_name": "opentelemetry.instrumentation.openai_v2",
                             "otel_scope_version": "2.4b0"}
    duration = families["gen_ai_client_operation_duration_seconds"]
    buckets = {s.labels["le"]: s.value for s in duration.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1, "1.0": 2, "+Inf": 3}
    assert {s.name: s.value for s in duration.samples if not s.name.endswith("_bucket")} == {
        "gen_ai_client_operation_duration_seconds_count": 3, "gen_ai_client_operation_duration_seconds_sum": 1.5}
    assert families["process_cpu_utilization_ratio"].samples[0].value == 0.25
    assert families["queue_size"].type == "gauge" and families["queue_size"].samples[0].value == -4
    latency = {(s.name, s.labels.get("quantile")): s.value for s in families["rpc_latency_milliseconds"].samples}
    assert latency == {("rpc_latency_milliseconds", "0.5"): 2.0, ("rpc_latency_milliseconds", "0.99"): 4.5,
                       ("rpc_latency_milliseconds_count", None): 4, ("rpc_latency_milliseconds_sum", None): 10.0}
    assert "gone_ratio" not in families
    info = families["target_info"].samples[0]
    assert info.labels == {"job": "chat", "instance": "pod-1", "host_name": "h1"} and info.value == 1


def test_openmetrics_when_the_scraper_asks(exporter_factory):
    exporter = exporter_factory()
    exporter.export_resource_metrics([resource_metrics()])
    content_type, text = scrape(exporter, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["gen_ai_client_operation_duration_seconds"].unit == "seconds"
    assert families["gen_ai_client_calls"].samples[0].name == "gen_ai_client_calls_total"


def test_resource_to_telemetry_conversion_namespace_and_const_labels(exporter_factory):
    exporter = exporter_factory({"resource_to_telemetry_conversion": {"enabled": True}, "namespace": "llm",
                                 "const_labels": {"env": "prod"}})
    exporter.export_resource_metrics([resource_metrics({"service.name": "chat", "deployment.environment": "x"})])
    families = {f.name: f for f in text_string_to_metric_families(scrape(exporter)[1])}
    assert "target_info" not in families
    sample = families["llm_gen_ai_client_calls"].samples[0]
    assert sample.labels["deployment_environment"] == "x" and sample.labels["service_name"] == "chat"
    assert sample.labels["env"] == "prod" and sample.labels["job"] == "chat"


def test_cumulative_points_replace_delta_points_add_up(exporter_factory):
    exporter = exporter_factory()
    exporter.export_resource_metrics([resource_metrics(calls=3)])
    exporter.export_resource_metrics([resource_metrics(calls=5)])
    delta = resource_metrics({"service.name": "d"}, temporality=1, calls=2)
    exporter.export_resource_metrics([delta])
    exporter.export_resource_metrics([delta])
    families = {f.name: f for f in text_string_to_metric_families(scrape(exporter)[1])}
    by_job = {s.labels.get("job"): s.value for s in families["gen_ai_client_calls"].samples}
    assert by_job == {None: 5, "d": 4}
    counts = {s.labels.get("job"): s.value for s in families["gen_ai_client_operation_duration_seconds"].samples
              if s.name.endswith("_count")}
    assert counts == {None: 3, "d": 6}


def test_series_expire_after_metric_expiration(exporter_factory):
    exporter = exporter_factory({"metric_expiration": "300ms"})
    exporter.export_resource_metrics([resource_metrics()])
    assert "gen_ai_client_calls_total" in scrape(exporter)[1]
    deadline = time.monotonic() + 30
    while "gen_ai_client_calls_total" in scrape(exporter)[1]:
        assert time.monotonic() < deadline, "series never expired"
        time.sleep(0.1)
    exporter.export_resource_metrics([resource_metrics()])
    assert "gen_ai_client_calls_total" in scrape(exporter)[1]


def test_exponential_histograms_are_counted_not_served(exporter_factory):
    exporter = exporter_factory()
    rm = metrics_pb2.ResourceMetrics()
    m = rm.scope_metrics.add().metrics.add(name="x")
    m.exponential_histogram.data_points.add(count=1)
    exporter.export_resource_metrics([rm])
    assert "x" not in {f.name for f in text_string_to_metric_families(scrape(exporter)[1])}
    assert exporter.unsupported.value == 1


def test_a_taken_port_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        factory = EXPORTERS.get("prometheus")
        config, _ = build(factory.config_class, {"endpoint": f"127.0.0.1:{port}"})
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            factory.create(config, ComponentContext("prometheus", "exporter", Telemetry(), logging.getLogger("t")))


APP_METRICS_CONFIG = OTLP_RECEIVERS + """processors:
  genai_normalize:
connectors:
  genai_metrics:
    metrics_flush_interval: 100ms
exporters:
  prometheus:
    endpoint: 127.0.0.1:GENAI_PORT
  prometheus/app:
    endpoint: 127.0.0.1:APP_PORT
    namespace: app
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai_normalize]
      exporters: [genai_metrics]
    metrics/genai:
      receivers: [genai_metrics]
      exporters: [prometheus]
    metrics:
      receivers: [otlp]
      exporters: [prometheus/app]
""" + TELEMETRY


def test_the_apps_own_otlp_metrics_pass_through_kept_apart_from_the_connectors(collector_factory):
    """An app's SDK metrics (same names as the connector's) served by their own exporter with a
    namespace, as docs/metrics.md advises, so no call is counted twice."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    from tests.conftest import free_port, http_get, sdk_tracer_provider

    genai_port, app_port = free_port(), free_port()
    collector = collector_factory(APP_METRICS_CONFIG.replace("GENAI_PORT", str(genai_port))
                                  .replace("APP_PORT", str(app_port)))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/metrics", timeout=10),
        export_interval_millis=60_000)
    meters = MeterProvider(resource=Resource.create({"service.name": "support-bot"}), metric_readers=[reader])
    usage = meters.get_meter("openai-v2").create_histogram("gen_ai.client.token.usage", unit="{token}")
    usage.record(120, {"gen_ai.request.model": "gpt-4o", "gen_ai.token.type": "input"})
    assert reader.force_flush(10_000)
    meters.shutdown()

    tracer = sdk_tracer_provider(collector.http_url, "http", service="support-bot")
    tracer.get_tracer("t").start_span("chat gpt-4o", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 5}).end()
    tracer.shutdown()

    deadline = time.monotonic() + 30
    while True:
        app = {f.name: f for f in text_string_to_metric_families(http_get(f"http://127.0.0.1:{app_port}/metrics")[1])}
        genai = {f.name: f for f in text_string_to_metric_families(http_get(f"http://127.0.0.1:{genai_port}/metrics")[1])}
        if "app_gen_ai_client_token_usage" in app and "gen_ai_client_token_usage" in genai:
            break
        assert time.monotonic() < deadline, (app.keys(), genai.keys())
        time.sleep(0.2)
    (app_sum,) = [s for s in app["app_gen_ai_client_token_usage"].samples if s.name.endswith("_sum")]
    assert app_sum.value == 120 and app_sum.labels["job"] == "support-bot"
    assert app_sum.labels["gen_ai_request_model"] == "gpt-4o"
    assert "target_info" in app  # the SDK's resource (telemetry.sdk.*) as target_info
    genai_sums = [s for s in genai["gen_ai_client_token_usage"].samples
                  if s.name.endswith("_sum") and s.labels["gen_ai_token_type"] == "input"]
    assert [s.value for s in genai_sums] == [120] and "job" not in genai_sums[0].labels
    assert "gen_ai_client_token_usage" not in app  # nothing of the app's under the connector's names
