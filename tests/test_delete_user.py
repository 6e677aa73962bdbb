"""``delete --user``: a person's spans, traces, sessions, log records, full-text entries and
session-grouping state go; other people's stay; rollups match the spans left; the SQLite file
holds none of the deleted bytes; ``--dry-run`` changes nothing.  Real SQLite files and a real
Postgres (``backend`` fixture) written through the registered exporters; the CLI in-process and
``DELETE /api/v1/users/{id}`` over real HTTP."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import pytest

from collector.model import GenAI, SpanBatch
from processors.genai_session import SessionState
from tests.log_helpers import log, logs_batch
from tests.storage_helpers import backend, hexid, make_exporter, pg_admin, pg_url, query, span  # noqa: F401
from tests.test_query_cli import run

ALICE, BOB = "alice-7f3a", "bob-2c9e"
SECRET = "alice-secret-prompt-q7w8"


def call(trace: int, span_no: int, user: str, session: str | None, text: str, *, parent: int | None = None,
         start_s: float = 1000.0):
    g = GenAI(provider="openai", operation="chat", request_model="gpt-4o", response_model="gpt-4o",
              input_tokens=10 * trace, output_tokens=trace, cost_usd=0.01 * trace, user_id=user, session_id=session,
              input_messages=[{"role": "user", "parts": [{"type": "text", "content": text}]}],
              output_messages=[{"role": "assistant", "parts": [{"type": "text", "content": text + " answer"}]}])
    return span(trace, span_no, parent=parent, genai=g, name="chat gpt-4o", start_s=start_s)


def dataset():
    """Alice: traces 1 (an agent root without user + her call), 2 (old, session s-alice) and 3 (in
    the session she shares with Bob); Bob: trace 4 (shared session) and 5."""
    return [
        span(1, 1, name="agent", attributes={"tool.input": SECRET + " via tool"}),
        call(1, 2, ALICE, "s-alice", SECRET, parent=1, start_s=5000),
        call(2, 1, ALICE, "s-alice", "alice old question", start_s=100),
        call(3, 1, ALICE, "s-shared", "alice in shared"),
        call(4, 1, BOB, "s-shared", "bob-prompt-kept", start_s=2000),
        call(5, 1, BOB, "s-bob", "bob second prompt"),
    ]


@pytest.fixture
def store(backend, tmp_path):  # noqa: F811
    settings = {**backend, **({"full_text_search": True} if backend["type"] == "sqlite" else {})}
    exporter = make_exporter(settings)
    exporter.export(SpanBatch(dataset()))
    exporter.export(logs_batch(log(1, 2, body=SECRET + " in a log"), log(4, 1, body="bob log kept")))
    db = backend.get("path") or backend["url"]
    for trace, comment in ((1, SECRET + " was wrong"), (4, "bob liked it")):  # scores, by the feedback command
        assert run("feedback", "--db", db, hexid(trace, 16), "--name", "thumbs", "--value", "0",
                   "--comment", comment).returncode == 0
    yield db, exporter
    exporter.shutdown()


def snapshot(exporter) -> dict:
    return {t: sorted(map(repr, query(exporter, f"SELECT * FROM {t}"))) for t in ("spans", "traces", "sessions", "logs", "scores")}


def assert_rollups_match_spans(exporter) -> None:
    for table, key in (("traces", "trace_id"), ("sessions", "session_id")):
        stored = {r[0]: tuple(r[1:]) for r in query(exporter, f"SELECT {key}, span_count, input_tokens, "
                                                              f"output_tokens, turns FROM {table}")}
        counted = {r[0]: tuple(r[1:]) for r in query(exporter, f"SELECT {key}, count(*), "
                   f"coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
                   f"sum(CASE WHEN model IS NOT NULL THEN 1 ELSE 0 END) FROM spans WHERE {key} IS NOT NULL "
                   f"GROUP BY {key}")}
        assert stored == counted, table


def test_dry_run_changes_nothing_and_counts_exactly(store):
    db, exporter = store
    before = snapshot(exporter)
    result = run("delete", "--db", db, "--user", ALICE, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["spans"], report["traces"], report["sessions_deleted"], report["sessions_updated"]) == (4, 3, 1, 1)
    assert report["related"] == {"logs": 1, "scores": 1} and report["dry_run"]
    assert snapshot(exporter) == before


def test_delete_removes_the_user_and_keeps_everyone_else(store, caplog):
    db, exporter = store
    bob_before = query(exporter, "SELECT trace_id, span_id, input_messages FROM spans WHERE user_id = :u ORDER BY trace_id", u=BOB)
    with caplog.at_level(logging.INFO, logger="genai_collector.audit"):
        result = run("delete", "--db", db, "--user", ALICE, "--yes")
    assert result.returncode == 0, result.stderr
    assert "deleted for user alice-7f3a: 4 spans, 3 traces, 1 sessions deleted (1 recomputed)" in result.stdout
    audit = [r.getMessage() for r in caplog.records if r.name == "genai_collector.audit"]
    assert len(audit) == 2 and "erasure of user 'alice-7f3a' by" in audit[-1] and "4 spans" in audit[-1]
    assert query(exporter, "SELECT count(*) FROM spans WHERE trace_id IN (:a, :b, :c)",
                 a=hexid(1, 16), b=hexid(2, 16), c=hexid(3, 16)) == [(0,)]
    assert query(exporter, "SELECT trace_id, span_id, input_messages FROM spans WHERE user_id = :u ORDER BY trace_id", u=BOB) == bob_before
    assert sorted(r[0] for r in query(exporter, "SELECT session_id FROM sessions")) == ["s-bob", "s-shared"]
    shared = query(exporter, "SELECT user_id, span_count, input_tokens FROM sessions WHERE session_id = 's-shared'")
    assert shared == [(BOB, 1, 40)]
    assert_rollups_match_spans(exporter)
    assert query(exporter, "SELECT trace_id FROM logs") == [(hexid(4, 16),)]
    assert query(exporter, "SELECT trace_id FROM scores") == [(hexid(4, 16),)]
    searched = run("traces", "--db", db, "--search", "secret", "--format", "json")
    assert json.loads(searched.stdout) == []
    assert json.loads(run("traces", "--db", db, "--search", "bob-prompt-kept", "--format", "json").stdout)
    if not db.startswith("postgres"):
        exporter.shutdown()  # the collector's own connections closed: the file as it rests
        data = b"".join(p.read_bytes() for p in Path(db).parent.glob(Path(db).name + "*"))
        assert SECRET.encode() not in data and ALICE.encode() not in data
        assert b"bob-prompt-kept" in data  # the check can see stored text at all


def test_session_and_before_narrow_what_goes(store):
    db, exporter = store
    result = run("delete", "--db", db, "--user", ALICE, "--before", "1970-01-01T00:10:00Z", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["traces"] == 1  # trace 2 started at 100 s
    assert query(exporter, "SELECT count(*) FROM spans WHERE user_id = :u", u=ALICE) == [(2,)]
    result = run("delete", "--db", db, "--user", ALICE, "--session", "s-shared", "--yes", "--json")
    assert json.loads(result.stdout)["traces"] == 1
    assert query(exporter, "SELECT session_id FROM spans WHERE user_id = :u", u=ALICE) == [("s-alice",)]
    assert_rollups_match_spans(exporter)


def test_session_grouping_state_is_erased_through_the_config(store, tmp_path):
    db, _ = store
    state_path = tmp_path / "sessions.db"
    state = SessionState(str(state_path))
    with state.transaction():
        state.add_traces([(b"\x01" * 16, "inf-a", "inferred", ALICE), (b"\x02" * 16, "inf-b", "inferred", BOB)], 1)
        state.put_intervals([("svc", ALICE, "inf-a", 1, 2), ("svc", BOB, "inf-b", 1, 2)], 1)
    state.close()
    config = tmp_path / "otel.yaml"
    config.write_text(f"processors:\n  genai_session:\n    state:\n      path: {state_path}\n")
    result = run("delete", "--db", db, "--config", str(config), "--user", ALICE, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["session_state_rows"] == 2
    state = SessionState(str(state_path))
    assert state.conn.execute("SELECT user_id FROM gc_session_traces").fetchall() == [(BOB,)]
    assert state.conn.execute("SELECT user_id FROM gc_session_intervals").fetchall() == [(BOB,)]
    state.close()


def test_refuses_without_yes_when_not_interactive(store, monkeypatch):
    db, exporter = store
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    before = snapshot(exporter)
    result = run("delete", "--db", db, "--user", ALICE)
    assert result.returncode == 2 and "--yes" in result.stderr
    assert snapshot(exporter) == before


def test_export_gives_a_person_their_data(store):
    db, _ = store
    result = run("export", "--db", db, "--user", ALICE, "--all-spans")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["user_id"] for r in rows} == {ALICE} and len(rows) == 3
    assert any(SECRET in json.dumps(r["input_messages"]) for r in rows)


def test_delete_endpoint(store):
    from tests.web_helpers import serve

    db, exporter = store
    token = "delete-test-token-0123456789"
    with serve(db, token) as base:
        def delete(path: str, auth: str | None = token):
            req = urllib.request.Request(base + path, method="DELETE",
                                         headers={"Authorization": f"Bearer {auth}"} if auth else {})
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        assert delete(f"/api/v1/users/{ALICE}", auth=None)[0] == 401
        assert delete(f"/api/v1/users/{ALICE}?colour=red")[0] == 400
        status, report = delete(f"/api/v1/users/{ALICE}?dry_run=true")
        assert status == 200 and report["spans"] == 4 and report["dry_run"]
        assert query(exporter, "SELECT count(*) FROM spans WHERE user_id = :u", u=ALICE) == [(3,)]
        status, report = delete(f"/api/v1/users/{ALICE}")
        assert status == 200 and report["spans"] == 4 and not report["dry_run"]
        assert query(exporter, "SELECT count(*) FROM spans WHERE user_id = :u", u=ALICE) == [(0,)]
        status, _ = delete(f"/api/v1/users/{BOB}?before=yesterday-ish")
        assert status == 400
        status, report = delete("/api/v1/users/org%2Fnobody")  # ids may hold a slash
        assert status == 200 and report["spans"] == 0
    assert_rollups_match_spans(exporter)
