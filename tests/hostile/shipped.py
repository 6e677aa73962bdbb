"""The shipped ``otel-config.yaml`` as a ``genai-collector run`` subprocess for tests, its ports and
files moved into the test's temp dir the way ``bench/hostile_memory.py`` does (nothing else changed)."""

from __future__ import annotations

import socket
from pathlib import Path

from bench.hostile_memory import SHIPPED_CONFIG, port_of, proc_status, start, wait_ready
from tests.conftest import RunningCollector


def start_shipped(tmp_path: Path, timeout: float = 90.0) -> RunningCollector:
    """Start the shipped config and wait until /healthz says ready."""
    log_path = tmp_path / "shipped.log"
    proc, env = start(SHIPPED_CONFIG, tmp_path, log_path)
    running = RunningCollector(proc, tmp_path / "config.yaml", port_of(env, "GENAI_COLLECTOR_GRPC_ENDPOINT"),
                               port_of(env, "GENAI_COLLECTOR_HTTP_ENDPOINT"),
                               port_of(env, "GENAI_COLLECTOR_METRICS_ADDRESS"), log_path, extra={"env": env})
    try:
        wait_ready(proc, running.metrics_port, timeout)
    except RuntimeError as exc:
        running.stop()
        raise AssertionError(f"{exc}:\n{running.log()}") from None
    return running


def threads_of(pid: int) -> int:
    return int(proc_status(pid, "Threads", unit=1))


def slow_http_body(port: int, path: str = "/v1/traces", length: int = 1000) -> socket.socket:
    """A connection that announced a ``length``-byte protobuf body and sent one byte of it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
                  f"Content-Length: {length}\r\n\r\n").encode() + b"\n")
    return sock
