"""Collectors for the hostile tests: the shipped ``otel-config.yaml`` as a ``genai-collector run``
subprocess, its ports and files moved into the test's temp dir the way ``bench/hostile_memory.py``
does (nothing else changed); and a small OTLP-to-debug config template."""

from __future__ import annotations

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


DEBUG_PIPELINE = """
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"""


def otlp_to_debug(protocols: str) -> str:
    """A config template: the ``otlp`` receiver with ``protocols`` (YAML indented under
    ``protocols:``) feeding a ``debug`` exporter; ``{http_port}`` etc. are left to fill in."""
    return "receivers:\n  otlp:\n    protocols:\n" + protocols + DEBUG_PIPELINE
