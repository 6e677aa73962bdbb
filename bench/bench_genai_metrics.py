"""Micro-benchmark: the ``genai_metrics`` connector's cost per span on the default pipeline.

    python bench/bench_genai_metrics.py [--spans 20000] [--runs 5] [--batch 512]

The span mix is bench/bench_processors.py's (GenAI calls in three dialects, agent/tool and plain
spans).  Each run decodes a fresh copy, runs the default pipeline's GenAI processors
(genai_normalize, genai_cost, genai_token_rate) UNTIMED, then times the connector's ``export`` over
the batches as the traces pipeline calls it.  ``collect`` (building the OTLP metrics, done once
per ``metrics_flush_interval``, 15 s by default) is timed separately per call.  For scale, the
same run times the GenAI processor chain on the same spans ("chain_cpu_us_per_span"): the ratio
is steadier than either figure on a shared machine.  Target: under 3 µs per span.

Prints JSON with the medians (CPU time: process time, steadier than wall time under load).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_processors import _batches, _processor, make_mix  # noqa: E402
from collector.component import ComponentContext  # noqa: E402
from collector.telemetry import Telemetry  # noqa: E402
from config.schema import build  # noqa: E402
from connectors import CONNECTORS  # noqa: E402

CHAIN = ("genai_normalize", "genai_cost", "genai_token_rate")


def make_connector(raw: dict | None = None):
    factory = CONNECTORS.get("genai_metrics")
    config, errors = build(factory.config_class, raw or {})
    if errors:
        raise SystemExit(f"genai_metrics: {errors}")
    ctx = ComponentContext("genai_metrics", "connector", Telemetry(), logging.getLogger("bench.genai_metrics"))
    return factory.create(config, ctx)


def run(payload: bytes, runs: int, batch_size: int, raw: dict | None = None) -> dict:
    chain = [_processor(t, {}) for t in CHAIN]
    export_us, chain_us, collect_ms = [], [], []
    for _ in range(runs + 1):  # the first run warms caches and is dropped
        connector = make_connector(raw)
        batches = _batches(payload, batch_size)
        count = sum(len(b) for b in batches)
        gc.collect()
        began = time.process_time()
        for i, proc in enumerate(chain):
            batches = [proc.process(b) for b in batches]
        chain_us.append((time.process_time() - began) / count * 1e6)
        gc.collect()
        began = time.process_time()
        for batch in batches:
            connector.export(batch)
        export_us.append((time.process_time() - began) / count * 1e6)
        began = time.perf_counter()
        resource_metrics = connector.collect()
        collect_ms.append((time.perf_counter() - began) * 1e3)
        series = len(connector._series)
        points = sum(len(getattr(m, m.WhichOneof("data")).data_points)
                     for rm in resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
    export_us, chain_us, collect_ms = export_us[1:], chain_us[1:], collect_ms[1:]
    export, chain_cost = statistics.median(export_us), statistics.median(chain_us)
    return {"cpu_us_per_span": round(export, 3), "runs_cpu_us_per_span": [round(x, 3) for x in export_us],
            "chain_cpu_us_per_span": round(chain_cost, 2), "connector_share_of_chain": round(export / chain_cost, 3),
            "collect_ms": round(statistics.median(collect_ms), 2), "series": series, "data_points": points}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args(argv)
    payload = make_mix(args.spans)
    results = {"default": run(payload, args.runs, args.batch),
               "two extra dimensions": run(payload, args.runs, args.batch,
                                           {"dimensions": ["gen_ai.agent.name", "feature"]})}
    print(json.dumps({"spans": args.spans, "runs": args.runs, "batch": args.batch, "statistic": "median",
                      "load_average_1m": round(os.getloadavg()[0], 2), "target_us_per_span": 3.0,
                      "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
