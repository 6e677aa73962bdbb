"""Benchmark the storage exporters alone: spans/s committed into SQLite and Postgres.

Each run writes ``--spans`` synthetic GenAI spans (~1.5 KB: a chat call with messages, like an
instrumented app sends; see bench/storage_data.py) in batches of ``--batch`` into a fresh
database through the exporter's ``export`` (row building, sanitising, bulk upsert, rollups, one
commit per batch), then replays one batch (the retry path).  Prints JSON with the median of
``--runs`` runs.  ``cpu_spans_per_s`` counts this process's CPU only, a steadier figure on a
shared machine than wall time.

    python bench/bench_storage.py --runs 5
    python bench/bench_storage.py --backends sqlite --spans 50000 --fts
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from bench.storage_data import traces  # noqa: E402
from collector.component import ComponentContext  # noqa: E402
from collector.model import SpanBatch  # noqa: E402
from collector.telemetry import Telemetry  # noqa: E402
from config.schema import build  # noqa: E402
from exporters import EXPORTERS  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make(kind: str, target: str, fts: bool):
    factory = EXPORTERS.get(kind)
    raw = {"path": target} if kind == "sqlite" else {"url": target}
    cfg, errors = build(factory.config_class, raw | {"full_text_search": fts})
    assert not errors, errors
    return factory.create(cfg, ComponentContext(kind, "exporter", Telemetry(), logging.getLogger("bench")))


def one_run(kind: str, spans: list, batch: int, fts: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        admin = name = None
        if kind == "sqlite":
            target = str(Path(tmp) / "bench.db")
        else:
            admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            name = f"gc_bench_{uuid.uuid4().hex[:10]}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            target = admin.url.set(database=name).render_as_string(hide_password=False)
        try:
            exporter = make(kind, target, fts)
            batches = [SpanBatch(spans[i:i + batch]) for i in range(0, len(spans), batch)]
            wall, cpu = time.perf_counter(), time.process_time()
            for b in batches:
                exporter.export(b)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            replay = time.perf_counter()
            exporter.export(batches[0])
            replay = time.perf_counter() - replay
            exporter.shutdown()
            return {"spans_per_s": len(spans) / wall, "cpu_spans_per_s": len(spans) / cpu,
                    "replay_spans_per_s": len(batches[0]) / replay}
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--fts", action="store_true", help="with full_text_search: true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spans = list(traces(args.spans // 4, llm_per_trace=3))
    from exporters.storage.rows import RowBuilder, RowStats
    size = sum(len(str(v)) for v in RowBuilder(2**20).row(spans[1], None, RowStats()) if v is not None)
    out = {"spans": len(spans), "batch": args.batch, "runs": args.runs, "fts": args.fts,
           "row_bytes_llm_span": size, "results": {}}
    for kind in args.backends.split(","):
        runs = [one_run(kind, spans, args.batch, args.fts) for _ in range(args.runs)]
        out["results"][kind] = {key: round(statistics.median(r[key] for r in runs))
                                for key in runs[0]} | {"all_spans_per_s": [round(r["spans_per_s"]) for r in runs]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
