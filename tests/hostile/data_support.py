"""Shared by the hostile-data tests: a collector config with real storage, raw OTLP clients
(a real gRPC channel and real HTTP requests, so a test can send bytes no SDK would), row reads."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import grpc
import sqlalchemy as sa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import http_get
from tests.conftest import wait_for as conftest_wait_for

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
INT64_MAX = 2**63 - 1
NOW_NS = time.time_ns()

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{{grpc_port}}
      http:
        endpoint: 127.0.0.1:{{http_port}}
{journal}
processors:
  genai_normalize:
  batch:
    timeout: 100ms
exporters:
  {exporter}
{extensions}
service:
{service_extensions}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, genai_normalize]
      exporters: [{exporter_id}]
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics_port}}
"""


def config(exporter_id: str, settings: dict[str, Any], *, journal: bool = False,
           health_port: int | None = None) -> str:
    """A collector config (for ``collector_factory``) storing into ``exporter_id`` (sqlite/postgres)."""
    body = "".join(f"\n    {k}: {json.dumps(v) if isinstance(v, str) else v}" for k, v in settings.items())
    return CONFIG.format(
        exporter=f"{exporter_id}:{body}", exporter_id=exporter_id,
        journal="    storage:\n      directory: {tmp}/journal" if journal else "",
        extensions=f"extensions:\n  health_check:\n    endpoint: 127.0.0.1:{health_port}" if health_port else "",
        service_extensions="  extensions: [health_check]" if health_port else "")


def span_request(*spans: dict[str, Any], resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    """``{"trace": int, "span": int, "name": str, "start": ns, "end": ns, "attrs": {...}}`` each."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in (resource or {"service.name": "hostile"}).items():
        set_value(rs.resource.attributes.add(key=key).value, value)
    ss = rs.scope_spans.add()
    for s in spans:
        p = ss.spans.add()
        p.trace_id = s["trace"].to_bytes(16, "big")
        p.span_id = s["span"].to_bytes(8, "big")
        if s.get("parent"):
            p.parent_span_id = s["parent"].to_bytes(8, "big")
        p.name = s.get("name", "op")
        p.start_time_unix_nano = s.get("start", NOW_NS)
        p.end_time_unix_nano = s.get("end", s.get("start", NOW_NS) + 1_000_000)
        for key, value in s.get("attrs", {}).items():
            set_value(p.attributes.add(key=key).value, value)
    return req


def set_value(out, value: Any) -> None:
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    else:
        out.string_value = value


def llm_attrs(**extra: Any) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 5, **extra}


def grpc_export(endpoint: str, body: bytes, timeout: float = 15.0) -> tuple[grpc.StatusCode, Any]:
    """Send raw bytes as a TraceService/Export call: (OK, response) or (code, (details, trailers))."""
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(EXPORT_METHOD)
        try:
            raw = call(body, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), (exc.details(), dict(exc.trailing_metadata() or ()))
    response = ExportTraceServiceResponse()
    response.ParseFromString(raw)
    return grpc.StatusCode.OK, response


def http_export(url: str, body: bytes, content_type: str = "application/x-protobuf",
                timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def parse_response(raw: bytes) -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    response.ParseFromString(raw)
    return response


def rows(url: str, sql: str, **params: Any) -> list[tuple]:
    """Rows of ``sql`` on the database the collector writes (a SQLAlchemy URL)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """:func:`tests.conftest.wait_for` with a deadline for a loaded CI machine."""
    return conftest_wait_for(condition, timeout, what)


def health(port: int) -> tuple[int, dict]:
    """(status, body) of ``/healthz``; (0, {}) while nothing listens yet."""
    try:
        code, body = http_get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except OSError:
        return 0, {}
    return code, json.loads(body)
