"""The shipped ``otel-config.yaml``, run as ``genai-collector run`` with its ports and files moved
into a test's temp dir through the environment variables the file reads (nothing else changed)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import REPO, RunningCollector, collector_cmd, free_port, http_get

SHIPPED = REPO / "otel-config.yaml"


def start_shipped(tmp_path: Path, env: dict | None = None, timeout: float = 90.0) -> RunningCollector:
    """Start the shipped config and wait until /healthz says ready (presidio, if the shipped config
    loads redaction, takes a while: hence the long timeout)."""
    text = SHIPPED.read_text()
    config = tmp_path / "otel-config.yaml"
    config.write_text(text)
    log_path = tmp_path / "shipped.log"
    environment = {**os.environ, **_relocations(text, tmp_path), **(env or {})}
    ports = {name: int(environment[f"GENAI_COLLECTOR_{name.upper()}_{kind}"].rpartition(":")[2])
             for name, kind in (("grpc", "ENDPOINT"), ("http", "ENDPOINT"), ("metrics", "ADDRESS"))}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(collector_cmd("run", "--config", str(config)), cwd=REPO,
                                stdout=log_file, stderr=subprocess.STDOUT, env=environment)
    running = RunningCollector(proc, config, ports["grpc"], ports["http"], ports["metrics"], log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"collector exited with {proc.returncode}:\n{running.log()}")
        try:
            code, body = http_get(f"http://127.0.0.1:{ports['metrics']}/healthz", timeout=2)
            if code == 200 and '"ready"' in body:
                return running
        except OSError:
            pass
        time.sleep(0.2)
    running.stop()
    raise AssertionError(f"collector not ready in {timeout}s:\n{running.log()}")


def _relocations(text: str, tmp_path: Path) -> dict[str, str]:
    """Every ``${env:GENAI_COLLECTOR_...}`` the file reads: a free port for an endpoint or address,
    a file in ``tmp_path`` for anything else (database, state file)."""
    out = {}
    for name in sorted(set(re.findall(r"\$\{env:(GENAI_COLLECTOR_[A-Z0-9_]+)", text))):
        if name.endswith(("_ENDPOINT", "_ADDRESS")):
            out[name] = f"127.0.0.1:{free_port()}"
        else:
            out[name] = str(tmp_path / name.lower())
    return out


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def slow_http_body(port: int, path: str = "/v1/traces", length: int = 1000) -> socket.socket:
    """A connection that announced a ``length``-byte protobuf body and sent one byte of it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
                  f"Content-Length: {length}\r\n\r\n").encode() + b"\n")
    return sock
