"""Every example config, unmodified, run as a real collector: it stores (or forwards) normalised,
priced, redacted calls, and every endpoint comes from the environment.

Storing examples write to a real SQLite file / a real Postgres database; forwarding examples send
to a second collector standing in for Jaeger / Phoenix / Langfuse / an OTel Collector, whose
``debug`` exporter shows what arrived.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import REPO, free_port, start_collector
from tests.storage_helpers import pg_admin, pg_url  # noqa: F401 - fixtures

EXAMPLES = REPO / "config" / "examples"
GENAI_CHAIN = ["genai_normalize", "genai_session", "genai_cost", "genai_token_rate", "redaction"]
SECRET = "examples-e2e-0123456789abcdef"
EMAIL = "jane.doe@example.com"
# env var the example reads for its upstream -> how to reach the stand-in collector
UPSTREAM_ENV = {
    "jaeger.yaml": ("JAEGER_OTLP_ENDPOINT", "127.0.0.1:{grpc}"),
    "otelcol-upstream.yaml": ("UPSTREAM_OTLP_ENDPOINT", "127.0.0.1:{grpc}"),
    "phoenix.yaml": ("PHOENIX_TRACES_URL", "http://127.0.0.1:{http}/v1/traces"),
    "langfuse.yaml": ("LANGFUSE_OTEL_ENDPOINT", "http://127.0.0.1:{http}"),
}
STANDIN = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
exporters:
  debug: {{verbosity: detailed}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics_port}"}}}}
"""


def example_names() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("name", example_names())
def test_every_example_enriches_prices_redacts_and_reads_endpoints_from_the_environment(name):
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    for pipeline in raw["service"]["pipelines"].values():
        if "otlp" in pipeline.get("receivers", []) and pipeline is raw["service"]["pipelines"].get("traces"):
            assert [p for p in pipeline["processors"] if p in GENAI_CHAIN] == GENAI_CHAIN, name
    text = (EXAMPLES / name).read_text()
    fixed = [line.strip() for line in text.splitlines()
             if re.search(r"\b(endpoint|address|url|path|directory|traces_endpoint)\b\s*:", line.split("#")[0])
             and "${env:" not in line and not line.strip().startswith("#")
             and not re.search(r":\s*(\{|$)", line.split("#")[0].strip())]
    assert fixed == [], f"{name}: fixed endpoints or paths {fixed}"


def _send_chat(grpc_endpoint: str) -> None:
    """One GenAI chat span through the official SDK's gRPC exporter (returns once acknowledged)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "examples-e2e"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=grpc_endpoint, insecure=True,
                                                                     timeout=30)))
    messages = [{"role": "user", "parts": [{"type": "text", "content": f"Mail the invoice to {EMAIL} today."}]}]
    with provider.get_tracer("examples").start_as_current_span("chat gpt-4o", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200,
        "gen_ai.conversation.id": "conv-1", "gen_ai.input.messages": json.dumps(messages)}):
        pass
    provider.shutdown()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"GENAI_COLLECTOR_DB": str(tmp_path / "example.db"),
            "GENAI_COLLECTOR_SESSION_STATE": str(tmp_path / "sessions.db"),
            "GENAI_COLLECTOR_QUEUE_DIR": str(tmp_path / "queue"), "REDACTION_SECRET": SECRET,
            "TEAM_COLLECTOR_URL": f"http://127.0.0.1:{free_port()}", "LANGFUSE_AUTH": "cGs6c2s=", **extra}


def _check_stored(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM spans")).mappings().one()
    finally:
        engine.dispose()
    assert row["model"] == "gpt-4o" and row["input_tokens"] == 1000 and row["output_tokens"] == 200
    assert row["cost_usd"] and row["cost_usd"] > 0  # priced
    assert row["session_id"] == "conv-1"
    dumped = json.dumps({k: v for k, v in row.items()}, default=str)
    assert EMAIL not in dumped and "<EMAIL_ADDRESS" in dumped


@pytest.mark.parametrize("name", ["sidecar-sqlite.yaml", "redaction.yaml", "fanout.yaml"])
def test_sqlite_examples_store_priced_redacted_calls(name, tmp_path):
    collector = start_collector((EXAMPLES / name).read_text(), tmp_path, verbatim=True, cwd=tmp_path,
                                env=_env(tmp_path))
    try:
        _send_chat(collector.grpc_endpoint)
        _check_stored(f"sqlite:///{tmp_path / 'example.db'}")
    finally:
        collector.stop()


def test_postgres_example_stores_priced_redacted_calls(tmp_path, pg_url):  # noqa: F811 - fixture
    collector = start_collector((EXAMPLES / "postgres.yaml").read_text(), tmp_path, verbatim=True, cwd=tmp_path,
                                env=_env(tmp_path, GENAI_COLLECTOR_POSTGRES_URL=pg_url))
    try:
        _send_chat(collector.grpc_endpoint)
        _check_stored(pg_url)
    finally:
        collector.stop()


@pytest.mark.parametrize("name", sorted(UPSTREAM_ENV))
def test_forwarding_examples_send_priced_redacted_calls(name, tmp_path):
    standin = start_collector(STANDIN, tmp_path, name="standin")
    var, template = UPSTREAM_ENV[name]
    target = template.format(grpc=standin.grpc_port, http=standin.http_port)
    collector = start_collector((EXAMPLES / name).read_text(), tmp_path, verbatim=True, cwd=tmp_path,
                                env=_env(tmp_path, **{var: target}))
    try:
        _send_chat(collector.grpc_endpoint)
        import time

        deadline = time.monotonic() + 60
        while standin.metric("otelcol_exporter_sent_spans", exporter="debug") < 1:
            assert time.monotonic() < deadline, standin.log()
            time.sleep(0.2)
        log = standin.log()
        assert "gen_ai.usage.cost" in log and "<EMAIL_ADDRESS>" in log and EMAIL not in log
    finally:
        collector.stop()
        standin.stop()
