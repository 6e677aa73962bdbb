"""Web UI benchmark: what the calls page, a trace page and the 30-day analytics page ask the HTTP
API, over real HTTP on the query benchmark's store (bench/bench_query.py builds it: a 90-day
history, 1,000,000 spans by default).  Prints JSON with the median of ``--runs`` of each request:
the server's own time (its ``Server-Timing`` header: from the request reaching the app to the
response's headers) and the round trip seen by the client.

    python bench/bench_ui.py [--spans 1000000] [--runs 7] [--db PATH] [--postgres URL]

A page's figure is what it waits for: the calls page one request; the trace page its trace, then
(asynchronously, beside the transcript) its model's 7-day medians; the analytics page two stats
requests the browser sends at once (their sum is reported: on a 2-core machine they compete).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_query import build, count_spans, store_args, stores_of  # noqa: E402

TARGET_MS = 300


def timed_get(url: str) -> tuple[float, float, bytes]:
    """(server ms from Server-Timing, round-trip ms, body) of one GET."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = resp.read()
        timing = resp.headers["Server-Timing"]
    rtt = (time.perf_counter() - t0) * 1000
    return float(timing.split("dur=")[1]), rtt, body


def measure(base: str, paths: list[str], runs: int) -> dict:
    """Medians over ``runs`` of each path, after a first request whose time is reported apart
    (``first_server_ms``: a cold page cache, and for stats the days not yet kept)."""
    first = {path: timed_get(base + path)[0] for path in paths}
    per_path = {path: {"server": [], "rtt": []} for path in paths}
    for _ in range(runs):
        for path in paths:
            server, rtt, _ = timed_get(base + path)
            per_path[path]["server"].append(server)
            per_path[path]["rtt"].append(rtt)
    out = {path: {"first_server_ms": round(first[path], 1),
                  "server_median_ms": round(statistics.median(v["server"]), 1),
                  "round_trip_median_ms": round(statistics.median(v["rtt"]), 1)} for path, v in per_path.items()}
    total = round(sum(v["server_median_ms"] for v in out.values()), 1)
    return {"requests": out, "server_total_ms": total, "under_target": total < TARGET_MS}


def pick_trace(base: str) -> tuple[str, str]:
    """A trace from the middle of the history (not the newest, which a cache might favour) and
    the model of one of its calls."""
    _, _, body = timed_get(base + "/api/v1/traces?since=30d&until=29d&limit=1")
    trace_id = json.loads(body)["items"][0]["trace_id"]
    _, _, body = timed_get(base + f"/api/v1/traces/{trace_id}")
    model = next(s["request_model"] for s in json.loads(body)["spans"] if s["request_model"])
    return trace_id, model


def bench_store(db: str, runs: int) -> dict:
    from tests.web_helpers import serve

    with serve(db) as base:
        trace_id, model = pick_trace(base)
        pages = {
            "calls page": ["/api/v1/calls?sort=time&limit=50&offset=0"],
            "calls page, model filter": [f"/api/v1/calls?model={model}&sort=time&limit=50&offset=0"],
            "trace page": [f"/api/v1/traces/{trace_id}"],
            "trace page: model medians (async)": [f"/api/v1/stats?by=model&since=7d&model={model}"],
            "analytics 30d": ["/api/v1/stats?since=30d&by=day", "/api/v1/stats?since=30d&by=model%2Cday&top=10"],
        }
        out = {name: measure(base, paths, runs) for name, paths in pages.items()}
    out["same questions, query CLI's stats() in process (no kept days)"] = cli_stats(db, max(3, runs // 2))
    return out


def cli_stats(db: str, runs: int) -> dict:
    """The analytics questions answered as ``genai-collector stats`` answers them (every value of
    the window read again), in this process, in the same run: the ratio to the UI's figures holds
    on a loaded machine, where the absolute times do not."""
    from collector.query.args import time_arg
    from collector.query.filters import Filters
    from collector.query.stats import stats
    from collector.query.store import open_store

    store = open_store(db, "")
    out = {}
    try:
        for by in (["day"], ["model", "day"]):
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                stats(store, Filters(since=time_arg("30d")), by, 10)
                times.append((time.perf_counter() - t0) * 1000)
            out[f"stats --since 30d --by {','.join(by)}"] = {"median_ms": round(statistics.median(times), 1)}
    finally:
        store.close()
    return out


def main() -> None:
    args = store_args(__doc__.splitlines()[0], runs=7)
    anchor, stores = stores_of(args)
    report: dict = {"spans": args.spans, "runs": args.runs, "target_ms": TARGET_MS, "machine_cpus": os.cpu_count(),
                    "load_average_1m_at_start": round(os.getloadavg()[0], 2), "results": {}}
    for name, (url, db) in stores.items():
        if count_spans(url) != args.spans:
            t0 = time.perf_counter()
            build(url, args.spans, anchor)
            report.setdefault("build_s", {})[name] = round(time.perf_counter() - t0, 1)
        report["results"][name] = bench_store(db, args.runs)
    report["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
