"""All three OTLP signals through real sockets: the official Python SDK exporters, raw OTLP
requests forwarded upstream unchanged, redaction of log bodies, refusal of unrouted signals,
and acknowledged log records surviving ``kill -9``."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import sqlite3
import time

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.receiver_helpers import (InProcessCollector, collector_yaml, free_port, log_bodies, make_logs_request,
                                    start_collector, stored_logs)
from tests.test_receiver_durability import Load, crash_config
from tests.test_signals_model import hex_ids, logs_request, metrics_request
from tests.upstream_support import FakeUpstream

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
EMAIL = "jane.roe@example.com"


def upstream_yaml(grpc_port: int, http_port: int, upstream: FakeUpstream, exporter: str = "otlp",
                  log_processors: str = "", processors_section: str = "") -> str:
    """Three pipelines sharing one upstream exporter (no queue: export is synchronous, so an
    acknowledgement means the upstream has it)."""
    endpoint = upstream.grpc_endpoint if exporter == "otlp" else upstream.http_endpoint
    tls = "\n    tls: {insecure: true}" if exporter == "otlp" else ""
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
{processors_section}
exporters:
  {exporter}:
    endpoint: {endpoint}{tls}
    compression: none
    sending_queue: {{enabled: false}}
    retry_on_failure: {{initial_interval: 100ms, max_elapsed_time: 10s}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [{exporter}]}}
    logs: {{receivers: [otlp], processors: [{log_processors}], exporters: [{exporter}]}}
    metrics: {{receivers: [otlp], exporters: [{exporter}]}}
  telemetry:
    metrics: {{address: "127.0.0.1:0"}}
"""


@pytest.fixture
def upstream():
    fake = FakeUpstream()
    yield fake
    fake.close()


def received(upstream: FakeUpstream, signal_name: str, cls, timeout: float = 15.0) -> list:
    deadline = time.monotonic() + timeout
    while not upstream.received[signal_name] and time.monotonic() < deadline:
        time.sleep(0.05)
    return [cls.FromString(raw) for raw in upstream.received[signal_name]]


def records_of(requests: list[ExportLogsServiceRequest]) -> list:
    return [r for req in requests for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]


# -- the official Python SDK exporters ----------------------------------------------------------


def sdk_exporters(protocol: str, grpc_port: int, http_port: int):
    """(span, log, metric) exporters of the SDK, each recording what its ``export`` returned."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        kw = {"endpoint": f"127.0.0.1:{grpc_port}", "insecure": True}
        made = [OTLPSpanExporter(**kw), OTLPLogExporter(**kw), OTLPMetricExporter(**kw)]
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = f"http://127.0.0.1:{http_port}"
        made = [OTLPSpanExporter(endpoint=f"{base}/v1/traces"), OTLPLogExporter(endpoint=f"{base}/v1/logs"),
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics")]
    results: list = []
    for exporter in made:
        original = exporter.export

        def export(*args, _original=original, **kwargs):
            result = _original(*args, **kwargs)
            results.append(result)
            return result

        exporter.export = export
    return made, results


def emit_all_three(span_exporter, log_exporter, metric_exporter, message: str) -> None:
    """What an instrumented app does: a span, a log record inside it, a counter and a histogram."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    resource = Resource.create({"service.name": "signals-test"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])

    app_log = logging.getLogger(f"signals-test-{id(log_exporter)}")
    app_log.propagate = False
    app_log.addHandler(LoggingHandler(logger_provider=logger_provider))
    meter = meter_provider.get_meter("signals-test")
    with tracer_provider.get_tracer("signals-test").start_as_current_span("chat gpt-4o"):
        app_log.warning(message)
        meter.create_counter("app.requests").add(3, {"route": "/chat"})
        meter.create_histogram("gen_ai.client.operation.duration", unit="s").record(0.42)
    meter_provider.force_flush()
    for provider in (tracer_provider, logger_provider, meter_provider):
        provider.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_python_sdk_exports_traces_logs_and_metrics_without_error(tmp_path, upstream, protocol):
    from opentelemetry.sdk._logs.export import LogRecordExportResult
    from opentelemetry.sdk.metrics.export import MetricExportResult
    from opentelemetry.sdk.trace.export import SpanExportResult

    g, h = free_port(), free_port()
    collector = InProcessCollector(upstream_yaml(g, h, upstream))
    try:
        (spans, logs, metrics), results = sdk_exporters(protocol, g, h)
        emit_all_three(spans, logs, metrics, f"hello from {protocol}")
    finally:
        collector.stop()
    assert SpanExportResult.SUCCESS in results and LogRecordExportResult.SUCCESS in results
    assert MetricExportResult.SUCCESS in results
    assert all(r.name == "SUCCESS" for r in results), results
    assert len(upstream.span_ids) == 1
    records = records_of(received(upstream, "logs", ExportLogsServiceRequest))
    assert [r.body.string_value for r in records] == [f"hello from {protocol}"]
    assert records[0].trace_id == upstream.requests[0].resource_spans[0].scope_spans[0].spans[0].trace_id
    names = {m.name for req in received(upstream, "metrics", ExportMetricsServiceRequest)
             for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"app.requests", "gen_ai.client.operation.duration"} <= names


def test_the_shipped_config_takes_all_three_signals_from_sdk_defaults(tmp_path, monkeypatch):
    """``otel-config.yaml`` as shipped: the SDK exporters get no error; app metrics are served for
    Prometheus; log records are stored beside the spans."""
    from tests.conftest import REPO, http_get

    g, h, prom = free_port(), free_port(), free_port()
    for var, value in {"GENAI_COLLECTOR_GRPC_ENDPOINT": f"127.0.0.1:{g}", "GENAI_COLLECTOR_HTTP_ENDPOINT":
                       f"127.0.0.1:{h}", "GENAI_COLLECTOR_DB": str(tmp_path / "genai.db"),
                       "GENAI_COLLECTOR_SESSION_STATE": str(tmp_path / "sessions.db"),
                       "GENAI_COLLECTOR_PROMETHEUS_ENDPOINT": f"127.0.0.1:{prom}",
                       "GENAI_COLLECTOR_METRICS_ADDRESS": "127.0.0.1:0"}.items():
        monkeypatch.setenv(var, value)
    collector = InProcessCollector((REPO / "otel-config.yaml").read_text())
    try:
        for protocol in ("grpc", "http"):
            (spans, logs, metrics), results = sdk_exporters(protocol, g, h)
            emit_all_three(spans, logs, metrics, "an application log line")
            assert len(results) >= 3 and all(r.name == "SUCCESS" for r in results), (protocol, results)
        scraped = http_get(f"http://127.0.0.1:{prom}/metrics")[1]
        logs_stored = collector.service.telemetry.value("otelcol_exporter_storage_written_log_records",
                                                        exporter="sqlite")
    finally:
        collector.stop()
    assert "app_requests_total" in scraped
    assert logs_stored == 2
    with sqlite3.connect(tmp_path / "genai.db") as db:
        bodies = db.execute("SELECT body FROM logs ORDER BY id").fetchall()
    assert bodies == [('"an application log line"',)] * 2


# -- upstream fidelity ------------------------------------------------------------------------------


@pytest.mark.parametrize("exporter", ["otlp", "otlphttp"])
def test_logs_and_metrics_arrive_upstream_unchanged(upstream, exporter):
    """Every field of a rich logs request and of a metrics request with all five kinds survives
    decode -> pipeline -> re-encode: the upstream gets the very same messages."""
    g, h = free_port(), free_port()
    collector = InProcessCollector(upstream_yaml(g, h, upstream, exporter))
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{g}")
        sent_logs, sent_metrics = logs_request(), metrics_request()
        channel.unary_unary(LOGS_EXPORT)(sent_logs.SerializeToString(), timeout=10)
        conn = http.client.HTTPConnection("127.0.0.1", h, timeout=10)
        conn.request("POST", "/v1/metrics", body=sent_metrics.SerializeToString(),
                     headers={"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == 200
        channel.close()
    finally:
        collector.stop()
    assert received(upstream, "logs", ExportLogsServiceRequest) == [sent_logs]
    assert received(upstream, "metrics", ExportMetricsServiceRequest) == [sent_metrics]


def test_a_pii_value_in_a_log_body_never_reaches_the_upstream(upstream):
    g, h = free_port(), free_port()
    collector = InProcessCollector(upstream_yaml(g, h, upstream, log_processors="redaction",
                                                 processors_section="processors:\n  redaction:"))
    try:
        (spans, logs, metrics), results = sdk_exporters("http", g, h)
        emit_all_three(spans, logs, metrics, f"please email me at {EMAIL} about my order")
        request = make_logs_request(1, 77)
        request.resource_logs[0].scope_logs[0].log_records[0].body.kvlist_value.values.add(
            key="content").value.string_value = f"I am {EMAIL}"
        channel = grpc.insecure_channel(f"127.0.0.1:{g}")
        channel.unary_unary(LOGS_EXPORT)(request.SerializeToString(), timeout=10)
        channel.close()
    finally:
        collector.stop()
    assert all(r.name == "SUCCESS" for r in results)
    raw = b"".join(upstream.received["logs"])
    assert EMAIL.encode() not in raw
    bodies = [r.body for r in records_of(received(upstream, "logs", ExportLogsServiceRequest))]
    assert bodies[0].string_value == "please email me at <EMAIL_ADDRESS> about my order"
    assert bodies[1].kvlist_value.values[0].value.string_value == "I am <EMAIL_ADDRESS>"


# -- receiver behaviour per signal ------------------------------------------------------------------


def test_a_signal_without_a_pipeline_is_refused_counted_and_explained_once(tmp_path, caplog):
    g, h = free_port(), free_port()
    collector = InProcessCollector(collector_yaml(str(tmp_path), g, h))  # traces only
    caplog.set_level(logging.WARNING)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{g}")
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(LOGS_EXPORT)(logs_request().SerializeToString(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "service::pipelines::logs" in err.value.details()
        channel.close()
        conn = http.client.HTTPConnection("127.0.0.1", h, timeout=10)
        conn.request("POST", "/v1/metrics", body=b"", headers={"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        assert response.status == 404 and b"service::pipelines::metrics" in response.read()
        telemetry = collector.service.telemetry
        assert telemetry.value("otelcol_receiver_unrouted_requests", receiver="otlp", signal="logs") == 2
        assert telemetry.value("otelcol_receiver_unrouted_requests", receiver="otlp", signal="metrics") == 1
    finally:
        collector.stop()
    told = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert len(told) == 2, told  # once per signal, however many requests


def test_invalid_log_records_get_partial_success_over_http_json(tmp_path):
    g, h = free_port(), free_port()
    collector = InProcessCollector(collector_yaml(str(tmp_path), g, h, logs=True))
    try:
        request = make_logs_request(3, 5)
        request.resource_logs[0].scope_logs[0].log_records[1].span_id = b"\x01\x02\x03"
        conn = http.client.HTTPConnection("127.0.0.1", h, timeout=10)
        conn.request("POST", "/v1/logs", body=json.dumps(hex_ids(json_format.MessageToDict(request))),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        collector.stop()
    assert response.status == 200
    assert body["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "invalid span id '010203'" in body["partialSuccess"]["errorMessage"]
    assert set(stored_logs(str(tmp_path / "spans.sqlite"))) == {"log 5-0", "log 5-2"}


# -- durability ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["journal", "direct"])
def test_every_acknowledged_log_record_survives_kill_9(tmp_path, mode):
    g, h, cfg, db = crash_config(tmp_path, mode, logs=True)
    proc = start_collector(cfg, g, h)
    load = Load(g, h, threads=2, spans=20, make=make_logs_request, keys=log_bodies, method=LOGS_EXPORT,
                path="/v1/logs")
    deadline = time.monotonic() + 30
    while load.requests_ok < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    load.finish()
    acked = set(load.acked)
    assert load.requests_ok >= 10, "the load never got going"

    proc = start_collector(cfg, g, h)
    try:
        deadline = time.monotonic() + 60
        while not acked <= set(stored_logs(db)) and time.monotonic() < deadline:
            time.sleep(0.2)
        missing = acked - set(stored_logs(db))
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged log records lost"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
