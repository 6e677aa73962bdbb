#!/usr/bin/env bash
# Every figure of the benchmark table in docs/performance.md, median of 3 runs each, one JSON line per command.
#   bench/figures.sh [results.jsonl]      (about 15 minutes on 2 cores; needs Postgres for that row)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results.jsonl}
py=${PYTHON:-python}
run() { echo "+ python -m bench.ingest $*" >&2; $py -m bench.ingest "$@" --runs 3 | tee -a "$out"; }
run --pipeline minimal --store none --spans 100000
run --pipeline minimal --store sqlite --spans 50000
default=$(run --pipeline default --store sqlite --spans 50000)
run --pipeline default --store postgres --spans 50000
run --pipeline redaction --store sqlite --spans 20000
run --pipeline default --store sqlite --spans 50000 --http
half=$(echo "$default" | $py -c "import json,sys; print(round(json.load(sys.stdin)['median']['persisted_spans_per_s'] / 2))")
run --pipeline default --store sqlite --spans 30000 --rate "$half"
run --pipeline default --store sqlite --spans 50000 --overload
