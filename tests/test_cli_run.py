"""``genai-collector run`` as a subprocess: health, metrics, logs, signals, startup failures."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import pytest

from tests.conftest import BASIC_CONFIG, REPO, collector_cmd, free_port, http_get, sdk_tracer_provider


def send_spans(endpoint: str, protocol: str, count: int, service: str = "test-app") -> None:
    provider = sdk_tracer_provider(endpoint, protocol, service)
    tracer = provider.get_tracer("tests")
    for i in range(count):
        with tracer.start_as_current_span(f"chat {i}", attributes={"gen_ai.request.model": "gpt-4o"}):
            pass
    provider.shutdown()


def test_help_on_every_command():
    for args in (["--help"], ["run", "--help"], ["validate", "--help"]):
        result = subprocess.run(collector_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0
        assert "usage: genai-collector" in result.stdout


def test_runs_serves_health_and_metrics_and_stops_cleanly(collector_factory):
    c = collector_factory()
    code, body = http_get(f"http://127.0.0.1:{c.metrics_port}/healthz")
    assert (code, json.loads(body)) == (200, {"status": "ready"})

    send_spans(c.grpc_endpoint, "grpc", 3)
    send_spans(c.http_url, "http", 2)
    # the SDK got its acknowledgement only after the exporter had the spans
    assert c.metric("otelcol_receiver_accepted_spans", receiver="otlp", transport="grpc") == 3
    assert c.metric("otelcol_receiver_accepted_spans", receiver="otlp", transport="http") == 2
    assert c.metric("otelcol_exporter_sent_spans", exporter="debug") == 5
    metrics = c.metrics()
    assert "# TYPE otelcol_receiver_accepted_spans counter" in metrics
    assert 'otelcol_pipeline_queue_size{pipeline="traces"}' in metrics

    assert c.stop(signal.SIGTERM) == 0
    log = c.log()
    assert "received SIGTERM: shutting down" in log
    assert "shutdown complete" in log
    assert log.count("span 'chat ") == 5  # debug exporter, verbosity normal: one line per span


def test_sigint_also_drains_and_exits_zero(collector_factory):
    c = collector_factory()
    send_spans(c.grpc_endpoint, "grpc", 1)
    assert c.stop(signal.SIGINT) == 0
    assert "received SIGINT" in c.log()


def test_health_is_503_until_ready_and_json_logs(collector_factory, tmp_path):
    config = BASIC_CONFIG.replace("      address: 127.0.0.1:{metrics_port}",
                                  "      address: 127.0.0.1:{metrics_port}\n    logs:\n      encoding: json\n"
                                  "      level: debug")
    c = collector_factory(config)
    c.stop()
    lines = [json.loads(line) for line in c.log().splitlines() if line.startswith("{")]
    assert any(entry["msg"].startswith("collector ready") for entry in lines)
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])


def test_port_taken_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        config = BASIC_CONFIG.format(grpc_port=free_port(), http_port=taken, metrics_port=free_port(), tmp=tmp_path)
        path = tmp_path / "c.yaml"
        path.write_text(config)
        result = subprocess.run(collector_cmd("run", "--config", str(path)), cwd=REPO, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1
    assert f"error: cannot start: receiver otlp: otlp http: cannot listen on 127.0.0.1:{taken}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_metrics_port_taken_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        path = tmp_path / "c.yaml"
        path.write_text(BASIC_CONFIG.format(grpc_port=free_port(), http_port=free_port(), metrics_port=taken))
        result = subprocess.run(collector_cmd("run", "--config", str(path)), cwd=REPO, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1
    assert f"telemetry: cannot listen on 127.0.0.1:{taken}" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_refuses_to_run(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("receivers: {nope: {}}\nservice: {pipelines: {}}\n")
    result = subprocess.run(collector_cmd("run", "--config", str(path)), cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert 'receivers::nope: unknown type: "nope"' in result.stderr


def test_unused_receiver_stays_idle(collector_factory):
    """A component configured but not in a pipeline is not started (its port is not opened)."""
    idle_port = free_port()
    config = BASIC_CONFIG.replace("receivers:\n  otlp:", "receivers:\n  otlp/idle:\n    protocols:\n"
                                  f"      grpc:\n        endpoint: 127.0.0.1:{idle_port}\n  otlp:")
    c = collector_factory(config)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", idle_port)) != 0
    assert c.stop() == 0


def test_second_signal_exits_at_once(collector_factory):
    """With a pipeline stuck on a slow drain, a second SIGTERM does not wait for shutdown_timeout."""
    c = collector_factory()
    c.proc.send_signal(signal.SIGTERM)
    c.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    c.proc.wait(10)
    assert time.monotonic() - start < 10
    assert c.proc.returncode in (0, 1)


def test_two_collectors_side_by_side(collector_factory):
    a = collector_factory()
    b = collector_factory()
    send_spans(a.grpc_endpoint, "grpc", 2)
    send_spans(b.http_url, "http", 1)
    assert a.metric("otelcol_receiver_accepted_spans") == 2
    assert b.metric("otelcol_receiver_accepted_spans") == 1
