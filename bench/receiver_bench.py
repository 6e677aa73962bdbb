"""Receiver benchmarks: disk queue group commit, and OTLP/gRPC intake with and without the journal.

    /tmp/venv/bin/python bench/receiver_bench.py [--runs 3]

Prints one JSON object with the median of ``--runs`` runs for each figure:
* ``decode_<format>_spans_per_s``: one thread decoding + validating requests of 100 spans
  (protobuf, OTLP/JSON, and OTLP/JSON through protobuf's generic ``json_format`` for reference);
  ``decode_<format>_log_records_per_s``: the same for 100 GenAI message log events (a body map);
* ``diskqueue_appends_per_s``: 8 threads appending 2 KiB records, each append fsync'd (group commit),
  and ``diskqueue_appends_per_fsync``, how many appends one fsync covered on average;
  ``diskqueue_single_thread_appends_per_s``: the same with one thread (one fsync per append);
* ``grpc_<mode>_<n>_clients_spans_per_s`` and ``..._p50_ms``: a client process with n threads sending
  requests of 100 GenAI-like spans (~0.5 KB each) to the collector, which acks after the exporter
  returned (``direct``) or after the intake journal's fsync (``journal``).
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def bench_diskqueue(directory: str, threads: int = 8, per_thread: int = 500) -> tuple[float, float]:
    from collector import diskqueue

    calls = [0]
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls[0] += 1
        real_fsync(fd)

    diskqueue.os.fsync = counting_fsync
    try:
        q = diskqueue.DiskQueue(directory, max_bytes=1 << 30)
        payload = os.urandom(2048)

        def writer():
            for _ in range(per_thread):
                q.append(payload)

        workers = [threading.Thread(target=writer) for _ in range(threads)]
        calls[0] = 0
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
        q.close()
    finally:
        diskqueue.os.fsync = real_fsync
    n = threads * per_thread
    return n / elapsed, n / max(1, calls[0])


def _request_bytes(seed: int, spans: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "bench"
    ss = rs.scope_spans.add()
    for i in range(spans):
        s = ss.spans.add()
        s.trace_id = seed.to_bytes(8, "big") + (i // 10 + 1).to_bytes(8, "big")
        s.span_id = (seed * 1000 + i + 1).to_bytes(8, "big")
        s.name = "chat gpt-4o"
        s.kind = 3
        s.start_time_unix_nano = 1_700_000_000_000_000_000
        s.end_time_unix_nano = 1_700_000_001_000_000_000
        for key, value in (("gen_ai.provider.name", "openai"), ("gen_ai.request.model", "gpt-4o"),
                           ("gen_ai.operation.name", "chat"), ("gen_ai.input.messages", "hello " * 40)):
            s.attributes.add(key=key).value.string_value = value
        for key, value in (("gen_ai.usage.input_tokens", 1000), ("gen_ai.usage.output_tokens", 200)):
            s.attributes.add(key=key).value.int_value = value
    return req.SerializeToString()


def _logs_request_bytes(records: int) -> bytes:
    """A request of ``records`` deprecated-convention GenAI message events (content in the body)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "bench"
    sl = rl.scope_logs.add()
    for i in range(records):
        rec = sl.log_records.add(time_unix_nano=1_700_000_000_000_000_000 + i, severity_number=9,
                                 trace_id=os.urandom(16), span_id=os.urandom(8), event_name="gen_ai.user.message")
        rec.attributes.add(key="gen_ai.provider.name").value.string_value = "openai"
        rec.body.kvlist_value.values.add(key="content").value.string_value = "hello " * 40
    return req.SerializeToString()


def _hex_ids(node):
    """protobuf's JSON mapping (base64 ids) to OTLP/JSON (hex ids)."""
    if isinstance(node, dict):
        return {k: base64.b64decode(v).hex() if k in ("traceId", "spanId") else _hex_ids(v) for k, v in node.items()}
    return [_hex_ids(v) for v in node] if isinstance(node, list) else node


def bench_decode(spans: int = 100, rounds: int = 30) -> dict[str, float]:
    """Spans/s decoded and validated in one thread: protobuf, OTLP/JSON, and (for reference)
    OTLP/JSON through protobuf's generic ``json_format`` parser."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from collector.otlp import decode

    body = _request_bytes(1, spans)
    data = json_format.MessageToDict(ExportTraceServiceRequest.FromString(body))
    base64_body = json.dumps(data).encode()  # protobuf's JSON mapping: ids in base64
    json_body = json.dumps(_hex_ids(data)).encode()  # OTLP/JSON: ids in hex

    def rate(fn) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            fn()
        return spans * rounds / (time.perf_counter() - started)

    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    logs_body = _logs_request_bytes(spans)
    logs_json = json.dumps(_hex_ids(json_format.MessageToDict(ExportLogsServiceRequest.FromString(logs_body))))
    return {"decode_protobuf_log_records_per_s": rate(lambda: decode(logs_body, False, "logs")),
            "decode_json_log_records_per_s": rate(lambda: decode(logs_json.encode(), True, "logs")),
            "decode_protobuf_spans_per_s": rate(lambda: decode(body, False)),
            "decode_json_spans_per_s": rate(lambda: decode(json_body, True)),
            "decode_json_via_json_format_spans_per_s": rate(
                lambda: json_format.Parse(base64_body, ExportTraceServiceRequest()))}


def _client(port: int, requests: int, spans: int, threads: int, out) -> None:
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(EXPORT)
    bodies = [_request_bytes(seed, spans) for seed in range(1, 17)]
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(requests // threads):
            t0 = time.perf_counter()
            call(bodies[(i + k) % len(bodies)], timeout=30)
            with lock:
                latencies.append(time.perf_counter() - t0)

    call(bodies[0], timeout=30)  # warm up the connection
    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((len(latencies) * spans / (time.perf_counter() - started), statistics.median(latencies) * 1000))


def bench_grpc(mode: str, tmp: str, threads: int, requests: int = 480, spans: int = 100) -> tuple[float, float]:
    import logging

    from collector.service import Service
    from config.service import parse_config

    logging.getLogger("genai_collector").setLevel(logging.WARNING)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = f"    storage: {{directory: {tmp}/journal-{time.monotonic_ns()}}}" if mode == "journal" else ""
    service = Service(parse_config(f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}"}}
{storage}
exporters:
  debug: {{verbosity: basic}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}, logs: {{level: warn}}}}
"""))
    service.start()
    try:
        mp = multiprocessing.get_context("spawn")  # a fork would copy the server's gRPC threads' state
        out = mp.Queue()
        proc = mp.Process(target=_client, args=(port, requests, spans, threads, out))
        proc.start()
        result = out.get(timeout=300)
        proc.join()
        return result
    finally:
        service.shutdown(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            rate, per_fsync = bench_diskqueue(f"{tmp}/q{run}")
            figures.setdefault("diskqueue_appends_per_s", []).append(rate)
            figures.setdefault("diskqueue_appends_per_fsync", []).append(per_fsync)
            for key, value in bench_decode().items():
                figures.setdefault(key, []).append(value)
            single, _ = bench_diskqueue(f"{tmp}/s{run}", threads=1, per_thread=300)
            figures.setdefault("diskqueue_single_thread_appends_per_s", []).append(single)
            for mode in ("direct", "journal"):
                for threads in (4, 16):
                    spans_per_s, p50 = bench_grpc(mode, tmp, threads)
                    figures.setdefault(f"grpc_{mode}_{threads}_clients_spans_per_s", []).append(spans_per_s)
                    figures.setdefault(f"grpc_{mode}_{threads}_clients_p50_ms", []).append(p50)
    print(json.dumps({k: round(statistics.median(v), 1) for k, v in figures.items()} | {"runs": args.runs},
                     indent=2))


if __name__ == "__main__":
    main()
