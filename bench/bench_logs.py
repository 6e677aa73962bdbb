"""Benchmark log records in the storage exporters, and what the content join costs the span path.

Scenarios, each into a fresh database through the exporter's ``export`` (batches of ``--batch``),
on the synthetic GenAI traces of bench/storage_data.py (an agent span and 3 chat calls each):

- ``spans_own_content``: the chat spans carry their messages (SPAN_ONLY): no join lookup;
- ``spans_event_only``: the same spans without messages (what EVENT_ONLY sends as spans): every
  batch looks up content records for its calls (none stored: the lookup's fixed cost);
- ``records_after_spans``: one ``gen_ai.client.inference.operation.details`` record per call and
  one application log per trace, written after the spans: each batch inserts the records, reads
  the spans and rebuilds their transcripts (the span-first path);
- ``spans_after_records``: the spans written after those records: each call's row is built with
  its transcript (the record-first path).

Prints JSON with the median of ``--runs`` runs (scenarios alternate within a run, so ratios
between them are measured under the same machine load).

    python bench/bench_logs.py --runs 3 --backends sqlite
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

from bench.bench_storage import PG_ADMIN, make  # noqa: E402
from bench.storage_data import traces  # noqa: E402
from collector.model import SpanBatch  # noqa: E402
from collector.model_logs import LogBatch, LogRecord  # noqa: E402
from processors.genai_conventions import OPERATION_DETAILS_EVENT  # noqa: E402


def without_content(spans: list) -> list:
    for span in spans:
        if span.genai is not None:
            span.genai.input_messages = span.genai.output_messages = span.genai.system_instructions = None
        span.attributes.pop("gen_ai.input.messages", None)
    return spans


def records_for(spans: list) -> list[LogRecord]:
    """One operation-details record per chat call, one application log per trace."""
    records = []
    for span in spans:
        common = {"resource": span.resource, "scope": span.scope, "trace_id": span.trace_id,
                  "span_id": span.span_id, "time_unix_nano": span.end_time_unix_nano}
        if span.genai is not None and span.genai.operation == "chat":
            records.append(LogRecord(**common, event_name=OPERATION_DETAILS_EVENT, severity_number=5, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "refund?"}]}],
                "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": "yes"}]}]}))
        elif span.parent_span_id == b"":
            records.append(LogRecord(**common, severity_number=9, severity_text="INFO",
                                     body="agent finished", attributes={"code.function": "run"}))
    return records


def _database(kind: str, tmp: str):
    if kind == "sqlite":
        return str(Path(tmp) / "bench.db"), lambda: None
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"gc_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return admin.url.set(database=name).render_as_string(hide_password=False), drop


def timed(exporter, batches: list) -> float:
    wall = time.perf_counter()
    for b in batches:
        exporter.export(b)
    return time.perf_counter() - wall


def one_run(kind: str, traces_count: int, batch: int) -> dict:
    def chunks(items: list, cls) -> list:
        return [cls(items[i:i + batch]) for i in range(0, len(items), batch)]

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in ("spans_own_content", "spans_event_only", "span_first", "record_first"):
            target, drop = _database(kind, tmp + "/" + scenario if kind == "sqlite" else tmp)
            if kind == "sqlite":
                Path(target).parent.mkdir()
            try:
                exporter = make(kind, target, False)
                spans = list(traces(traces_count))
                if scenario != "spans_own_content":
                    without_content(spans)
                records = records_for(spans)
                if scenario in ("spans_own_content", "spans_event_only"):
                    out[scenario + "_spans_per_s"] = len(spans) / timed(exporter, chunks(spans, SpanBatch))
                elif scenario == "span_first":
                    timed(exporter, chunks(spans, SpanBatch))
                    out["records_after_spans_per_s"] = len(records) / timed(exporter, chunks(records, LogBatch))
                else:
                    timed(exporter, chunks(records, LogBatch))
                    out["spans_after_records_spans_per_s"] = len(spans) / timed(exporter, chunks(spans, SpanBatch))
                exporter.shutdown()
            finally:
                drop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=2000, help="traces per scenario (4 spans each)")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = {"traces": args.traces, "spans": args.traces * 4, "records": args.traces * 4,
              "batch": args.batch, "runs": args.runs, "results": {}}
    for kind in args.backends.split(","):
        runs = [one_run(kind, args.traces, args.batch) for _ in range(args.runs)]
        medians = {key: round(statistics.median(r[key] for r in runs)) for key in runs[0]}
        medians["event_only_vs_own_content"] = round(statistics.median(
            r["spans_event_only_spans_per_s"] / r["spans_own_content_spans_per_s"] for r in runs), 2)
        result["results"][kind] = medians
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
