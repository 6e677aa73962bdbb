"""A database that cannot be written makes the collector not ready, at once, with the reason, and
ready again by itself (issue 17.9, issue 22's missing Postgres database).

Real failures only: a Postgres database that does not exist, one that stops accepting connections
while the collector runs, a SQLite file without write permission (the child drops the root
capability that ignores file modes), and a disk that cannot take the batch (the collector's
RLIMIT_FSIZE, what a full disk looks like to a writer: every write past the limit fails).
"""

from __future__ import annotations

import ctypes
import resource
import sqlite3
import time
import uuid

import grpc
import pytest

from exporters.storage.store import Store, sqlite_url
from storage_helpers import pg_admin, pg_url  # noqa: F401
from tests.conftest import free_port
from tests.hostile.data_support import (config, grpc_export, health, http_export, llm_attrs, rows, span_request,
                                        wait_for)

QUICK = 5.0  # "at once": far below the 30 s ack_timeout, with room for a loaded CI machine


def _request(trace: int, first_span: int, count: int = 3, content: str = "") -> bytes:
    return span_request(*({"trace": trace, "span": first_span + i,
                           "attrs": llm_attrs(**({"input.value": content} if content else {}))}
                          for i in range(count))).SerializeToString()


def _not_ready(port: int):
    code, body = health(port)
    return body if code == 503 and body.get("reasons") else None


def _refused_at_once(c, trace: int) -> tuple[str, str]:
    """A gRPC and an HTTP export are both refused quickly as retryable; returns their messages."""
    start = time.monotonic()
    code, (details, trailers) = grpc_export(c.grpc_endpoint, _request(trace, 1))
    assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
    assert "google.rpc.retryinfo-bin" in trailers
    status, headers, raw = http_export(c.http_url, _request(trace, 10))
    assert status == 503 and int(headers["Retry-After"]) >= 1, (status, raw)
    assert time.monotonic() - start < QUICK
    return details, raw.decode("utf-8", "replace")


def test_missing_postgres_database_is_not_ready_then_ready_once_created(collector_factory, pg_admin):
    name = f"gc_missing_{uuid.uuid4().hex[:10]}"
    url = pg_admin.url.set(database=name).render_as_string(hide_password=False)
    health_port = free_port()
    c = collector_factory(config("postgres", {"url": url, "connect_timeout": "2s"}, health_port=health_port),
                          wait_ready=False)
    try:
        body = wait_for(lambda: _not_ready(c.metrics_port), what="/healthz 503")
        assert f'database "{name}" does not exist' in body["reasons"]["exporter postgres"]
        assert health(health_port) == (503, body)  # the health_check extension says the same
        details, text = _refused_at_once(c, trace=1)
        assert f'database "{name}" does not exist' in details and "does not exist" in text
        time.sleep(3)  # several probes fail meanwhile: the outage is still logged once
        assert c.log().count(f'database "{name}" does not exist') == 1, c.log()
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        wait_for(lambda: health(c.metrics_port)[0] == 200, timeout=30, what="ready again")
        assert health(health_port)[0] == 200
        code, _ = grpc_export(c.grpc_endpoint, _request(2, 1))
        assert code == grpc.StatusCode.OK
        assert rows(url, "SELECT COUNT(*) FROM spans") == [(3,)]
        assert "ready: the database answers again" in c.log()
    finally:
        c.stop()
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_refusing_connections_later_refuses_at_once_and_keeps_the_queued_batch(
        collector_factory, pg_url, pg_admin):
    name = pg_url.rsplit("/", 1)[1]
    c = collector_factory(config("postgres", {"url": pg_url, "connect_timeout": "2s"}))
    assert grpc_export(c.grpc_endpoint, _request(1, 1))[0] == grpc.StatusCode.OK
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        # The request that meets the outage: answered UNAVAILABLE quickly, its batch stays queued.
        start = time.monotonic()
        code, (details, _) = grpc_export(c.grpc_endpoint, _request(2, 1))
        assert code == grpc.StatusCode.UNAVAILABLE and time.monotonic() - start < QUICK, details
        body = wait_for(lambda: _not_ready(c.metrics_port), what="/healthz 503")
        assert "not currently accepting connections" in body["reasons"]["exporter postgres"]
        _refused_at_once(c, trace=3)
    finally:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    wait_for(lambda: health(c.metrics_port)[0] == 200, timeout=30, what="ready again")
    assert grpc_export(c.grpc_endpoint, _request(4, 1))[0] == grpc.StatusCode.OK
    # Trace 2's spans were refused to the client but were queued: written once the database answered.
    wait_for(lambda: rows(pg_url, "SELECT COUNT(DISTINCT trace_id) FROM spans") == [(3,)], what="queued batch written")
    log = c.log()
    assert log.count("not ready:") == 1 and "Traceback" not in log


def _without_dac_override() -> None:
    """In the child: drop the capabilities that let root ignore file modes (PR_CAPBSET_DROP of
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), so a 0444 file is read-only as for any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_read_only_sqlite_file_is_not_ready_until_writable(collector_factory, tmp_path):
    path = tmp_path / "spans.db"
    store = Store(sqlite_url(path), max_content_bytes=2**20)
    store.start()
    store.close()
    path.chmod(0o444)
    c = collector_factory(config("sqlite", {"path": str(path)}), wait_ready=False, preexec_fn=_without_dac_override)
    body = wait_for(lambda: _not_ready(c.metrics_port), what="/healthz 503")
    assert "readonly database" in body["reasons"]["exporter sqlite"]
    _refused_at_once(c, trace=1)
    for file in tmp_path.glob("spans.db*"):  # SQLite made its -shm file read-only like the database
        file.chmod(0o644)
    wait_for(lambda: health(c.metrics_port)[0] == 200, timeout=30, what="ready again")
    assert grpc_export(c.grpc_endpoint, _request(2, 1))[0] == grpc.StatusCode.OK
    assert rows(sqlite_url(path), "SELECT COUNT(*) FROM spans") == [(3,)]
    assert c.log().count("readonly database") == 1


def test_disk_full_refuses_at_once_and_recovers_when_space_returns(collector_factory, tmp_path):
    path = tmp_path / "spans.db"
    c = collector_factory(config("sqlite", {"path": str(path)}))
    assert grpc_export(c.grpc_endpoint, _request(1, 1))[0] == grpc.StatusCode.OK
    # From now on no file of the collector may grow past 256 KiB: the next batch (4 x ~200 KiB of
    # content) cannot be written, while the log (a few KiB) still can.
    resource.prlimit(c.proc.pid, resource.RLIMIT_FSIZE, (256 << 10, resource.RLIM_INFINITY))
    big = "x" * (200 << 10)
    start = time.monotonic()
    code, (details, _) = grpc_export(c.grpc_endpoint, _request(2, 1, count=4, content=big))
    assert code == grpc.StatusCode.UNAVAILABLE and time.monotonic() - start < QUICK, details
    wait_for(lambda: _not_ready(c.metrics_port), what="/healthz 503")
    _refused_at_once(c, trace=3)
    time.sleep(2)  # probes run meanwhile; a no-op write fits, the batch does not: still not ready
    assert health(c.metrics_port)[0] == 503
    resource.prlimit(c.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    wait_for(lambda: health(c.metrics_port)[0] == 200, timeout=30, what="ready again")
    wait_for(lambda: rows(sqlite_url(path), "SELECT COUNT(*) FROM spans") == [(7,)], what="queued batch written")
    assert grpc_export(c.grpc_endpoint, _request(4, 1))[0] == grpc.StatusCode.OK
    log = c.log()
    assert log.count("not ready:") == 1 and "ready: the database answers again" in log and "Traceback" not in log
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_an_outage_is_logged_again_with_backoff_not_at_every_probe(monkeypatch, caplog):
    """Probes run every 50 ms here; the reason is repeated after 0.4 s, 0.8 s, 1.6 s ... only."""
    from exporters.storage import exporter as exporter_module
    from storage_helpers import make_exporter

    monkeypatch.setattr(exporter_module, "PROBE_MAX", 0.05)
    monkeypatch.setattr(exporter_module, "LOG_AGAIN_INITIAL", 0.4)
    caplog.set_level("INFO", logger="test.storage")
    exporter = make_exporter({"type": "postgres", "url": f"postgresql://postgres@127.0.0.1:{free_port()}/none"},
                             connect_timeout="1s")
    try:
        assert not exporter.health().ready and "database unavailable" in exporter.health().reason
        time.sleep(2.0)  # ~40 probes fail meanwhile
    finally:
        exporter.shutdown()
    lines = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("not ready:") for m in lines) == 1
    assert 2 <= sum(m.startswith("still not ready after") for m in lines) <= 3, lines
