"""End-to-end ingest benchmark: a real collector process, a separate load generator, one JSON line.

    python -m bench.ingest --pipeline default --store sqlite --runs 3

The collector runs as its own process (``python -m collector run``) from a config generated into a
temp dir (free ports, a temp SQLite file or a fresh Postgres database).  A separate load-generator
process (``multiprocessing``) pre-encodes the span mix (``bench/spanmix.py``) before any timing,
then keeps ``--concurrency`` requests in flight over a real gRPC channel (or OTLP/HTTP protobuf
with ``--http``) and retries refused requests (RESOURCE_EXHAUSTED / UNAVAILABLE / 429 / 503) the
way the OTel SDK exporters do: after the server's RetryInfo / Retry-After, else with backoff.

What the summary means:

- ``acked``: spans in requests answered OK.  ``persisted``: spans counted in the store at the end
  (with ``--store none``, the ``debug`` exporter's sent counter from ``/metrics``).  ``lost``:
  acknowledged but not persisted; must be 0.
- ``accepted_spans_per_s``: acked spans / (last ack - first send).  ``persisted_spans_per_s``:
  persisted spans / (time the store reached its final count - first send).
- ``ack_p50_ms`` / ``ack_p99_ms``: per-request latency from send to OK, retries included.
- ``peak_rss_mb``: the collector's ``VmHWM`` (kernel-tracked peak RSS, so no sample is missed).
- ``cpu_s_per_1k_spans``: collector user+system CPU over the load / persisted spans * 1000.

``--overload`` first measures capacity with a short closed-loop run (unless ``--capacity`` is
given), then offers 3x that rate open-loop; ``--rate`` offers a fixed rate (spans/s), which is how
ack latency at half the maximum rate is measured.  ``--runs N`` repeats with a fresh collector and
store each time and adds the median of every figure.  ``--smoke`` is a few-second run that exits
non-zero unless every span was acknowledged and persisted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.loadgen import LoadPlan, run_loadgen

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "otel-config.yaml"
STORE_EXPORTERS = ("sqlite", "postgres", "debug")
PG_DSN = os.environ.get("GENAI_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/{db}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- stores ---------------------------------------------------------------------------------------


class Store:
    """Where the collector writes and how the benchmark counts what arrived."""

    exporter_id = "debug"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.metrics_url = ""

    def exporter_config(self) -> dict[str, Any]:
        return {"verbosity": "basic"}

    def count(self) -> int:
        """Spans the exporter took: the debug exporter's sent counter (nothing is stored)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("otelcol_exporter_sent_spans{")))

    def cleanup(self) -> None:
        pass


class SqliteStore(Store):
    exporter_id = "sqlite"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.path = workdir / "spans.db"

    def exporter_config(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def count(self) -> int:
        if not self.path.exists():
            return 0
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT count(*) FROM spans").fetchone()[0]
        except sqlite3.OperationalError:  # table not created yet
            return 0
        finally:
            con.close()


class PostgresStore(Store):
    exporter_id = "postgres"

    def __init__(self, workdir: Path) -> None:
        import psycopg

        super().__init__(workdir)
        self.db = f"gc_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_DSN.format(db="postgres"), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{self.db}"')
        self.dsn = PG_DSN.format(db=self.db)

    def exporter_config(self) -> dict[str, Any]:
        return {"url": self.dsn}

    def count(self) -> int:
        import psycopg

        with psycopg.connect(self.dsn) as con:
            try:
                return con.execute("SELECT count(*) FROM spans").fetchone()[0]
            except psycopg.errors.UndefinedTable:
                return 0

    def cleanup(self) -> None:
        import psycopg

        with psycopg.connect(PG_DSN.format(db="postgres"), autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


STORES = {"none": Store, "sqlite": SqliteStore, "postgres": PostgresStore}


# -- config ---------------------------------------------------------------------------------------


def shipped_processors(workdir: Path) -> tuple[list[str], dict[str, Any]]:
    """The processor chain of the shipped ``otel-config.yaml`` (what a user gets with no flags).

    State files (genai_session, if the chain has it) go to the run's temp dir.
    """
    cfg = yaml.safe_load(SHIPPED_CONFIG.read_text())
    chain = cfg["service"]["pipelines"]["traces"].get("processors", [])
    procs = {pid: dict(cfg["processors"][pid] or {}) for pid in chain}
    for pid in chain:
        if pid.split("/")[0] == "genai_session" and not (procs[pid].get("state") or {}).get("url"):
            procs[pid]["state"] = {**(procs[pid].get("state") or {}), "path": str(workdir / "sessions.db")}
    return chain, procs


def collector_config(pipeline: str, store: Store, grpc_port: int, http_port: int, metrics_port: int,
                     limit_mib: int | None, receiver_concurrency: int | None = None) -> dict[str, Any]:
    """minimal: receiver -> store.  default: the shipped processors -> store.  unredacted: default
    without its ``redaction`` processor.  redaction: default with ``redaction`` inserted before the
    exporter (after the GenAI processors) if it has none."""
    if pipeline == "minimal":
        chain, procs = [], {}
    else:
        chain, procs = shipped_processors(store.workdir)
        redactions = [p for p in chain if p.split("/")[0] == "redaction"]
        if pipeline == "unredacted":
            chain = [p for p in chain if p not in redactions]
            procs = {k: v for k, v in procs.items() if k not in redactions}
        elif pipeline == "redaction" and not redactions:
            chain, procs = chain + ["redaction"], {**procs, "redaction": {}}
    if limit_mib is not None:
        if "memory_limiter" not in chain:
            chain = ["memory_limiter"] + chain
        procs["memory_limiter"] = {"limit_mib": limit_mib}
    protocols = {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}, "http": {"endpoint": f"127.0.0.1:{http_port}"}}
    if receiver_concurrency is not None:
        for proto in protocols.values():
            proto["max_concurrent_requests"] = receiver_concurrency
    return {
        "receivers": {"otlp": {"protocols": protocols}},
        "processors": procs,
        "exporters": {store.exporter_id: store.exporter_config()},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": chain,
                                     "exporters": [store.exporter_id]}},
            "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}, "logs": {"level": "warn"}},
        },
    }


# -- the collector process ------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[float, int]:
    """(user+system CPU seconds, peak RSS bytes) of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, hwm


class Collector:
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "collector.log"
        self.metrics = config["service"]["telemetry"]["metrics"]["address"]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "collector", "run", "--config", str(self.config_path)],
                                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.metrics}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"collector not healthy after {timeout}s:\n{self.log_tail()}")

    def stat(self) -> tuple[float, int]:
        return _proc_stat(self.proc.pid)

    def stop(self, timeout: float = 60.0) -> int:
        """Graceful stop (SIGTERM: receivers first, then drain); returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- one run --------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    pipeline: str = "default"
    store: str = "sqlite"
    spans: int = 100_000
    batch: int = 512
    concurrency: int = 8
    http: bool = False
    rate: float | None = None
    limit_mib: int | None = None
    receiver_concurrency: int | None = None
    pii_share: float = 1 / 3
    seed: int = 1
    keep: bool = False
    profile: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Poller(threading.Thread):
    """Samples the store's count during the run, to time when the last span arrived."""

    def __init__(self, store: Store, interval: float) -> None:
        super().__init__(daemon=True)
        self.store, self.interval = store, interval
        self.samples: list[tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.samples.append((time.monotonic(), self.store.count()))
            except Exception:  # noqa: BLE001 - a busy store just means no sample this time
                pass
            self.stop_event.wait(self.interval)

    def reached(self, target: int) -> float | None:
        return next((t for t, n in self.samples if n >= target), None)


def _settle(store: Store, target: int, quiet: float = 3.0, limit: float = 120.0) -> int:
    """Wait until the store holds ``target`` spans, or its count stops moving for ``quiet`` s."""
    last, last_change, deadline = -1, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        n = store.count()
        if n >= target:
            return n
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > quiet:
            return n
        time.sleep(0.05)
    return store.count()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _start_profiler(out: str | None, pid: int) -> subprocess.Popen | None:
    """py-spy on the collector during the load only (``pip install py-spy``; raw = collapsed stacks)."""
    if not out:
        return None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = "speedscope" if out.endswith(".json") else "flamegraph" if out.endswith(".svg") else "raw"
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
                             "--format", fmt, "--output", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profiler(profiler: subprocess.Popen | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        profiler.wait(60)


def run_once(opts: RunOptions) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="gc-bench-"))
    store = STORES[opts.store](workdir)
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    store.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    collector = Collector(collector_config(opts.pipeline, store, grpc_port, http_port, metrics_port,
                                           opts.limit_mib, opts.receiver_concurrency), workdir)
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    plan = LoadPlan(target=f"127.0.0.1:{http_port if opts.http else grpc_port}", http=opts.http,
                    spans=opts.spans, batch=opts.batch, concurrency=opts.concurrency, rate=opts.rate,
                    pii_share=opts.pii_share, seed=opts.seed)
    loadgen = ctx.Process(target=run_loadgen, args=(plan, child_conn), name="loadgen")
    try:
        loadgen.start()
        child_conn.close()  # so a crashed load generator ends recv() with EOFError instead of a hang
        collector.start()
        mix = parent_conn.recv()  # the requests are encoded; nothing is timed before this
        baseline = store.count()  # the warm-up request
        cpu0, _ = collector.stat()
        poller = _Poller(store, 0.25 if opts.store != "none" else 0.1)
        poller.start()
        profiler = _start_profiler(opts.profile, collector.proc.pid)
        parent_conn.send("go")
        result = parent_conn.recv()
        _stop_profiler(profiler)
        loadgen.join(30)
        acked = result["acked_spans"]
        final = _settle(store, baseline + acked)
        poller.stop_event.set()
        poller.join()
        cpu1, peak_rss = collector.stat()
        persisted = final - baseline
        t_persisted = poller.reached(final) or time.monotonic()
        exit_code = collector.stop()
        if opts.store != "none":  # after a graceful stop everything acknowledged must be there
            persisted = store.count() - baseline
        elapsed_ack = max(1e-9, result["t_last_ack"] - result["t_start"])
        elapsed_persist = max(elapsed_ack, t_persisted - result["t_start"])
        summary = {
            "pipeline": opts.pipeline, "store": opts.store, "transport": "http" if opts.http else "grpc",
            "offered_rate": opts.rate, "concurrency": opts.concurrency, "spans_per_request": opts.batch,
            "bytes_per_span": mix["bytes_per_span"], "pii_spans": mix["pii_spans"],
            "sent": result["sent_spans"], "acked": acked, "persisted": persisted,
            "lost": max(0, acked - persisted),
            "accepted_spans_per_s": round(acked / elapsed_ack),
            "persisted_spans_per_s": round(persisted / elapsed_persist),
            "ack_p50_ms": _round(_percentile(result["latencies"], 0.5)),
            "ack_p99_ms": _round(_percentile(result["latencies"], 0.99)),
            "peak_rss_mb": round(peak_rss / 2**20, 1),
            "cpu_s_per_1k_spans": round((cpu1 - cpu0) / max(1, persisted) * 1000, 4),
            "refused_requests": result["refused"], "failed_requests": result["failed"],
            "errors": result["errors"][:5], "collector_exit": exit_code,
            "loadavg_1m": os.getloadavg()[0],  # other work on the machine skews every figure
        }
        if opts.extra:
            summary.update(opts.extra)
        return summary
    except Exception:
        sys.stderr.write(collector.log_tail() + "\n")
        raise
    finally:
        if loadgen.is_alive():
            loadgen.kill()
        collector.stop(10)
        store.cleanup()
        if opts.keep:
            sys.stderr.write(f"kept {workdir}\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


NUMERIC_MEDIANS = ("sent", "acked", "persisted", "lost", "accepted_spans_per_s", "persisted_spans_per_s",
                   "ack_p50_ms", "ack_p99_ms", "peak_rss_mb", "cpu_s_per_1k_spans", "refused_requests",
                   "failed_requests")


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key in NUMERIC_MEDIANS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["lost"] = max(r["lost"] for r in runs)  # loss is never averaged away
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return out


# -- CLI ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    pipelines = ("minimal", "default", "unredacted", "redaction")
    p.add_argument("--pipeline", choices=pipelines, default="default")
    p.add_argument("--compare", choices=pipelines, help="also run this pipeline, alternating run by run "
                   "with --pipeline (same machine state), and report both and their ratios")
    p.add_argument("--store", choices=tuple(STORES), default="sqlite",
                   help="none = the debug exporter (persisted = its sent counter)")
    p.add_argument("--spans", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=512, help="spans per request (the SDK's default batch)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--http", action="store_true", help="OTLP/HTTP protobuf instead of gRPC")
    p.add_argument("--rate", type=float, help="offered load in spans/s (open loop); default: as fast as acked")
    p.add_argument("--overload", action="store_true", help="offer 3x the measured capacity")
    p.add_argument("--capacity", type=float, help="spans/s to base --overload on (skips the calibration run)")
    p.add_argument("--limit-mib", type=int, help="memory_limiter.limit_mib (default: the pipeline's)")
    p.add_argument("--receiver-concurrency", type=int,
                   help="otlp receiver max_concurrent_requests (gRPC workers / HTTP bodies in flight)")
    p.add_argument("--pii-share", type=float, default=1 / 3)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="a few seconds; exit 1 unless zero loss")
    p.add_argument("--profile", metavar="OUT", help="py-spy the collector during the load into OUT "
                   "(.svg flamegraph, .json speedscope, else collapsed stacks)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, log, database)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.smoke:
        a.spans, a.runs = min(a.spans, 5_000), 1
    opts = RunOptions(pipeline=a.pipeline, store=a.store, spans=a.spans, batch=a.batch,
                      concurrency=a.concurrency, http=a.http, rate=a.rate, limit_mib=a.limit_mib,
                      receiver_concurrency=a.receiver_concurrency,
                      pii_share=a.pii_share, keep=a.keep, profile=a.profile)
    if a.overload:
        capacity = a.capacity
        if capacity is None:
            calib = run_once(RunOptions(**{**asdict(opts), "spans": min(a.spans, 30_000), "rate": None}))
            capacity = calib["persisted_spans_per_s"]
        opts.rate = 3 * capacity
        opts.concurrency = max(opts.concurrency, 64)
        opts.extra = {"mode": "overload", "capacity_spans_per_s": capacity}
    runs, other = [], []
    for i in range(a.runs):
        opts.seed = i + 1
        runs.append(run_once(opts))
        if a.compare:
            other.append(run_once(RunOptions(**{**asdict(opts), "pipeline": a.compare})))
    summary = _summary(runs)
    if a.compare:
        summary = {"pipelines": {a.pipeline: summary, a.compare: _summary(other)},
                   "ratio": _ratios(runs, other)}
    summary["command"] = "python -m bench.ingest " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(summary))
    ok = all(r["lost"] == 0 and r["acked"] == r["sent"] and r["persisted"] >= r["acked"] for r in runs + other)
    return 0 if ok or not a.smoke else 1


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(runs) == 1:
        return runs[0]
    return {**{k: v for k, v in runs[0].items() if k not in NUMERIC_MEDIANS}, "median": median_of(runs), "runs": runs}


def _ratios(runs: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, float | None]:
    """--pipeline / --compare, medians of the pairs run back to back (the machine's speed drifts)."""
    out = {}
    for key in ("persisted_spans_per_s", "cpu_s_per_1k_spans", "peak_rss_mb"):
        pairs = [a[key] / b[key] for a, b in zip(runs, other) if a.get(key) and b.get(key)]
        out[key] = round(statistics.median(pairs), 3) if pairs else None
    return out


if __name__ == "__main__":
    sys.exit(main())
