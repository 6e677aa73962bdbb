"""Shared fixtures: free ports, config files, and a collector running as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class RunningCollector:
    """A ``genai-collector run`` subprocess with the ports its config was given."""

    proc: subprocess.Popen
    config_path: Path
    grpc_port: int
    http_port: int
    metrics_port: int
    log_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[1]

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def collector_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "collector", *args]


def start_collector(config_text: str, tmp_path: Path, *, name: str = "collector",
                    wait_ready: bool = True, env: dict | None = None, timeout: float = 90.0,
                    verbatim: bool = False, cwd: Path | None = None, preexec_fn=None) -> RunningCollector:
    """Write the config (``{grpc_port}``, ``{http_port}``, ``{metrics_port}``, ``{tmp}`` are filled
    in unless ``verbatim``), start ``python -m collector run`` and wait for ``/healthz`` to say ready.

    The ports are also in the environment the shipped config and the examples read
    (``GENAI_COLLECTOR_GRPC_ENDPOINT``, ``..._HTTP_ENDPOINT``, ``..._METRICS_ADDRESS``), so a
    ``verbatim`` config listens on them too.  ``cwd`` (default: the repository) is where relative
    paths in the config land.  ``preexec_fn`` runs in the child before the collector (e.g. to
    drop a capability)."""
    ports = {"grpc_port": free_port(), "http_port": free_port(), "metrics_port": free_port()}
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(config_text if verbatim else config_text.format(tmp=tmp_path, **ports))
    log_path = tmp_path / f"{name}.log"
    log_file = open(log_path, "wb")
    port_env = {"GENAI_COLLECTOR_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc_port']}",
                "GENAI_COLLECTOR_HTTP_ENDPOINT": f"127.0.0.1:{ports['http_port']}",
                "GENAI_COLLECTOR_METRICS_ADDRESS": f"127.0.0.1:{ports['metrics_port']}",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(collector_cmd("run", "--config", str(config_path)), cwd=cwd or REPO,
                            stdout=log_file, stderr=subprocess.STDOUT,
                            env={**os.environ, **port_env, **(env or {})}, preexec_fn=preexec_fn)
    log_file.close()
    running = RunningCollector(proc, config_path, ports["grpc_port"], ports["http_port"],
                               ports["metrics_port"], log_path)
    if wait_ready:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"collector exited with {proc.returncode}:\n{running.log()}")
            try:
                code, body = http_get(f"http://127.0.0.1:{ports['metrics_port']}/healthz", timeout=1)
                if code == 200 and json.loads(body).get("status") == "ready":
                    return running
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        running.stop(signal.SIGKILL)
        raise AssertionError(f"collector not ready in {timeout}s:\n{running.log()}")
    return running


OTLP_RECEIVERS = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
      http:
        endpoint: 127.0.0.1:{http_port}
"""
"""The OTLP receiver on the ports ``start_collector`` fills in (the head of a test config)."""

TELEMETRY = """  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"""
"""The ``service.telemetry`` part with the port ``start_collector`` fills in (a config's tail)."""

BASIC_CONFIG = OTLP_RECEIVERS + """processors:
  batch:
exporters:
  debug:
    verbosity: normal
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
""" + TELEMETRY


@pytest.fixture
def collector_factory(tmp_path):
    """Start collectors from config text; every one still running is stopped at teardown."""
    started: list[RunningCollector] = []

    def factory(config_text: str = BASIC_CONFIG, **kwargs) -> RunningCollector:
        running = start_collector(config_text, tmp_path, name=f"collector{len(started)}", **kwargs)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop(signal.SIGKILL if running.proc.poll() is None else signal.SIGTERM, timeout=10)


def sdk_tracer_provider(endpoint: str, protocol: str = "grpc", service: str = "test-app"):
    """A TracerProvider exporting synchronously through the official OTLP exporter."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider
