"""Memory under hostile load (issue 17, item 4): many concurrent large requests on the shipped config.

    python -m bench.hostile_memory                   # 48 x 15 MB, half gRPC, half HTTP, one round
    python -m bench.hostile_memory --rounds 5        # the soak variant
    python -m bench.hostile_memory --config my.yaml  # any config (ports moved the same way)
    python -m bench.hostile_memory --redaction       # plus a presidio ``redaction`` processor

Starts ``genai-collector run`` on ``otel-config.yaml`` (every ``${env:GENAI_COLLECTOR_...}`` it
reads is pointed at a free port or a temp file, nothing else changes), fires ``--requests``
requests of ``--size-mb`` each at once, half as raw gRPC Export calls and half as OTLP/HTTP
protobuf POSTs with a Content-Length, and prints one JSON line:

- ``idle_rss_mb``: the collector's RSS once ready (the baseline: interpreter, gRPC, SQLite,
  processors, presidio when the config loads redaction);
- ``peak_rss_mb``: the kernel's high-water mark (``VmHWM``) over the whole run, so no sample is
  missed;
- ``after_rss_mb``: RSS ``--settle`` seconds after the last answer (what is given back);
- ``answers``: status counts (OK / 200 are admitted requests; RESOURCE_EXHAUSTED / 429 refused
  ones, which the SDKs retry), ``stored_spans``: spans in the SQLite file at the end.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "otel-config.yaml"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relocations(config_text: str, tmp: Path) -> dict[str, str]:
    """Every ``${env:GENAI_COLLECTOR_...}`` a config reads: a free port for an endpoint or address,
    a file in ``tmp`` for anything else (database, state file)."""
    out = {}
    for name in sorted(set(re.findall(r"\$\{env:(GENAI_COLLECTOR_[A-Z0-9_]+)", config_text))):
        out[name] = f"127.0.0.1:{_free_port()}" if name.endswith(("_ENDPOINT", "_ADDRESS")) else str(tmp / name.lower())
    return out


def port_of(env: dict[str, str], name: str) -> int:
    return int(env[name].rpartition(":")[2])


def with_redaction(text: str) -> str:
    """The config with a default ``redaction`` processor (presidio) first in the traces pipeline,
    unless it already has one."""
    import yaml

    data = yaml.safe_load(text)
    processors = data.setdefault("processors", {}) or {}
    data["processors"] = processors
    if not any(str(pid).split("/")[0] == "redaction" for pid in processors):
        processors["redaction"] = {}
        pipeline = data["service"]["pipelines"]["traces"]
        pipeline["processors"] = ["redaction", *pipeline.get("processors", [])]
    return yaml.safe_dump(data, sort_keys=False)


def start(config: Path, tmp: Path, log_path: Path, extra_env: dict | None = None,
          redaction: bool = False) -> tuple[subprocess.Popen, dict]:
    """``python -m collector run`` on a copy of ``config`` with its ports and files relocated."""
    text = config.read_text()
    if redaction:
        text = with_redaction(text)
    copy = tmp / "config.yaml"
    copy.write_text(text)
    env = {**os.environ, **relocations(text, tmp), **(extra_env or {})}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "collector", "run", "--config", str(copy)], cwd=ROOT,
                                stdout=log_file, stderr=subprocess.STDOUT, env=env)
    return proc, env


def wait_ready(proc: subprocess.Popen, metrics_port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2) as resp:
                if b'"ready"' in resp.read():
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"collector not ready in {timeout}s")


def proc_status(pid: int, field: str, unit: int = 1024) -> float:
    """A ``/proc/<pid>/status`` figure: VmRSS and VmHWM in MiB (kB / ``unit``), Threads as is (unit 1)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / unit
    raise KeyError(field)


def big_request(size_mb: float, seed: int) -> bytes:
    """An OTLP trace request of about ``size_mb`` MB: GenAI spans with 8 KB prompts."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "hostile-memory"
    spans = rs.scope_spans.add().spans
    content = ("the quick brown fox jumps over the lazy dog " * 190)[:8000]
    n = max(1, int(size_mb * 1e6 / 8200))
    for i in range(n):
        span = spans.add()
        span.trace_id = seed.to_bytes(8, "big") + (i // 50).to_bytes(8, "big")
        span.span_id = (seed * 1_000_000 + i + 1).to_bytes(8, "big")
        span.name = "chat gpt-4o"
        span.start_time_unix_nano = time.time_ns() - 1_000_000_000
        span.end_time_unix_nano = time.time_ns()
        for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "gpt-4o"),
                           ("gen_ai.provider.name", "openai"), ("gen_ai.input.messages", content)):
            span.attributes.add(key=key).value.string_value = value
    return req.SerializeToString()


def _grpc_export(port: int, body: bytes, answers: collections.Counter, lock: threading.Lock) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        try:
            ch.unary_unary(EXPORT)(body, timeout=120)
            code = "grpc OK"
        except grpc.RpcError as exc:
            code = f"grpc {exc.code().name}"
    with lock:
        answers[code] += 1


def _http_post(port: int, body: bytes, answers: collections.Counter, lock: threading.Lock) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body,
                                 headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            code = f"http {resp.status}"
    except urllib.error.HTTPError as exc:
        code = f"http {exc.code}"
    except OSError as exc:  # a refused body may be answered before it was all sent
        code = f"http {type(exc).__name__}"
    with lock:
        answers[code] += 1


def attack(grpc_port: int, http_port: int, requests: int, size_mb: float) -> collections.Counter:
    """Fire ``requests`` large requests at once (half gRPC, half HTTP); their answers by status."""
    bodies = [big_request(size_mb, seed) for seed in range(1, 3)]  # encoding 48 x 15 MB would dominate
    answers: collections.Counter = collections.Counter()
    lock = threading.Lock()
    threads = [threading.Thread(target=_grpc_export if i % 2 == 0 else _http_post,
                                args=(grpc_port if i % 2 == 0 else http_port, bodies[i % 2], answers, lock))
               for i in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return answers


def stored_spans(db: str) -> int:
    try:
        con = sqlite3.connect(db)
        try:
            return con.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def run(config: Path, requests: int, size_mb: float, rounds: int, settle: float,
        extra_env: dict | None = None, redaction: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="hostile-memory-") as tmp_name:
        tmp = Path(tmp_name)
        proc, env = start(config, tmp, tmp / "collector.log", extra_env, redaction)
        try:
            wait_ready(proc, port_of(env, "GENAI_COLLECTOR_METRICS_ADDRESS"))
            idle = proc_status(proc.pid, "VmRSS")
            answers: collections.Counter = collections.Counter()
            for _ in range(rounds):
                answers += attack(port_of(env, "GENAI_COLLECTOR_GRPC_ENDPOINT"),
                                  port_of(env, "GENAI_COLLECTOR_HTTP_ENDPOINT"), requests, size_mb)
            time.sleep(settle)
            result = {
                "config": str(config), "redaction": redaction, "requests": requests, "size_mb": size_mb, "rounds": rounds,
                "idle_rss_mb": round(idle, 1), "peak_rss_mb": round(proc_status(proc.pid, "VmHWM"), 1),
                "after_rss_mb": round(proc_status(proc.pid, "VmRSS"), 1), "answers": dict(sorted(answers.items())),
                "stored_spans": stored_spans(env.get("GENAI_COLLECTOR_DB", "")),
            }
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=SHIPPED_CONFIG)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--size-mb", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settle", type=float, default=16.0, help="seconds to wait before after_rss_mb")
    parser.add_argument("--redaction", action="store_true", help="add a presidio redaction processor")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.config, args.requests, args.size_mb, args.rounds, args.settle,
                         redaction=args.redaction)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
