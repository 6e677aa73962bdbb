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
    ("metrics: {receivers: [otlp], exporters: [prometheus]}",
     'receiver "otlp" does not support metrics'),
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
