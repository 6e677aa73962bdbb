"""Helpers for the receiver tests: a test-only durable exporter, a collector runner, OTLP payloads.

``testsqlite`` is a durable exporter that commits (trace_id, span_id) rows to a SQLite file with
``synchronous=FULL`` and upserts like the real storage exporter (a re-delivered span bumps
``deliveries`` instead of adding a row) and can be slowed down.  It keeps log records too, keyed by
their body (the tests make every body unique), so the durability tests cover logs.  It is registered only in
processes that import this module: ``python -m tests.receiver_helpers run --config F`` starts the
collector with it.  The crash tests use the real ``sqlite`` exporter.
"""

from __future__ import annotations

import base64
import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass

from collector.component import TRACES_AND_LOGS, Exporter, Factory, RetryableError
from collector.model import Batch, SpanBatch
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from config.schema import Duration, setting
from exporters import EXPORTERS
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class TestSqliteConfig:
    path: str = setting()
    delay: Duration = setting(0.0, doc="sleep per export, to make the exporter the bottleneck")
    down_while: str = setting("", doc="while this file exists, exports fail with a retryable error (an outage)")


class TestSqliteExporter(Exporter):
    durable = True

    def __init__(self, cfg: TestSqliteConfig) -> None:
        self.cfg = cfg
        self.db = sqlite3.connect(cfg.path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS spans (trace_id TEXT, span_id TEXT, name TEXT, "
                        "deliveries INTEGER DEFAULT 1, PRIMARY KEY (trace_id, span_id))")
        self.db.execute("CREATE TABLE IF NOT EXISTS logs (body TEXT PRIMARY KEY, deliveries INTEGER DEFAULT 1)")
        self.db.commit()

    def export(self, batch: Batch) -> None:
        if self.cfg.delay:
            time.sleep(self.cfg.delay)
        if self.cfg.down_while and os.path.exists(self.cfg.down_while):
            raise RetryableError("test database is down", retry_after=0.1)
        if not isinstance(batch, SpanBatch):
            with self.db:
                self.db.executemany("INSERT INTO logs (body) VALUES (?) "
                                    "ON CONFLICT (body) DO UPDATE SET deliveries = deliveries + 1",
                                    [(str(r.body),) for r in batch])
            return
        with self.db:
            self.db.executemany(
                "INSERT INTO spans (trace_id, span_id, name) VALUES (?, ?, ?) "
                "ON CONFLICT (trace_id, span_id) DO UPDATE SET deliveries = deliveries + 1",
                [(s.trace_id.hex(), s.span_id.hex(), s.name) for s in batch])

    def shutdown(self) -> None:
        self.db.close()


FACTORY = Factory("testsqlite", TestSqliteConfig, lambda cfg, ctx: TestSqliteExporter(cfg), signals=TRACES_AND_LOGS)


def durable_exporter_config(db_path: str, real: bool = False) -> tuple[str, dict]:
    """The durable exporter of a test config: (id, config).

    ``real``: the project's ``sqlite`` storage exporter (the crash tests); otherwise ``testsqlite``,
    which can be slowed down with ``delay`` (the overload tests).
    """
    if real:
        return "sqlite", {"path": db_path, "synchronous": "FULL"}
    return "testsqlite", {"path": db_path}


def stored_spans(db_path: str) -> dict[tuple[str, str], int]:
    """(trace_id hex, span_id hex) -> rows holding that span, in either exporter's ``spans`` table."""
    if not os.path.exists(db_path):
        return {}
    db = sqlite3.connect(db_path, timeout=10)
    try:
        return {(t, s): n for t, s, n in
                db.execute("SELECT trace_id, span_id, COUNT(*) FROM spans GROUP BY trace_id, span_id")}
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        db.close()


def stored_logs(db_path: str) -> dict[str, int]:
    """Log body -> deliveries, in ``testsqlite``'s ``logs`` table."""
    if not os.path.exists(db_path):
        return {}
    db = sqlite3.connect(db_path, timeout=10)
    try:
        return dict(db.execute("SELECT body, deliveries FROM logs"))
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        db.close()


# -- payloads ---------------------------------------------------------------------------------


def make_logs_request(n: int, seed: int) -> ExportLogsServiceRequest:
    """A request of ``n`` log records with bodies unique per seed and index, in a trace."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "test"
    sl = rl.scope_logs.add()
    for i in range(n):
        rec = sl.log_records.add(time_unix_nano=1_700_000_000_000_000_000, severity_number=9, severity_text="INFO",
                                 trace_id=seed.to_bytes(12, "big") + (1).to_bytes(4, "big"),
                                 span_id=(seed * 100_000 + i + 1).to_bytes(8, "big"))
        rec.body.string_value = f"log {seed}-{i}"
    return req


def log_bodies(req: ExportLogsServiceRequest) -> set[str]:
    return {r.body.string_value for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records}


def make_request(n: int, seed: int, name: str = "op") -> ExportTraceServiceRequest:
    """A request of ``n`` valid spans with ids derived from ``seed`` (unique per seed and index)."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    req.resource_spans[0].resource.attributes.add(key="service.name").value.string_value = "test"
    for i in range(n):
        span = ss.spans.add()
        span.trace_id = seed.to_bytes(12, "big") + (1).to_bytes(4, "big")
        span.span_id = (seed * 100_000 + i + 1).to_bytes(8, "big")
        span.name = f"{name}-{i}"
        span.start_time_unix_nano = 1_700_000_000_000_000_000
        span.end_time_unix_nano = 1_700_000_000_500_000_000
        span.attributes.add(key="gen_ai.request.model").value.string_value = "gpt-4o"
    return req


def otlp_json(req: ExportTraceServiceRequest) -> dict:
    """The request as OTLP/JSON: protobuf's JSON mapping with hex ids instead of base64."""
    from google.protobuf import json_format

    data = json_format.MessageToDict(req)
    for rs in data.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return data


def span_keys(req: ExportTraceServiceRequest) -> set[tuple[str, str]]:
    return {(s.trace_id.hex(), s.span_id.hex()) for rs in req.resource_spans for ss in rs.scope_spans
            for s in ss.spans}


# -- running a collector ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def start_collector(config_path: str, *ports: int) -> subprocess.Popen:
    """``collector run`` (with the test exporter registered) as a subprocess, once its ports listen."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.receiver_helpers", "run", "--config", config_path],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in ports:
            wait_port(port)
    except TimeoutError:
        proc.kill()
        raise
    return proc


class InProcessCollector:
    """A Service from a YAML text, in this process (faster than a subprocess for most tests)."""

    def __init__(self, yaml_text: str) -> None:
        from collector.service import Service
        from config.service import parse_config

        EXPORTERS.modules["testsqlite"] = "tests.receiver_helpers"
        try:
            self.service = Service(parse_config(yaml_text))
        finally:  # registered only while this config is built: other tests see the real registry
            del EXPORTERS.modules["testsqlite"]
            EXPORTERS._loaded.pop("testsqlite", None)  # noqa: SLF001
        self.service.start()

    @property
    def receiver(self):
        return next(iter(self.service.receivers.values()))

    def stop(self) -> None:
        self.service.shutdown(timeout=10)


def collector_yaml(tmp: str, grpc_port: int, http_port: int, grpc_extra: str = "", http_extra: str = "",
                   receiver_extra: str = "", exporter_extra: str = "", processors: str = "",
                   real_storage: bool = False, logs: bool = False) -> str:
    """A config with the otlp receiver on both protocols feeding a durable exporter (``logs``:
    a logs pipeline too, into the same exporter, which must then be ``testsqlite``)."""
    exporter_id, exporter_cfg = durable_exporter_config(os.path.join(tmp, "spans.sqlite"), real_storage)
    exporter_cfg = "\n".join(f"    {k}: {v}" for k, v in exporter_cfg.items())
    processors_section = ""
    processor_ids = []
    if processors:
        processors_section = "processors:\n" + processors
        processor_ids = [line.strip().rstrip(":") for line in processors.splitlines()
                         if line.startswith("  ") and not line.startswith("    ")]
    logs_pipeline = (f"    logs:\n      receivers: [otlp]\n      processors: [{', '.join(processor_ids)}]\n"
                     f"      exporters: [{exporter_id}]") if logs else ""
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
{grpc_extra}
      http:
        endpoint: 127.0.0.1:{http_port}
{http_extra}
{receiver_extra}
{processors_section}
exporters:
  {exporter_id}:
{exporter_cfg}
{exporter_extra}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{", ".join(processor_ids)}]
      exporters: [{exporter_id}]
{logs_pipeline}
  telemetry:
    metrics:
      address: "127.0.0.1:0"
"""


if __name__ == "__main__":
    from collector.cli import main

    EXPORTERS.modules["testsqlite"] = "tests.receiver_helpers"
    raise SystemExit(main(sys.argv[1:]))
