"""Storage exporters (``sqlite``, ``postgres``) through their factories, on real databases."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from collector.component import RetryableError
from collector.model import Event, GenAI, Link
from collector.telemetry import Telemetry
from config.schema import build
from exporters.postgres import PostgresConfig
from exporters.sqlite import SqliteConfig
from storage_helpers import (backend, batch, counter, hexid, llm, make_exporter, pg_admin,  # noqa: F401
                             pg_url, query, span)


def rollup_from_spans(exporter, table: str) -> list[tuple]:
    """What the rollup table must hold, recomputed from the spans (the slow, obviously right way)."""
    key = "trace_id" if table == "traces" else "session_id"
    turn = ("CASE WHEN operation IN ('chat','text_completion','generate_content') "
            "OR (operation IS NULL AND model IS NOT NULL) THEN 1 ELSE 0 END")
    return query(exporter, f"""
        SELECT {key}, COUNT(*), SUM(CASE WHEN status_code = 2 THEN 1 ELSE 0 END), SUM({turn}),
               COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
               ROUND(CAST(COALESCE(SUM(cost_usd), 0) AS NUMERIC), 9),
               MIN(start_time_unix_nano), MAX(end_time_unix_nano)
        FROM spans WHERE {key} IS NOT NULL GROUP BY {key} ORDER BY {key}""")


def rollup_stored(exporter, table: str) -> list[tuple]:
    key = "trace_id" if table == "traces" else "session_id"
    return query(exporter, f"""
        SELECT {key}, span_count, error_count, turns, input_tokens, output_tokens,
               ROUND(CAST(cost_usd AS NUMERIC), 9), start_time_unix_nano, end_time_unix_nano
        FROM {table} ORDER BY {key}""")


def normalize(rows: list[tuple]) -> list[tuple]:
    return [tuple(float(v) if not isinstance(v, str) else v for v in r) for r in rows]


def assert_rollups_consistent(exporter, exact_bounds: bool = True) -> None:
    """Counts and sums equal a recount; first/last times too, unless a replay moved a span out of
    a rollup (the bounds then only ever widen, as the store documents)."""
    for table in ("traces", "sessions"):
        stored, recount = normalize(rollup_stored(exporter, table)), normalize(rollup_from_spans(exporter, table))
        assert [r[:7] for r in stored] == [r[:7] for r in recount], table
        for have, want in zip(stored, recount):
            if exact_bounds:
                assert have[7:] == want[7:], table
            else:
                assert have[7] <= want[7] and have[8] >= want[8], table


# -- config -------------------------------------------------------------------------------------


def test_sqlite_config_defaults_and_validation():
    cfg, errors = build(SqliteConfig, {})
    assert not errors
    assert cfg.path == "./genai-collector.db" and cfg.synchronous == "NORMAL"
    assert cfg.max_content_bytes == 1048576 and cfg.full_text_search is False
    assert (cfg.ttl, cfg.content_ttl, cfg.max_size_mb) == (0, 0, 0)
    _, errors = build(SqliteConfig, {"ttl": "7d", "content_ttl": "30d", "max_size_mb": -1,
                                     "synchronous": "SOMETIMES", "max_content_bytes": "1KB", "colour": 1})
    text = "\n".join(str(e) for e in errors)
    assert "max_size_mb" in text and "synchronous" in text and "colour" in text
    assert "max_content_bytes" in text  # 1 KB (decimal) is below the 1024-byte minimum


def test_postgres_config_requires_a_postgres_url():
    _, errors = build(PostgresConfig, {})
    assert any("url" in str(e) and "required" in str(e) for e in errors)
    _, errors = build(PostgresConfig, {"url": "mysql://x"})
    assert any("url" in str(e) for e in errors)
    cfg, errors = build(PostgresConfig, {"url": "postgres://u@h/db", "pool_size": 2, "ttl": "365d",
                                         "content_ttl": "30d"})
    assert not errors and cfg.pool_size == 2 and cfg.ttl == 365 * 86400


def test_content_ttl_longer_than_ttl_is_refused():
    _, errors = build(SqliteConfig, {"ttl": "1d", "content_ttl": "2d"})
    assert any("content_ttl" in str(e) for e in errors)


# -- writing ------------------------------------------------------------------------------------


def test_spans_land_with_every_column(backend):
    exporter = make_exporter(backend)
    g = llm(input_tokens=120, output_tokens=30, cost=0.0042)
    g.cache_read_tokens, g.reasoning_tokens, g.ttft_ms, g.output_tokens_per_second = 64, 10, 210.5, 88.0
    g.system_instructions = [{"type": "text", "content": "be brief"}]
    root = span(1, 1, name="agent", start_s=1000, duration_s=3, attributes={"http.route": "/chat"})
    child = span(1, 2, parent=1, name="chat gpt-4o", start_s=1001, duration_s=0.5, status=2,
                 genai=g, attributes={"gen_ai.prompt.0.content": "hello", "temperature": 0.2,
                                      "blob": b"\x00\xff", "tags": ["a", "b"]})
    child.status_message = "rate limited"
    child.events = [Event("gen_ai.choice", 1001_100_000_000, {"index": 0})]
    child.links = [Link(b"\x02" * 16, b"\x03" * 8, attributes={"k": "v"})]
    exporter.export(batch(root, child))
    rows = query(exporter, "SELECT trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, "
                           "end_time_unix_nano, duration_ms, status_code, status_message, service_name, "
                           "provider, operation, request_model, response_model, model, input_tokens, "
                           "output_tokens, cache_read_tokens, reasoning_tokens, cost_usd, ttft_ms, "
                           "output_tokens_per_second, session_id, user_id FROM spans ORDER BY span_id")
    assert rows[0][:11] == (hexid(1, 16), hexid(1, 8), None, "agent", 3, 1000 * 10**9, 1003 * 10**9,
                            3000.0, 0, None, "shop")
    assert rows[0][11:] == (None,) * 14
    assert rows[1] == (hexid(1, 16), hexid(2, 8), hexid(1, 8), "chat gpt-4o", 3, 1001 * 10**9,
                       1001_500_000_000, 500.0, 2, "rate limited", "shop", "openai", "chat", "gpt-4o",
                       "gpt-4o-2024", "gpt-4o-2024", 120, 30, 64, 10, 0.0042, 210.5, 88.0, "s1", "alice")
    (attrs, content, resource, events, links, messages, system) = query(
        exporter, "SELECT attributes, content_attributes, resource_attributes, events, links, "
                  "input_messages, system_instructions FROM spans WHERE span_id = :s", s=hexid(2, 8))[0]
    load = lambda v: v if not isinstance(v, str) else json.loads(v)  # JSONB arrives decoded
    assert load(attrs) == {"temperature": 0.2, "blob": "AP8=", "tags": ["a", "b"]}
    assert load(content) == {"gen_ai.prompt.0.content": "hello"}
    assert load(resource) == {"service.name": "shop"}
    assert load(events) == [{"name": "gen_ai.choice", "time_unix_nano": 1001_100_000_000,
                             "attributes": {"index": 0}}]
    assert load(links) == [{"trace_id": "02" * 16, "span_id": "03" * 8, "attributes": {"k": "v"}}]
    assert load(messages) == g.input_messages and load(system) == g.system_instructions
    exporter.shutdown()


def test_replays_never_duplicate_or_double_count(backend):
    telemetry = Telemetry()
    exporter = make_exporter(backend, telemetry)
    spans = [span(1, 1), span(1, 2, parent=1, genai=llm()), span(2, 3, genai=llm(session="s2"), status=2)]
    for _ in range(3):
        exporter.export(batch(*spans))
    exporter.export(batch(spans[1], spans[1]))  # the same span twice in one batch
    assert query(exporter, "SELECT COUNT(*) FROM spans") == [(3,)]
    assert query(exporter, "SELECT trace_id, span_count, turns, input_tokens, error_count FROM traces "
                           "ORDER BY trace_id") == [(hexid(1, 16), 2, 1, 100, 0), (hexid(2, 16), 1, 1, 100, 1)]
    assert_rollups_consistent(exporter)
    assert counter(telemetry, "storage_written_spans") == 3 * 3 + 1
    exporter.shutdown()


def test_postgres_key_stored_by_another_writer_after_the_lookup_is_a_replay(pg_url):
    """The COPY path looks keys up first; a key another writer stores between the lookup and
    the COPY must neither fail the batch nor double count (the batch is redone row by row)."""
    exporter = make_exporter({"type": "postgres", "url": pg_url})
    first = span(1, 2, parent=1, genai=llm(10, 1, 0.5))
    exporter.export(batch(first))
    dialect = exporter.store.dialect
    lookup = dialect.select_existing
    dialect.select_existing = lookup + " AND false"  # the lookup misses the stored span
    try:
        exporter.export(batch(span(1, 2, parent=1, genai=llm(30, 3, 1.5)), span(1, 3, parent=1, genai=llm())))
    finally:
        dialect.select_existing = lookup
    assert query(exporter, "SELECT span_id, input_tokens FROM spans ORDER BY span_id") == [
        (hexid(2, 8), 30), (hexid(3, 8), 100)]
    assert query(exporter, "SELECT span_count, input_tokens FROM traces") == [(2, 130)]
    assert_rollups_consistent(exporter)
    exporter.shutdown()


def test_rollups_accumulate_across_batches_and_follow_changed_replays(backend):
    exporter = make_exporter(backend)
    exporter.export(batch(span(1, 2, parent=1, start_s=1001, genai=llm(10, 1, 0.5))))
    exporter.export(batch(span(1, 3, parent=1, start_s=1005, duration_s=10, genai=llm(20, 2, 0.25))))
    exporter.export(batch(span(1, 1, name="root", start_s=1000, duration_s=2,
                               resource=type(span(1, 1).resource)({"service.name": "gateway"}))))
    assert query(exporter, "SELECT root_name, service_name, span_count, turns, input_tokens, output_tokens, "
                           "cost_usd, start_time_unix_nano, end_time_unix_nano, session_id, user_id FROM traces") == [
        ("root", "gateway", 3, 2, 30, 3, 0.75, 1000 * 10**9, 1015 * 10**9, "s1", "alice")]
    # A replay with different numbers (e.g. a late cost) replaces the old contribution...
    exporter.export(batch(span(1, 3, parent=1, start_s=1005, duration_s=10, genai=llm(200, 2, 1.25))))
    # ...and one that moves to another session leaves the first one.
    exporter.export(batch(span(1, 2, parent=1, start_s=1001, genai=llm(10, 1, 0.5, session="s9"))))
    assert query(exporter, "SELECT span_count, input_tokens, cost_usd FROM traces") == [(3, 210, 1.75)]
    assert query(exporter, "SELECT session_id, span_count, input_tokens FROM sessions ORDER BY session_id") == [
        ("s1", 1, 200), ("s9", 1, 10)]
    assert_rollups_consistent(exporter, exact_bounds=False)
    exporter.shutdown()


def test_many_traces_and_sessions_match_a_recount(backend):
    from bench.storage_data import traces

    exporter = make_exporter(backend)
    spans = list(traces(300, llm_per_trace=3, sessions=7))
    for i in range(0, len(spans), 250):  # traces straddle batch boundaries
        exporter.export(batch(*spans[i:i + 250]))
    exporter.export(batch(*spans[100:700]))  # a replayed window
    assert query(exporter, "SELECT COUNT(*) FROM spans") == [(1200,)]
    assert query(exporter, "SELECT COUNT(*), SUM(turns) FROM sessions") == [(7, 900)]
    assert_rollups_consistent(exporter)
    exporter.shutdown()


# -- bad data -----------------------------------------------------------------------------------


def test_bad_values_are_stored_cleaned_and_counted_without_losing_neighbours(backend):
    telemetry = Telemetry()
    exporter = make_exporter(backend, telemetry, max_content_bytes="64KiB")
    huge = "x" * (5 * 2**20)
    g = GenAI(operation="chat", request_model="m\x00odel", input_tokens="12", output_tokens=float("nan"),
              cost_usd=float("inf"), ttft_ms="fast", session_id="s\udcff1",
              input_messages=[{"role": "user", "parts": [{"type": "text", "content": huge}]}],
              output_messages=[{"role": "assistant", "content": "bad \ud800 surrogate", "n": float("nan")}])
    nasty = span(1, 1, name="na\x00me \udcfe", genai=g, attributes={
        "nan": float("nan"), "inf": float("-inf"), "big": 2**80, "nul": "a\x00b", "bytes": b"\x01\x02",
        "nested": {"deep": [[[{"x": b"\xff"}]]], 3: "int key"}, "set": {1, 2}, "obj": object(),
        "surrogate": "\udc80"})
    nasty.kind, nasty.status_code = 70000, -1
    bad_ids = span(2, 2)
    bad_ids.trace_id = b"\x01" * 20
    good = span(3, 3, genai=llm())
    exporter.export(batch(nasty, bad_ids, good))
    assert query(exporter, "SELECT trace_id FROM spans ORDER BY trace_id") == [(hexid(1, 16),), (hexid(3, 16),)]
    name, kind, status, model, tin, tout, cost, ttft, session, messages, answer, attrs = query(
        exporter, "SELECT name, kind, status_code, request_model, input_tokens, output_tokens, cost_usd, "
                  "ttft_ms, session_id, input_messages, output_messages, attributes FROM spans "
                  "WHERE trace_id = :t", t=hexid(1, 16))[0]
    assert name == "na\ufffdme \ufffd" and (kind, status) == (0, 0) and model == "m\ufffdodel"
    assert (tin, tout, cost, ttft, session) == (12, None, None, None, "s\ufffd1")
    load = lambda v: v if not isinstance(v, str) else json.loads(v)
    content = load(messages)[0]["parts"][0]["content"]
    assert content.startswith("xxxx") and "…[truncated " in content and len(content) <= 64 * 1024
    assert load(answer)[0]["content"] == "bad \ufffd surrogate" and load(answer)[0]["n"] is None
    attrs = load(attrs)
    assert attrs["nan"] is None and attrs["inf"] is None and attrs["big"] == str(2**80)
    assert attrs["nul"] == "a\ufffdb" and attrs["bytes"] == "AQI=" and attrs["surrogate"] == "\ufffd"
    assert attrs["nested"] == {"deep": [[[{"x": "/w=="}]]], "3": "int key"} and sorted(attrs["set"]) == [1, 2]
    assert attrs["obj"].startswith("<object object")
    assert counter(telemetry, "storage_rejected_spans") == 1
    assert counter(telemetry, "storage_truncated_values") >= 1
    assert counter(telemetry, "storage_sanitized_values") >= 3
    assert counter(telemetry, "storage_written_spans") == 2
    exporter.shutdown()


def test_a_row_the_database_refuses_is_dropped_alone(backend, monkeypatch):
    """The safety net behind sanitising: if a row still fails, its neighbours are committed."""
    from exporters.storage import rows as rows_module

    telemetry = Telemetry()
    exporter = make_exporter(backend, telemetry)
    original = rows_module.RowBuilder.row

    def broken_row(self, s, resource_json, stats):
        row = original(self, s, resource_json, stats)
        if s.span_id == (2).to_bytes(8, "big"):  # simulate a converter bug: NOT NULL name
            row = row[:3] + (None,) + row[4:]
        return row

    monkeypatch.setattr(rows_module.RowBuilder, "row", broken_row)
    exporter.export(batch(span(1, 1, genai=llm()), span(1, 2, genai=llm()), span(1, 3, genai=llm())))
    assert query(exporter, "SELECT span_id FROM spans ORDER BY span_id") == [(hexid(1, 8),), (hexid(3, 8),)]
    assert query(exporter, "SELECT span_count, turns FROM traces") == [(2, 2)]
    assert counter(telemetry, "storage_rejected_spans") == 1
    exporter.shutdown()


# -- search -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fts", [True, False], ids=["fts", "scan"])
def test_search_finds_spans_by_content(backend, fts):
    from exporters.storage.search import fts_enabled, search_spans

    exporter = make_exporter(backend, full_text_search=fts)
    exporter.export(batch(
        span(1, 1, genai=llm(prompt="What is the refund policy for damaged parcels?", answer="30 days")),
        span(2, 2, genai=llm(prompt="Tell me a joke", answer="A parcel walks into a bar")),
        span(3, 3, name="no content")))
    with exporter.store.engine.connect() as conn:
        assert fts_enabled(conn) is fts
        assert [r.trace_id for r in search_spans(conn, "refund parcels")] == [hexid(1, 16)]
        assert {r.trace_id for r in search_spans(conn, "parcel")} >= {hexid(2, 16)}
        assert search_spans(conn, 'NEAR( "* ) OR \' %') == []  # hostile syntax is just text
        assert search_spans(conn, "   ") == []
    exporter.shutdown()


def test_full_text_index_follows_replays_and_existing_rows(backend):
    from exporters.storage.search import search_spans

    exporter = make_exporter(backend)
    exporter.export(batch(span(1, 1, genai=llm(prompt="alpha before index"))))
    exporter.shutdown()
    exporter = make_exporter(backend, full_text_search=True)  # enabling indexes what is there
    exporter.export(batch(span(1, 1, genai=llm(prompt="bravo after replay"))))
    with exporter.store.engine.connect() as conn:
        assert search_spans(conn, "alpha") == []
        assert [r.span_id for r in search_spans(conn, "bravo")] == [hexid(1, 8)]
    exporter.shutdown()


# -- availability -------------------------------------------------------------------------------


def test_sqlite_locked_by_another_writer_is_retryable_then_succeeds(tmp_path):
    import sqlite3

    path = tmp_path / "locked.db"
    exporter = make_exporter({"type": "sqlite", "path": str(path)}, busy_timeout="200ms")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(RetryableError):
        exporter.export(batch(span(1, 1, genai=llm())))
    other.execute("ROLLBACK")
    other.close()
    exporter.export(batch(span(1, 1, genai=llm())))
    assert query(exporter, "SELECT span_count FROM traces") == [(1,)]
    exporter.shutdown()


def test_postgres_unreachable_at_start_and_export_is_retryable():
    telemetry = Telemetry()
    exporter = make_exporter({"type": "postgres", "url": "postgresql://postgres@127.0.0.1:1/nothing"},
                             telemetry, connect_timeout="1s")
    with pytest.raises(RetryableError, match="database unavailable"):
        exporter.export(batch(span(1, 1)))
    assert counter(telemetry, "storage_unavailable_errors") == 1
    exporter.shutdown()


def test_postgres_backends_killed_mid_load_lose_nothing(pg_url, pg_admin):
    """Connections die under the exporter: each failed batch is RetryableError, the retry lands."""
    from bench.storage_data import traces

    exporter = make_exporter({"type": "postgres", "url": pg_url})
    database = sa.make_url(pg_url).database
    spans = list(traces(200, llm_per_trace=2, sessions=5))
    for n, i in enumerate(range(0, len(spans), 60)):
        if n % 3 == 1:
            with pg_admin.connect() as conn:
                conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
        chunk = batch(*spans[i:i + 60])
        for _ in range(5):  # what the pipeline's retry loop does
            try:
                exporter.export(chunk)
                break
            except RetryableError:
                continue
    assert query(exporter, "SELECT COUNT(*) FROM spans") == [(600,)]
    assert_rollups_consistent(exporter)
    exporter.shutdown()


def test_postgres_refusing_connections_is_retryable_until_it_accepts_again(pg_url, pg_admin):
    telemetry = Telemetry()
    exporter = make_exporter({"type": "postgres", "url": pg_url}, telemetry)
    exporter.export(batch(span(1, 1, genai=llm())))
    database = sa.make_url(pg_url).database
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
    try:
        for _ in range(2):
            with pytest.raises(RetryableError):
                exporter.export(batch(span(1, 2, parent=1, genai=llm())))
    finally:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    exporter.export(batch(span(1, 2, parent=1, genai=llm())))
    assert query(exporter, "SELECT span_count, turns FROM traces") == [(2, 2)]
    assert counter(telemetry, "storage_unavailable_errors") == 2
    exporter.shutdown()


def test_turning_full_text_search_off_drops_the_index_and_search_still_finds_new_spans(backend):
    from exporters.storage.search import fts_enabled, search_spans

    exporter = make_exporter(backend, full_text_search=True)
    exporter.export(batch(span(1, 1, genai=llm(prompt="indexed words"))))
    exporter.shutdown()
    exporter = make_exporter(backend)  # full_text_search: false now
    exporter.export(batch(span(2, 2, genai=llm(prompt="later words"))))
    with exporter.store.engine.connect() as conn:
        assert not fts_enabled(conn)
        assert {r.trace_id for r in search_spans(conn, "words")} == {hexid(1, 16), hexid(2, 16)}
    exporter.shutdown()
