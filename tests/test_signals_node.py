"""A Node.js app with ``@opentelemetry/sdk-node`` exports traces, logs and metrics without an error.

The app and its pinned dependencies are in ``tests/node_signals/`` (package.json and
package-lock.json).  The test installs them with ``npm ci`` into a cache directory keyed by the
lock file's hash (``$GENAI_COLLECTOR_TEST_CACHE`` or ``~/.cache/genai-collector-tests``), so the npm
registry is needed once per lock file.  Without node/npm the test skips, except under ``CI=true``,
where it fails: CI must run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.receiver_helpers import InProcessCollector, free_port, stored_logs, stored_spans

FIXTURE = Path(__file__).parent / "node_signals"


def _node_modules() -> Path:
    """``node_modules`` of the fixture, installed once per package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are required in CI (tests/test_signals_node.py)")
        pytest.skip("node/npm not installed: the Node.js SDK test needs them (and the npm registry once)")
    lock = (FIXTURE / "package-lock.json").read_bytes()
    root = Path(os.environ.get("GENAI_COLLECTOR_TEST_CACHE", Path.home() / ".cache" / "genai-collector-tests"))
    target = root / f"node_signals-{hashlib.sha256(lock).hexdigest()[:16]}"
    done = target / ".installed"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(FIXTURE / name, target / name)
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=target,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        done.write_text("ok\n")
    return target / "node_modules"


def collector_yaml(tmp: Path, grpc_port: int, http_port: int) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
processors:
  memory_limiter:
  batch:
exporters:
  testsqlite: {{path: {tmp / "store.sqlite"}}}
  nop:
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [testsqlite]}}
    logs: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [testsqlite]}}
    metrics: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [nop]}}
  telemetry:
    metrics: {{address: "127.0.0.1:0"}}
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf", "http/json"])
def test_node_sdk_exports_traces_logs_and_metrics_without_error(tmp_path, protocol):
    modules = _node_modules()
    g, h = free_port(), free_port()
    collector = InProcessCollector(collector_yaml(tmp_path, g, h))
    try:
        env = {**os.environ, "NODE_PATH": str(modules), "PROTOCOL": protocol,
               "ENDPOINT": f"127.0.0.1:{g}" if protocol == "grpc" else f"http://127.0.0.1:{h}"}
        run = subprocess.run(["node", str(FIXTURE / "app.js")], env=env, capture_output=True, text=True, timeout=120)
        telemetry = collector.service.telemetry
        deadline = time.monotonic() + 10
        while not telemetry.value("otelcol_exporter_sent_metric_points", exporter="nop") and time.monotonic() < deadline:
            time.sleep(0.05)
        points = telemetry.value("otelcol_exporter_sent_metric_points", exporter="nop")
    finally:
        collector.stop()
    assert run.returncode == 0, f"the Node app reported a failed export:\n{run.stdout}\n{run.stderr}"
    assert run.stderr.strip() == "", run.stderr  # the SDK logs export errors there
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert {r["signal"] for r in results} == {"traces", "logs", "metrics"}
    db = str(tmp_path / "store.sqlite")
    assert len(stored_spans(db)) == 1
    assert set(stored_logs(db)) == {f"hello from node over {protocol}"}
    assert points >= 2  # the counter and the histogram
