"""Render the benchmark table of docs/performance.md from the JSON lines ``bench/figures.sh`` writes.

    python -m bench.table bench-results.jsonl
"""

from __future__ import annotations

import json
import sys

COLUMNS = ("persisted_spans_per_s", "accepted_spans_per_s", "ack", "peak_rss_mb", "cpu_s_per_1k_spans", "lost",
           "refused_requests")


def _mode(doc: dict) -> str:
    if doc.get("mode") == "overload":
        return f"overload (3x {doc['capacity_spans_per_s']:,} spans/s offered, 64 in flight)"
    if doc.get("offered_rate"):
        return f"fixed rate {doc['offered_rate']:,.0f} spans/s"
    if doc["pipeline"] == "minimal" and doc["store"] == "none":
        return "decode ceiling (no processors, no storage)"
    over = " over OTLP/HTTP" if doc["transport"] == "http" else ""
    return f"{doc['pipeline']} -> {doc['store']}{over}"


def _cell(m: dict, key: str) -> str:
    if key == "ack":
        return f"{m['ack_p50_ms']:,.0f} / {m['ack_p99_ms']:,.0f}"
    value = m[key]
    if key == "cpu_s_per_1k_spans":
        return f"{value:.3f}"
    return f"{value:,.0f}"


def rows(lines: list[str]) -> list[str]:
    out = ["| mode | command | persisted spans/s | accepted spans/s | ack p50 / p99 ms | peak RSS MB "
           "| CPU s / 1k spans | lost | refused |", "|---|---|---|---|---|---|---|---|---|"]
    for line in lines:
        doc = json.loads(line)
        m = doc.get("median", doc)
        command = doc["command"].replace("python -m bench.ingest ", "")
        out.append(f"| {_mode(doc)} | `{command}` | " + " | ".join(_cell(m, k) for k in COLUMNS) + " |")
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print("\n".join(rows([line for line in fh if line.strip()])))
