"""The labelled corpus through a real collector: OTel SDK -> OTLP gRPC/HTTP -> redaction -> exporter.

The exporter is ``debug`` at ``detailed`` verbosity (every attribute and event of every span in the
log), which is what any other exporter receives from the pipeline.
"""

from __future__ import annotations

import json
import subprocess

from tests.conftest import REPO, collector_cmd
from tests.test_redaction import RECORDS

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
      http:
        endpoint: 127.0.0.1:{http_port}
processors:
  batch:
  redaction:
    operators:
      EMAIL_ADDRESS: hash
    hash_secret: ${{env:REDACTION_SECRET}}
    hash_keys: [user.id]
exporters:
  debug:
    verbosity: detailed
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, redaction]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"""


def _send(endpoint: str, protocol: str, records: list[dict]) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=30)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=256))
    tracer = provider.get_tracer("e2e")
    for r in records:
        messages = [{"role": "user", "parts": [{"type": "text", "content": r["text"]}]}]
        with tracer.start_as_current_span(f"chat {r['id']}", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "user.id": "alice",
            "gen_ai.input.messages": json.dumps(messages), "gen_ai.prompt.0.content": r["text"],
            "llm.input_messages.0.message.content": r["text"], "input.value": r["text"],
        }) as span:
            span.add_event("gen_ai.user.message", {"content": r["text"]})
    assert provider.force_flush(60_000)
    provider.shutdown()


def test_corpus_through_the_collector_leaves_no_labelled_value(collector_factory):
    collector = collector_factory(CONFIG, env={"REDACTION_SECRET": "e2e-secret-0123456789abcdef"})
    half = len(RECORDS) // 2
    _send(collector.grpc_endpoint, "grpc", RECORDS[:half])
    _send(collector.http_url, "http", RECORDS[half:])
    assert collector.metric("otelcol_exporter_sent_spans", exporter="debug") == len(RECORDS)
    assert collector.metric("otelcol_processor_redacted_values", processor="redaction") > 0
    collector.stop()
    log = collector.log()

    leaked = [p["value"] for r in RECORDS for p in r["pii"] if p["value"] in log]
    assert not leaked
    assert "alice" not in log  # hash_keys
    for r in RECORDS:
        if not r["pii"]:
            assert json.dumps(r["text"], ensure_ascii=False)[1:-1] in log  # clean content intact
    assert log.count("<EMAIL_ADDRESS:") >= 4 * sum(p["type"] == "EMAIL_ADDRESS" for r in RECORDS for p in r["pii"])
    assert '"redaction.redacted.count"' in log


def test_validate_reports_redaction_config_errors_with_their_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.format(grpc_port=1, http_port=2, metrics_port=3)
                    .replace("EMAIL_ADDRESS: hash", "EMAIL_ADDRESS: erase"))
    result = subprocess.run(collector_cmd("validate", "--config", str(path)), cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={"REDACTION_SECRET": "x", "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "processors::redaction::operators::EMAIL_ADDRESS: must be one of replace, mask, hash, drop" in output


UPSTREAM = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
      http:
        endpoint: 127.0.0.1:{http_port}
exporters:
  debug:
    verbosity: detailed
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"""

EDGE = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
      http:
        endpoint: 127.0.0.1:{http_port}
processors:
  redaction:
exporters:
  otlp:
    endpoint: 127.0.0.1:UPSTREAM_PORT
    tls:
      insecure: true
    sending_queue:
      enabled: false
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [redaction]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"""


def test_upstream_otlp_receives_no_labelled_value(collector_factory):
    upstream = collector_factory(UPSTREAM)
    edge = collector_factory(EDGE.replace("UPSTREAM_PORT", str(upstream.grpc_port)))
    records = RECORDS[:600]
    _send(edge.grpc_endpoint, "grpc", records)
    assert upstream.metric("otelcol_exporter_sent_spans", exporter="debug") == len(records)
    edge.stop()
    upstream.stop()
    log = upstream.log()
    assert not [p["value"] for r in records for p in r["pii"] if p["value"] in log]
    assert log.count("<PHONE_NUMBER>") >= 4 * sum(p["type"] == "PHONE_NUMBER" for r in records for p in r["pii"])
