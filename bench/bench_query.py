"""Query CLI benchmark: a 1,000,000-span store, ``stats --by model,day --since 30d`` and filtered
``traces`` pages, timed end to end through ``python -m collector`` (process start included) and
in-process (the query alone), wall and CPU time.  Prints JSON with medians.

    python bench/bench_query.py [--spans 1000000] [--runs 5] [--db PATH] [--postgres URL]

``--postgres`` needs an existing, dedicated database (its spans/traces/sessions tables are
dropped and rebuilt unless they already hold ``--spans`` spans).

The store is built once by bulk inserts through the storage schema (indexes created after the
load, as a restore would) and reused while its file exists: a 90-day history of agent traces of
5 spans (root agent, 2 chat calls, 1 tool call, 1 retrieval), ~2,000 users, 8 models, 3% errors.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from exporters.storage.schema import JSONText, metadata, sessions, spans, traces  # noqa: E402

MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "o3"),
          ("anthropic", "claude-sonnet-4"), ("anthropic", "claude-haiku-4"),
          ("gcp.gemini", "gemini-2.5-pro"), ("aws.bedrock", "llama-3-70b"),
          ("mistral_ai", "mistral-large")]
SERVICES = ["chatbot", "support-agent", "search", "summarizer", "coder"]
DAYS = 90
SPANS_PER_TRACE = 5
NS = 1_000_000_000


def _messages(rng: random.Random, i: int) -> tuple[str, str]:
    question = f"Question {i}: how do I configure retention for tenant {rng.randrange(500)}?"
    answer = ("I don't know." if rng.random() < 0.01 else
              f"Set ttl in the exporter config; tenant {rng.randrange(500)} keeps 30 days.")
    return (json.dumps([{"role": "user", "parts": [{"type": "text", "content": question}]}]),
            json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]))


def generate(n_spans: int, anchor_ns: int, seed: int = 7):
    """Yield (span rows, trace rows, session rows) chunks for ``n_spans`` spans ending at anchor."""
    rng = random.Random(seed)
    users = [f"user-{u:04d}" for u in range(2000)]
    session_of: dict[str, tuple[str, int]] = {}
    session_rows: dict[str, dict] = {}
    span_rows, trace_rows = [], []
    for t in range(n_spans // SPANS_PER_TRACE):
        trace_id = f"{rng.getrandbits(128):032x}"
        user = rng.choice(users)
        start = anchor_ns - rng.randrange(DAYS * 86400) * NS - rng.randrange(NS)
        sid, count = session_of.get(user, (None, 0))
        if sid is None or count >= 5:
            sid, count = f"sess-{t:08x}", 0
        session_of[user] = (sid, count + 1)
        service = rng.choice(SERVICES)
        root_id = f"{rng.getrandbits(64):016x}"
        cursor, children = start + 5_000_000, []
        error_count = turns = tin = tout = 0
        cost_total = 0.0
        for kind in ("chat", "execute_tool", "retrieval", "chat"):
            dur = int(rng.lognormvariate(20.5, 0.8)) if kind == "chat" else rng.randrange(10**7, 3 * 10**8)
            row = {"trace_id": trace_id, "span_id": f"{rng.getrandbits(64):016x}",
                   "parent_span_id": root_id, "kind": 3, "start_time_unix_nano": cursor,
                   "end_time_unix_nano": cursor + dur, "duration_ms": dur / 1e6,
                   "status_code": 1, "service_name": service, "operation": kind,
                   "session_id": sid, "user_id": user, "content_purged": 0}
            if kind == "chat":
                provider, model = rng.choice(MODELS)
                i_tok, o_tok = rng.randrange(50, 4000), rng.randrange(10, 1200)
                cost = round(i_tok * 2.5e-6 + o_tok * 1e-5, 8)
                inp, out = _messages(rng, t)
                err = rng.random() < 0.03
                row.update(name=f"chat {model}", provider=provider, request_model=model,
                           response_model=model, model=model, input_tokens=i_tok,
                           output_tokens=o_tok, cost_usd=cost,
                           ttft_ms=round(rng.uniform(80, 900), 3) if rng.random() < 0.6 else None,
                           output_tokens_per_second=round(o_tok / (dur / 1e9), 3),
                           input_messages=inp, output_messages=out,
                           status_code=2 if err else 1, error_type="timeout" if err else None)
                error_count += err
                turns += 1
                tin, tout, cost_total = tin + i_tok, tout + o_tok, cost_total + cost
            else:
                row["name"] = "tool search_docs" if kind == "execute_tool" else "retrieve"
            children.append(row)
            cursor += dur + 1_000_000
        end = cursor + 2_000_000
        span_rows.append({"trace_id": trace_id, "span_id": root_id, "parent_span_id": None,
                          "name": "agent.run", "kind": 2, "start_time_unix_nano": start,
                          "end_time_unix_nano": end, "duration_ms": (end - start) / 1e6,
                          "status_code": 2 if error_count else 1, "service_name": service,
                          "operation": "invoke_agent", "session_id": sid, "user_id": user,
                          "content_purged": 0})
        span_rows.extend(children)
        error_count += bool(error_count)
        trace_rows.append({"trace_id": trace_id, "root_name": "agent.run", "service_name": service,
                           "session_id": sid, "user_id": user, "start_time_unix_nano": start,
                           "end_time_unix_nano": end, "span_count": SPANS_PER_TRACE,
                           "error_count": error_count, "turns": turns, "input_tokens": tin,
                           "output_tokens": tout, "cost_usd": cost_total})
        s = session_rows.get(sid)
        if s is None:
            session_rows[sid] = {"session_id": sid, "user_id": user, "start_time_unix_nano": start,
                                 "end_time_unix_nano": end, "span_count": 0, "error_count": 0,
                                 "turns": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
            s = session_rows[sid]
        s["start_time_unix_nano"] = min(s["start_time_unix_nano"], start)
        s["end_time_unix_nano"] = max(s["end_time_unix_nano"], end)
        for k, v in (("span_count", SPANS_PER_TRACE), ("error_count", error_count), ("turns", turns),
                     ("input_tokens", tin), ("output_tokens", tout), ("cost_usd", cost_total)):
            s[k] += v
        if len(span_rows) >= 50_000:
            yield span_rows, trace_rows, []
            span_rows, trace_rows = [], []
    yield span_rows, trace_rows, list(session_rows.values())


def build(url: str, n_spans: int, anchor_ns: int) -> None:
    """Create the schema, bulk-load without secondary indexes, then create them."""
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    indexes = [ix for table in (spans, traces, sessions) for ix in table.indexes]
    with engine.begin() as conn:
        for ix in indexes:
            ix.drop(conn)
    with engine.begin() as conn:
        for span_rows, trace_rows, session_rows in generate(n_spans, anchor_ns):
            for table, rows in ((spans, span_rows), (traces, trace_rows), (sessions, session_rows)):
                if rows:
                    conn.execute(_insert(table, engine.dialect.name), _complete(table, rows))
    with engine.begin() as conn:
        for ix in indexes:
            ix.create(conn)
        conn.exec_driver_sql("ANALYZE")
    if engine.dialect.name == "postgresql":
        # What autovacuum does within a minute of a load this size: the visibility map lets
        # the analytics index answer alone (index-only scans).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM spans")
    engine.dispose()


def _insert(table: sa.Table, dialect: str) -> sa.Insert:
    """The rows hold JSON as text, as the exporter writes it: on Postgres the JSONB columns take
    it through a CAST (SQLAlchemy's JSONB type would encode the text again, as a JSON string, and
    store None as JSON null)."""
    from sqlalchemy.dialects.postgresql import JSONB

    if dialect != "postgresql":
        return table.insert()
    return table.insert().values({c.name: sa.cast(sa.bindparam(c.name, type_=sa.Text), JSONB)
                                  for c in table.columns if c.type is JSONText})


def _complete(table: sa.Table, rows: list[dict]) -> list[dict]:
    """executemany needs the same keys in every row."""
    names = [c.name for c in table.columns if c.name != "id"]
    return [{name: row.get(name) for name in names} for row in rows]


def count_spans(url: str) -> int:
    """Spans in the store, or -1 when it is missing or lacks an index of the current schema
    (a store built by an older version must be rebuilt, not measured)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            have = {ix["name"] for ix in sa.inspect(conn).get_indexes("spans")}
            if not {ix.name for ix in spans.indexes} <= have:
                return -1
            return conn.execute(sa.select(sa.func.count()).select_from(spans)).scalar_one()
    except (sa.exc.DBAPIError, sa.exc.NoSuchTableError):
        return -1
    finally:
        engine.dispose()


def _summary(wall: list[float], cpu: list[float]) -> dict:
    """Medians of wall and CPU time: on a shared machine the wall time includes waiting for a
    core, the CPU time is what the command itself costs."""
    return {"wall_median_s": round(statistics.median(wall), 3), "wall_min_s": round(min(wall), 3),
            "cpu_median_s": round(statistics.median(cpu), 3), "runs": len(wall)}


def _calls_since(url: str, since_ns: int) -> int:
    """How many GenAI calls ``--since 30d`` covers (what the stats query aggregates)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(spans).where(
                spans.c.model.is_not(None), spans.c.start_time_unix_nano >= since_ns)).scalar_one()
    finally:
        engine.dispose()


def time_cli(db: str, argv: list[str], runs: int, fmt: str = "json") -> dict:
    """The CLI as a user runs it: a fresh ``python -m collector`` process each run, printing
    ``fmt`` (``table`` is what a person sees; ``json`` what a script reads)."""
    import resource

    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "collector", *argv, "--db", db,
                               "--format", fmt], cwd=ROOT, capture_output=True, text=True)
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed: {proc.stderr}")
    return _summary(wall, cpu)


def time_inprocess(db: str, argv: list[str], runs: int) -> dict:
    """The query and its JSON output alone (no interpreter start, imports done)."""
    import contextlib
    import io

    from collector.cli import main

    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main([*argv, "--db", db, "--format", "json"])
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert rc == 0, argv
    return _summary(wall, cpu)


def store_args(description: str, runs: int) -> argparse.Namespace:
    """The command line of this benchmark and of bench_ui.py, which reads the same store."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--db", help="SQLite file (default: a file in the temp dir, reused)")
    parser.add_argument("--postgres", metavar="URL", help="also bench this Postgres database "
                        "(it is dropped and rebuilt unless it already holds --spans spans)")
    return parser.parse_args()


def stores_of(args: argparse.Namespace) -> tuple[int, dict[str, tuple[str, str]]]:
    """Today 00:00 UTC (the store's end: reusable all day) and store name -> (URL, --db value)."""
    anchor = (time.time_ns() // (86400 * NS)) * 86400 * NS
    day = time.strftime("%Y%m%d", time.gmtime(anchor / NS))
    path = args.db or os.path.join(tempfile.gettempdir(), f"gc_bench_query_{args.spans}_{day}.db")
    stores = {"sqlite": (f"sqlite:///{path}", path)}
    if args.postgres:
        stores["postgres"] = (args.postgres, args.postgres)
    return anchor, stores


def main() -> None:
    args = store_args(__doc__.splitlines()[0], runs=5)
    anchor, stores = stores_of(args)
    workloads = {
        "stats --by model,day --since 30d": ["stats", "--by", "model,day", "--since", "30d"],
        "traces --since 7d --model gpt-4o --status error --limit 20":
            ["traces", "--since", "7d", "--model", "gpt-4o", "--status", "error", "--limit", "20"],
        "traces --since 30d --sort cost --limit 20": ["traces", "--since", "30d", "--sort", "cost"],
    }
    report: dict = {"spans": args.spans, "machine_cpus": os.cpu_count(),
                    "load_average_1m_at_start": round(os.getloadavg()[0], 2), "results": {}}
    for name, (url, db) in stores.items():
        t0 = time.perf_counter()
        built = False
        if count_spans(url) != args.spans:
            build(url, args.spans, anchor)
            built = True
        report["results"][name] = {"store": db, "build_s": round(time.perf_counter() - t0, 1) if built else None,
                                   "matching_calls_30d": _calls_since(url, anchor - 30 * 86400 * NS)}
        for label, argv in workloads.items():
            report["results"][name][label] = {"cli": time_cli(db, argv, args.runs),
                                              "cli_table": time_cli(db, argv, args.runs, "table"),
                                              "in_process": time_inprocess(db, argv, args.runs)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
