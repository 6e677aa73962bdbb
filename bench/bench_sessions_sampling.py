"""Micro-benchmark of the genai_session and sampling processors (spans per second, medians).

    python bench/bench_sessions_sampling.py [--spans 100000] [--batch 8192] [--runs 5]

Workload: GenAI chat spans, 4 spans per trace (one LLM call carrying ``user.id`` plus three
children without ids), 2,000 users over 3 services, traces 20 s apart per user so inferred
sessions keep growing; a quarter of the traces carry an explicit ``session.id``.  genai_session
writes to a fresh SQLite state file per run (WAL, one transaction per batch).  sampling runs the
configuration in the docs/sampling.md example: 25 % probabilistic, errors + latency + cost + attribute keep
rules, content kept for 10 % of traces.  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.component import ComponentContext  # noqa: E402
from collector.model import Resource, Scope, Span, SpanBatch  # noqa: E402
from collector.telemetry import Telemetry  # noqa: E402
from config.schema import build  # noqa: E402
from processors.genai_session import SessionConfig, SessionProcessor  # noqa: E402
from processors.sampling import SamplingConfig, SamplingProcessor  # noqa: E402

T0 = 1_700_000_000 * 10**9
SAMPLING = {
    "probabilistic": {"sampling_percentage": 25, "hash_seed": 42},
    "keep": {"errors": True, "latency_threshold": "30s", "cost_threshold_usd": 0.5,
             "attributes": [{"key": "user.feedback", "values": ["negative"]}]},
    "content_sampling": {"percentage": 10},
}


def make_spans(n: int, seed: int = 1) -> list[Span]:
    rng = random.Random(seed)
    resources = [Resource({"service.name": f"svc-{i}"}) for i in range(3)]
    scope = Scope("bench")
    spans: list[Span] = []
    for i in range(n // 4):
        user = rng.randrange(2000)
        tid = rng.randbytes(16)
        start = T0 + i * 10_000_000  # one trace every 10 ms: each user about every 20 s
        resource = resources[user % 3]
        attrs = {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "user.id": f"user-{user}",
            "gen_ai.usage.input_tokens": rng.randrange(10, 2000), "gen_ai.usage.output_tokens": rng.randrange(10, 500),
            "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"hello there"}]}]',
            "gen_ai.output.messages": '[{"role":"assistant","parts":[{"type":"text","content":"hi"}]}]',
        }
        if i % 4 == 0:
            attrs["session.id"] = f"conv-{i}"
        spans.append(Span(resource=resource, scope=scope, trace_id=tid, span_id=rng.randbytes(8), name="chat",
                          start_time_unix_nano=start, end_time_unix_nano=start + 800_000_000, attributes=attrs,
                          status_code=2 if rng.random() < 0.01 else 0))
        for k in range(3):
            spans.append(Span(resource=resource, scope=scope, trace_id=tid, span_id=rng.randbytes(8),
                              name=f"step {k}", start_time_unix_nano=start + k, end_time_unix_nano=start + 10**8,
                              attributes={"http.method": "POST", "input.value": "{}"}))
    return spans


def context(name: str) -> ComponentContext:
    return ComponentContext(id=name, kind="processor", telemetry=Telemetry(), logger=logging.getLogger(name))


def run(processor_factory, spans: list[Span], batch_size: int) -> tuple[float, float]:
    """(spans per wall second, spans per CPU second) through one fresh processor.

    Spans are rebuilt per run because both processors mutate them.  CPU time is reported too
    because the benchmark machine is often shared: wall time then measures the neighbours.
    """
    processor = processor_factory()
    batches = [SpanBatch(spans[i:i + batch_size], 0) for i in range(0, len(spans), batch_size)]
    wall, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        processor.process(b)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    processor.shutdown()
    return len(spans) / wall, len(spans) / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-sessions-")

    def session_processor():
        path = os.path.join(tmp, f"state-{time.perf_counter_ns()}.db")
        config, errors = build(SessionConfig, {"state": {"path": path}})
        assert not errors, errors
        return SessionProcessor(config, context("genai_session"))

    def sampling_processor():
        config, errors = build(SamplingConfig, SAMPLING)
        assert not errors, errors
        return SamplingProcessor(config, context("sampling"))

    results = {}
    for name, factory in (("genai_session", session_processor), ("sampling", sampling_processor)):
        rates = [run(factory, make_spans(args.spans, seed=r), args.batch) for r in range(args.runs)]
        results[name] = {"median_spans_per_wall_s": round(statistics.median(w for w, _ in rates)),
                         "median_spans_per_cpu_s": round(statistics.median(c for _, c in rates)),
                         "wall_runs": [round(w) for w, _ in rates]}
    print(json.dumps({"spans": args.spans, "batch": args.batch, "runs": args.runs,
                      "python": sys.version.split()[0], "results": results}, indent=2))


if __name__ == "__main__":
    main()
