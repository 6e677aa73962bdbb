"""Connectors in the config (pairing, signals, ids) and in the running service (one instance,
shutdown in data-flow order)."""

from __future__ import annotations

import logging
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.model import GenAI, SpanBatch
from collector.service import Service
from config.schema import ConfigErrors
from config.service import parse_config
from tests.conftest import free_port
from tests.span_helpers import span
from tests.test_config import validate

HEAD = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
connectors:
  genai_metrics:
exporters:
  debug:
  prometheus:
    endpoint: 127.0.0.1:{port}
"""

GOOD = HEAD + """
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [genai_metrics, debug]
    metrics:
      receivers: [genai_metrics]
      exporters: [prometheus]
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text.replace("{port}", "0"))
    return [str(e) for e in info.value.errors]


def test_a_connector_joins_a_traces_and_a_metrics_pipeline():
    config = parse_config(GOOD.replace("{port}", "0"))
    assert set(config.connectors) == {"genai_metrics"}
    assert config.connectors["genai_metrics"].factory.connects == (("traces", "metrics"),)


@pytest.mark.parametrize("pipelines, expected", [
    ("traces: {receivers: [otlp], exporters: [genai_metrics]}",
     'connectors::genai_metrics: connector "genai_metrics" is used as exporter in traces but not as receiver '
     "in any pipeline: list it in the receivers of a metrics pipeline"),
    ("traces: {receivers: [otlp], exporters: [debug]}\n    metrics: {receivers: [genai_metrics], exporters: [prometheus]}",
     'connector "genai_metrics" is used as receiver in metrics but not as exporter in any pipeline: '
     "list it in the exporters of a traces pipeline"),
    ("traces: {receivers: [genai_metrics], exporters: [genai_metrics]}",
     'service::pipelines::traces::receivers: connector "genai_metrics" cannot be an receiver of a traces '
     "pipeline (it takes metrics as an receiver)"),
    ("traces: {receivers: [otlp], exporters: [genai_metrics]}\n    metrics: {receivers: [genai_metrics], "
     "exporters: [genai_metrics]}",
     'service::pipelines::metrics::exporters: connector "genai_metrics" cannot be an exporter of a metrics '
     "pipeline (it takes traces as an exporter)"),
    ("traces: {receivers: [otlp], exporters: [genai_metrics/x]}",
     'references exporter "genai_metrics/x" which is not configured'),
    ("logs: {receivers: [otlp], exporters: [prometheus]}",
     'exporter "prometheus" does not support logs'),
])
def test_pairing_and_signal_errors(pipelines, expected):
    text = HEAD + "service:\n  pipelines:\n    " + pipelines + "\n"
    errors = errors_of(text)
    assert any(expected in e for e in errors), errors


def test_unknown_connector_type_and_ambiguous_id():
    errors = errors_of("connectors: {spanmetrics: }\nservice: {pipelines: {}}")
    assert any('unknown type: "spanmetrics" for id: "spanmetrics" (valid values: [genai_metrics])' in e
               for e in errors), errors
    errors = errors_of("connectors: {debug: }\nexporters: {debug: }\nservice: {pipelines: {}}")
    assert any('connectors::debug: unknown type' in e for e in errors)
    errors = errors_of(GOOD + "\nreceivers2: 1\n")
    assert any("valid keys: receivers, processors, exporters, extensions, service, connectors" in e for e in errors)


def test_validate_names_path_and_line(tmp_path):
    text = HEAD.replace("{port}", "0") + """
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [genai_metrics]
"""
    result = validate(tmp_path, text)
    assert result.returncode != 0
    assert "line 8: connectors::genai_metrics: connector \"genai_metrics\" is used as exporter in traces" \
        in result.stderr, result.stderr
    result = validate(tmp_path, GOOD.replace("{port}", "0").replace("  genai_metrics:\n", "  genai_metrics:\n    max_series: -1\n", 1))
    assert "line 9: connectors::genai_metrics::max_series: must be >= 1" in result.stderr, result.stderr
    assert validate(tmp_path, GOOD.replace("{port}", "0")).returncode == 0


def test_service_runs_one_instance_and_flushes_it_before_the_metrics_pipeline_drains():
    port = free_port()
    text = GOOD.replace("{port}", str(port)).replace("  genai_metrics:\n", "  genai_metrics:\n    metrics_flush_interval: 1h\n", 1)
    service = Service(parse_config(text))
    service.start()
    try:
        connector = service.connectors["genai_metrics"]
        assert service.exporters["genai_metrics"].exporter is connector is service.receivers["genai_metrics"]
        s = span()
        s.genai = GenAI(provider="openai", operation="chat", request_model="gpt-4o", input_tokens=5, cost_usd=0.25)
        service.pipelines["traces"].submit(SpanBatch([s], 100)).wait(10)
        prometheus = service.exporters["prometheus"].exporter
    finally:
        assert service.shutdown(timeout=20)
    # the flush interval is an hour: what the exporter holds came from the shutdown's last flush
    families = {f.name: f for f in prometheus.collect()}
    assert families["gen_ai_client_calls"].samples[0].value == 1
    assert families["gen_ai_client_cost_USD"].samples[0].value == 0.25
    with pytest.raises(OSError):  # and the exporter's server is closed
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_the_connector_output_goes_upstream_through_otlp_and_otlphttp():
    import time

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from tests.upstream_support import FakeUpstream

    upstream = FakeUpstream()
    text = HEAD.replace("{port}", "0").replace("  genai_metrics:\n", "  genai_metrics:\n    metrics_flush_interval: 100ms\n", 1) + f"""
  otlp:
    endpoint: "127.0.0.1:{upstream.grpc_port}"
    tls: {{insecure: true}}
  otlphttp:
    endpoint: "http://127.0.0.1:{upstream.http_port}"
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [genai_metrics]
    metrics/upstream:
      receivers: [genai_metrics]
      exporters: [otlp, otlphttp]
"""
    service = Service(parse_config(text))
    service.start()
    try:
        s = span()
        s.genai = GenAI(provider="openai", operation="chat", request_model="gpt-4o", input_tokens=5, cost_usd=0.25)
        service.pipelines["traces"].submit(SpanBatch([s], 100)).wait(10)
        deadline = time.monotonic() + 30
        sent = lambda eid: service.telemetry.value("otelcol_exporter_sent_metric_points", exporter=eid)  # noqa: E731
        while not (sent("otlp") and sent("otlphttp")):
            assert time.monotonic() < deadline, "no metrics upstream"
            time.sleep(0.1)
    finally:
        service.shutdown(timeout=20)
        upstream.close()
    assert len(upstream.received["metrics"]) >= 2
    for body in upstream.received["metrics"]:
        request = ExportMetricsServiceRequest.FromString(body)
        names = {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        assert names["gen_ai.client.calls"].sum.data_points[0].as_int == 1
        assert names["gen_ai.client.cost"].sum.data_points[0].as_double == 0.25
