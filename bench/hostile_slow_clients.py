"""Slow-client soak (issue 17, item 3): honest SDK clients against a sustained slow-client attack.

    python -m bench.hostile_slow_clients                    # 120 s, shipped config
    python -m bench.hostile_slow_clients --duration 900     # the soak

Starts ``genai-collector run`` on ``otel-config.yaml`` (ports and files moved as in
``bench/hostile_memory.py``), keeps ``--slow-bodies`` HTTP connections dripping a body one byte
every ``--drip`` seconds and ``--stalled`` gRPC calls that never send their message (each
re-opened as soon as the collector cuts it off, as a persistent attacker would), while one honest
client per protocol (the official OTLP SDK exporters, 10 s timeout, their own retries) exports a
span at a time.  Prints one JSON line: honest exports done and failed, their latency
(p50/p99/max ms), attacker connections cut off by the collector (its deadlines at work), and the
collector's peak thread count and RSS.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc

from bench.hostile_memory import SHIPPED_CONFIG, port_of, proc_status, start, wait_ready

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def slow_http_body(port: int, path: str = "/v1/traces", length: int = 1000) -> socket.socket:
    """A connection that announced a ``length``-byte protobuf body and sent one byte of it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
                  f"Content-Length: {length}\r\n\r\n").encode() + b"\n")
    return sock


class Attack:
    """Slow HTTP bodies and stalled gRPC calls, held open until ``stop()``; with ``reopen`` each one
    the collector cuts off is replaced (counted in ``cut_off``)."""

    def __init__(self, http_port: int, grpc_port: int, slow_bodies: int, stalled_calls: int,
                 drip_every: float = 10.0, reopen: bool = False) -> None:
        self.http_port, self.grpc_port = http_port, grpc_port
        self.stop_event = threading.Event()
        self.cut_off = {"http": 0, "grpc": 0}
        self.sockets = [slow_http_body(http_port) for _ in range(slow_bodies)]
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{grpc_port}") for _ in range(stalled_calls)]
        self.calls = []
        for ch in self.channels:  # one by one, as an attacker keeping them open would (a burst of
            # stalled calls is partly refused with RESOURCE_EXHAUSTED: receive slots are few)
            self.calls.append(self._stall(ch))
            time.sleep(0.3)
        self.threads = [threading.Thread(target=self._drip, args=(drip_every,), daemon=True)]
        if reopen:
            self.threads.append(threading.Thread(target=self._reopen, daemon=True))
        for t in self.threads:
            t.start()

    def _stall(self, channel: grpc.Channel):
        return channel.stream_unary(EXPORT).future(self._never(), timeout=None)

    def _never(self):
        self.stop_event.wait()
        return
        yield  # a request iterator that sends nothing

    def _drip(self, every: float) -> None:
        while not self.stop_event.wait(every):
            for sock in list(self.sockets):
                try:
                    sock.send(b"\n")
                except OSError:
                    pass

    def _reopen(self) -> None:
        while not self.stop_event.wait(1.0):
            for i, sock in enumerate(self.sockets):
                if _answered_or_closed(sock):
                    sock.close()
                    self.cut_off["http"] += 1
                    self.sockets[i] = slow_http_body(self.http_port)
            for i, call in enumerate(self.calls):
                if call.done():
                    self.cut_off["grpc"] += 1
                    self.calls[i] = self._stall(self.channels[i])

    def stop(self) -> None:
        self.stop_event.set()
        for sock in self.sockets:
            sock.close()
        for ch in self.channels:
            ch.close()


def _answered_or_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return bool(sock.recv(4096)) or True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def honest(endpoint: str, protocol: str, stop: threading.Event, latencies: list, failures: list) -> None:
    """Export one span at a time through the official SDK exporter until ``stop``."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
    export = exporter.export

    def timed(spans):
        started = time.monotonic()
        result = export(spans)
        (latencies if result == SpanExportResult.SUCCESS else failures).append(time.monotonic() - started)
        return result

    exporter.export = timed
    provider = TracerProvider(resource=Resource.create({"service.name": f"honest-{protocol}"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("honest")
    while not stop.is_set():
        with tracer.start_as_current_span("chat gpt-4o"):
            pass
        stop.wait(0.2)
    provider.shutdown()


def run(config: Path, duration: float, slow_bodies: int, stalled: int, drip: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="hostile-slow-") as tmp_name:
        tmp = Path(tmp_name)
        proc, env = start(config, tmp, tmp / "collector.log")
        attack = None
        try:
            wait_ready(proc, port_of(env, "GENAI_COLLECTOR_METRICS_ADDRESS"))
            attack = Attack(port_of(env, "GENAI_COLLECTOR_HTTP_ENDPOINT"), port_of(env, "GENAI_COLLECTOR_GRPC_ENDPOINT"),
                            slow_bodies, stalled, drip, reopen=True)
            stop = threading.Event()
            latencies: list[float] = []
            failures: list[float] = []
            endpoints = (("grpc", env["GENAI_COLLECTOR_GRPC_ENDPOINT"]),
                         ("http", f"http://{env['GENAI_COLLECTOR_HTTP_ENDPOINT']}/v1/traces"))
            clients = [threading.Thread(target=honest, args=(ep, proto, stop, latencies, failures), daemon=True)
                       for proto, ep in endpoints]
            peak_threads = 0
            for c in clients:
                c.start()
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                peak_threads = max(peak_threads, int(proc_status(proc.pid, "Threads", unit=1)))
                time.sleep(1.0)
            stop.set()
            for c in clients:
                c.join(30)
            ms = sorted(x * 1000 for x in latencies)
            return {
                "config": str(config), "duration_s": duration, "slow_bodies": slow_bodies, "stalled_calls": stalled,
                "honest_exports": len(latencies), "honest_failures": len(failures),
                "honest_p50_ms": round(statistics.median(ms), 1) if ms else None,
                "honest_p99_ms": round(ms[int(len(ms) * 0.99) - 1], 1) if ms else None,
                "honest_max_ms": round(ms[-1], 1) if ms else None,
                "attackers_cut_off": dict(attack.cut_off), "peak_threads": peak_threads,
                "peak_rss_mb": round(proc_status(proc.pid, "VmHWM"), 1),
            }
        finally:
            if attack is not None:
                attack.stop()
            proc.terminate()
            proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=SHIPPED_CONFIG)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--slow-bodies", type=int, default=64)
    parser.add_argument("--stalled", type=int, default=8)
    parser.add_argument("--drip", type=float, default=10.0, help="seconds between the bytes of a slow body")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.config, args.duration, args.slow_bodies, args.stalled, args.drip)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
