"""Fixtures and builders shared by the storage exporter tests (real SQLite files, real Postgres)."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from collector.component import ComponentContext
from collector.model import GenAI, Resource, Scope, Span, SpanBatch
from collector.telemetry import Telemetry
from config.schema import build

PG_ADMIN_URL = os.environ.get("GC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESOURCE = Resource({"service.name": "shop"})
SCOPE = Scope("test")


def postgres_or_skip() -> sa.Engine:
    """An AUTOCOMMIT engine on the admin database; CI=true turns 'missing' into a failure."""
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        engine.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres at {PG_ADMIN_URL} is required in CI: {exc}")
        pytest.skip(f"Postgres not reachable at {PG_ADMIN_URL}")
    return engine


@pytest.fixture(scope="session")
def pg_admin():
    engine = postgres_or_skip()
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin):
    """A fresh, uniquely named database per test, dropped afterwards."""
    name = f"gc_test_storage_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = pg_admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> dict[str, Any]:
    """Exporter type + the config keys that point it at a fresh database."""
    if request.param == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "spans.db")}
    return {"type": "postgres", "url": request.getfixturevalue("pg_url")}


def make_exporter(backend: dict[str, Any], telemetry: Telemetry | None = None, **config: Any):
    """Build the exporter through its registered factory, the way the collector does."""
    from exporters import EXPORTERS

    factory = EXPORTERS.get(backend["type"])
    raw = {k: v for k, v in backend.items() if k != "type"} | config
    cfg, errors = build(factory.config_class, raw)
    assert not errors, errors
    ctx = ComponentContext(id=backend["type"], kind="exporter", telemetry=telemetry or Telemetry(),
                           logger=logging.getLogger("test.storage"))
    return factory.create(cfg, ctx)


def counter(telemetry: Telemetry, name: str) -> float:
    """Value of ``otelcol_exporter_<name>`` summed over series (from the Prometheus text)."""
    from conftest import metric_value

    return metric_value(telemetry.render(), f"otelcol_exporter_{name}")


def span(trace: int, span_no: int, *, parent: int | None = None, start_s: float = 1000.0,
         duration_s: float = 1.0, status: int = 0, genai: GenAI | None = None, name: str = "op",
         attributes: dict | None = None, resource: Resource = RESOURCE) -> Span:
    """A span with readable ids: trace 7 -> '00..07', span 3 -> '00..03'."""
    start = int(start_s * 1e9)
    return Span(resource=resource, scope=SCOPE, trace_id=trace.to_bytes(16, "big"),
                span_id=span_no.to_bytes(8, "big"),
                parent_span_id=parent.to_bytes(8, "big") if parent is not None else b"",
                name=name, kind=3, start_time_unix_nano=start,
                end_time_unix_nano=start + int(duration_s * 1e9), status_code=status,
                attributes=attributes or {}, genai=genai)


def llm(input_tokens: int = 100, output_tokens: int = 20, cost: float = 0.01, session: str | None = "s1",
        user: str | None = "alice", prompt: str = "hello", answer: str = "hi there") -> GenAI:
    return GenAI(provider="openai", operation="chat", request_model="gpt-4o", response_model="gpt-4o-2024",
                 input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost,
                 session_id=session, user_id=user,
                 input_messages=[{"role": "user", "parts": [{"type": "text", "content": prompt}]}],
                 output_messages=[{"role": "assistant", "parts": [{"type": "text", "content": answer}]}])


def batch(*spans: Span) -> SpanBatch:
    return SpanBatch(list(spans))


def query(exporter, sql: str, **params: Any) -> list[tuple]:
    with exporter.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def hexid(n: int, nbytes: int) -> str:
    return n.to_bytes(nbytes, "big").hex()


def export_received_at(exporter, when: float, *spans) -> None:
    """Export ``spans`` as if the collector received them at ``when`` (unix seconds): retention
    counts from the receipt time, not from span times."""
    exporter.store.clock = lambda: int(when * 1e9)
    exporter.export(batch(*spans))
