"""Throughput of the upstream exporters: spans/s from ``export()`` to an upstream's acknowledgement.

An in-process sink (OTLP/gRPC and OTLP/HTTP, answering at once) stands for the upstream, so the
figure is the exporter's own cost: encoding the model back to OTLP, the queue (memory or the
fsync'd disk queue), compression and the transport.  GenAI-like spans of ~1 KB, batches of 500.

    python bench/upstream_bench.py [--spans 50000] [--runs 3]

Prints one JSON object: per scenario the median spans/s over the runs, and each run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from collector.component import ComponentContext  # noqa: E402
from collector.model import SpanBatch, spans_from_request  # noqa: E402
from collector.telemetry import Telemetry  # noqa: E402
from config.schema import build  # noqa: E402
from exporters import EXPORTERS  # noqa: E402


class Sink:
    """Counts spans arriving over gRPC and HTTP (parsing each request, as an upstream would)."""

    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(lambda body, ctx: self._count(body))
        self.grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}),))
        self.grpc_port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.grpc.start()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                import gzip

                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                outer._count(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.http_port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _count(self, body: bytes) -> bytes:
        request = ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.spans += n
        return b""

    def close(self) -> None:
        self.grpc.stop(0)
        self.httpd.shutdown()


def make_batches(total: int, per_batch: int) -> list[SpanBatch]:
    from tests.upstream_support import make_request

    out = []
    for _ in range(total // per_batch):
        request, _ = make_request(per_batch)
        out.append(SpanBatch(spans_from_request(request), request.ByteSize()))
    return out


def run(transport: str, queue: str, sink: Sink, batches: list[SpanBatch], tmp: str) -> float:
    raw = ({"endpoint": f"127.0.0.1:{sink.grpc_port}", "tls": {"insecure": True}} if transport == "otlp"
           else {"endpoint": f"http://127.0.0.1:{sink.http_port}"})
    raw["sending_queue"] = {"enabled": False} if queue == "none" else {"num_consumers": 4}
    if queue == "disk":
        raw["sending_queue"]["storage"] = {"directory": tempfile.mkdtemp(dir=tmp)}
    cfg, errors = build(EXPORTERS.get(transport).config_class, raw)
    assert not errors, errors
    ctx = ComponentContext(transport, "exporter", Telemetry(), logging.getLogger("bench"))
    exporter = EXPORTERS.get(transport).create(cfg, ctx)
    want = sink.spans + sum(len(b) for b in batches)
    started = time.perf_counter()
    for batch in batches:
        exporter.export(batch)
    while sink.spans < want:
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    exporter.shutdown()
    return sum(len(b) for b in batches) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    batches = make_batches(args.spans, args.batch)
    sink = Sink()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for transport in ("otlp", "otlphttp"):
            for queue in ("none", "memory", "disk"):
                runs = [run(transport, queue, sink, batches, tmp) for _ in range(args.runs)]
                results[f"{transport}/{queue}_queue"] = {"median_spans_per_s": round(statistics.median(runs)),
                                                         "runs": [round(r) for r in runs]}
    sink.close()
    print(json.dumps({"spans": len(batches) * args.batch, "batch": args.batch, "results": results}, indent=2))


if __name__ == "__main__":
    main()
