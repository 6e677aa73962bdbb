"""Retention (content_ttl, ttl, max_size_mb) and Alembic migrations, on real databases."""

from __future__ import annotations

import os
import time

import sqlalchemy as sa

from collector.telemetry import Telemetry
from exporters.storage.retention import Retention
from storage_helpers import (backend, batch, counter, export_received_at, hexid, llm, make_exporter,  # noqa: F401
                             pg_admin, pg_url, query, span)

DAY = 86400.0


def retention_at(exporter, now: float, **policy) -> Retention:
    """A Retention on the exporter's store with a fake clock and the given policy overrides."""
    base = exporter.retention.policy
    for key, value in policy.items():
        setattr(base, key, value)
    return Retention(exporter.store, base, clock=lambda: now)


def test_content_ttl_nulls_content_but_keeps_the_numbers(backend):
    from exporters.storage.search import search_spans

    exporter = make_exporter(backend, content_ttl="30d", full_text_search=True)
    old = span(1, 1, start_s=1000, genai=llm(prompt="ancient secret"),
               attributes={"gen_ai.prompt.0.content": "ancient secret", "http.method": "POST"})
    new = span(2, 2, start_s=1000 + 40 * DAY, genai=llm(prompt="fresh question"))
    export_received_at(exporter, 1000, old)
    export_received_at(exporter, 1000 + 40 * DAY, new)
    report = retention_at(exporter, 1000 + 45 * DAY).run_once()
    assert report.purged_spans == 1
    rows = query(exporter, "SELECT span_id, input_messages IS NULL, output_messages IS NULL, "
                           "content_attributes IS NULL, content_purged, input_tokens, cost_usd, attributes "
                           "FROM spans ORDER BY span_id")
    assert [r[:7] for r in rows] == [(hexid(1, 8), True, True, True, 1, 100, 0.01),
                                     (hexid(2, 8), False, False, True, 0, 100, 0.01)]
    assert "ancient" not in str(rows[0][7]) and "POST" in str(rows[0][7])
    with exporter.store.engine.connect() as conn:
        assert search_spans(conn, "ancient") == []
        assert len(search_spans(conn, "fresh")) == 1
    # A replay of purged content does not bring it back past the next check.
    export_received_at(exporter, 1000, old)
    assert retention_at(exporter, 1000 + 45 * DAY).run_once().purged_spans in (0, 1)
    exporter.shutdown()


def test_ttl_deletes_whole_old_traces_and_sessions(backend):
    exporter = make_exporter(backend, ttl="365d")
    export_received_at(exporter, 1000,
                       span(1, 1, start_s=1000, genai=llm(session="old")),
                       span(2, 2, start_s=1000, genai=llm(session="long")))       # trace 2 continues...
    export_received_at(exporter, 1000 + 400 * DAY,
                       span(2, 3, parent=2, start_s=1000 + 400 * DAY, genai=llm(session="long")),  # ...a year later
                       span(3, 4, start_s=1000 + 400 * DAY, genai=llm(session="new")))
    report = retention_at(exporter, 1000 + 500 * DAY).run_once()
    assert (report.deleted_traces, report.deleted_spans, report.deleted_sessions) == (1, 1, 1)
    assert query(exporter, "SELECT trace_id FROM traces ORDER BY trace_id") == [(hexid(2, 16),), (hexid(3, 16),)]
    assert query(exporter, "SELECT COUNT(*) FROM spans") == [(3,)]  # trace 2 is kept whole
    assert query(exporter, "SELECT session_id FROM sessions ORDER BY session_id") == [("long",), ("new",)]
    exporter.shutdown()


def test_max_size_drops_oldest_traces_and_shrinks_the_sqlite_file(tmp_path):
    from bench.storage_data import traces

    path = tmp_path / "capped.db"
    exporter = make_exporter({"type": "sqlite", "path": str(path)}, max_size_mb=1)
    spans = list(traces(600, llm_per_trace=3))  # ~2,400 spans of ~1.5 KB: several MB
    for i in range(0, len(spans), 400):
        exporter.export(batch(*spans[i:i + 400]))
    retention = exporter.retention
    assert retention.store_size() > 2**20
    report = retention_at(exporter, time.time()).run_once()
    assert report.deleted_traces > 0
    assert retention.store_size() <= 2**20
    assert os.path.getsize(path) <= 1.2 * 2**20  # pages went back to the OS
    newest = spans[-1].trace_id.hex()
    oldest = spans[0].trace_id.hex()
    assert query(exporter, "SELECT COUNT(*) FROM traces WHERE trace_id = :t", t=newest) == [(1,)]
    assert query(exporter, "SELECT COUNT(*) FROM traces WHERE trace_id = :t", t=oldest) == [(0,)]
    assert query(exporter, "SELECT COUNT(*) FROM spans WHERE trace_id NOT IN (SELECT trace_id FROM traces)") == [(0,)]
    exporter.shutdown()


def test_max_size_on_postgres_deletes_oldest(pg_url):
    from bench.storage_data import traces

    exporter = make_exporter({"type": "postgres", "url": pg_url}, max_size_mb=1)
    spans = list(traces(400, llm_per_trace=3))
    exporter.export(batch(*spans))
    with exporter.store.engine.connect() as conn:  # make the size estimate see the new rows now
        conn.exec_driver_sql("ANALYZE spans")
        conn.commit()
    report = retention_at(exporter, time.time()).run_once()
    assert report.deleted_traces > 0
    remaining = query(exporter, "SELECT COUNT(*) FROM traces")[0][0]
    assert 0 < remaining < 400
    assert query(exporter, "SELECT COUNT(*) FROM traces WHERE trace_id = :t", t=spans[-1].trace_id.hex()) == [(1,)]
    exporter.shutdown()


def test_retention_runs_in_the_background_and_counts(tmp_path):
    telemetry = Telemetry()
    exporter = make_exporter({"type": "sqlite", "path": str(tmp_path / "bg.db")}, telemetry,
                             ttl="1d", content_ttl="1h", retention_check_interval="50ms")
    now = time.time()
    export_received_at(exporter, now - 3 * DAY, span(1, 1, start_s=now - 3 * DAY, genai=llm()))
    export_received_at(exporter, now - 2 * 3600, span(2, 2, start_s=now - 2 * 3600, genai=llm()))
    export_received_at(exporter, now, span(3, 3, start_s=now, genai=llm()))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and counter(telemetry, "storage_retention_deleted_spans") < 1:
        time.sleep(0.05)
    assert counter(telemetry, "storage_retention_deleted_spans") == 1
    assert counter(telemetry, "storage_retention_purged_spans") >= 1
    assert query(exporter, "SELECT span_id, content_purged FROM spans ORDER BY span_id") == [
        (hexid(2, 8), 1), (hexid(3, 8), 0)]
    exporter.shutdown()
    assert exporter.retention._thread is None


# -- migrations ---------------------------------------------------------------------------------


def test_schema_at_head_matches_the_schema_module(backend):
    """The migrations and exporters.storage.schema describe the same database (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from exporters.storage.schema import metadata

    exporter = make_exporter(backend)
    with exporter.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    ops = [d for group in diff for d in (group if isinstance(group, list) else [group])]
    # Column comments are documentation in schema.py only; everything else must match.
    assert [d for d in ops if d[0] != "modify_comment" and "genai_collector_schema_version" not in str(d)] == []
    exporter.shutdown()


def test_upgrade_from_the_first_revision_keeps_data_and_backfills_rollups(backend):
    from exporters.storage.migrations import current_revision, upgrade
    from exporters.storage.rows import SPAN_COLUMNS, RowBuilder, RowStats
    from exporters.storage.store import Store, postgres_url, sqlite_url

    url = sqlite_url(backend["path"]) if backend["type"] == "sqlite" else postgres_url(backend["url"])
    store = Store(url, max_content_bytes=2**20)
    upgrade(store.engine, "0001")
    assert current_revision(store.engine) == "0001"
    # Data written by a version that only had revision 0001.
    rows = [RowBuilder(2**20).row(s, '{"service.name": "shop"}', RowStats()) for s in (
        span(1, 1, genai=llm(session="s1")), span(1, 2, parent=1, status=2, genai=llm(session="s1")),
        span(2, 3, genai=llm(session=None)))]
    first_columns = [c for c in SPAN_COLUMNS if c != "content_from_logs"]  # added by revision 0005
    columns = ", ".join(first_columns)
    values = ", ".join(f":{c}" for c in first_columns)
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO spans ({columns}) VALUES ({values})"),
                     [dict(zip(SPAN_COLUMNS, r)) for r in rows])
    store.engine.dispose()

    exporter = make_exporter(backend)  # starting the exporter upgrades to head
    assert current_revision(exporter.store.engine) not in (None, "0001")
    assert query(exporter, "SELECT COUNT(*), SUM(input_tokens) FROM spans") == [(3, 300)]
    assert query(exporter, "SELECT trace_id, root_name, service_name, span_count, error_count, turns "
                           "FROM traces ORDER BY trace_id") == [
        (hexid(1, 16), "op", "shop", 2, 1, 2), (hexid(2, 16), "op", "shop", 1, 0, 1)]
    assert query(exporter, "SELECT session_id, span_count FROM sessions") == [("s1", 2)]
    exporter.export(batch(span(1, 4, parent=1, genai=llm(session="s1"))))  # and keeps counting
    assert query(exporter, "SELECT span_count FROM traces WHERE trace_id = :t", t=hexid(1, 16)) == [(3,)]
    exporter.shutdown()


def test_migrations_are_idempotent_and_the_version_table_is_ours(tmp_path):
    backend = {"type": "sqlite", "path": str(tmp_path / "twice.db")}
    for _ in range(2):
        exporter = make_exporter(backend)
        exporter.export(batch(span(1, 1)))
        exporter.shutdown()
    tables = set(sa.inspect(exporter.store.engine).get_table_names())
    assert {"spans", "traces", "sessions", "genai_collector_schema_version"} <= tables
    assert "alembic_version" not in tables
    assert query(exporter, "SELECT COUNT(*) FROM spans") == [(1,)]


def test_collectors_starting_together_on_one_postgres_database_both_migrate(pg_url):
    import threading

    results: list[object] = []

    def start() -> None:
        try:
            results.append(make_exporter({"type": "postgres", "url": pg_url}))
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(not isinstance(r, Exception) for r in results), results
    for n, exporter in enumerate(results):
        exporter.export(batch(span(1, n + 1)))
    assert query(results[0], "SELECT span_count FROM traces") == [(3,)]
    for exporter in results:
        exporter.shutdown()
