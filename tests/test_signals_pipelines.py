"""Components across signals: one exporter shared by pipelines of several signals, the sampler's
decisions followed by log records, the debug exporter, persistent queue records keeping their signal."""

from __future__ import annotations

import logging
import time

import pytest

from collector.component import ComponentContext, RetryableError
from collector.model import LOGS, Resource, Scope, Span, SpanBatch
from collector.model_logs import LogBatch, LogRecord
from collector.otlp import decode
from collector.telemetry import Telemetry
from config.schema import build
from exporters.otlp_common import UpstreamConfig, UpstreamExporter
from processors.sampling import SamplingConfig, SamplingProcessor
from tests.test_signals_model import metrics_request

RES, SCOPE = Resource({"service.name": "svc"}), Scope("lib")


def spans(n: int, trace: int = 1) -> SpanBatch:
    return SpanBatch([Span(resource=RES, scope=SCOPE, trace_id=trace.to_bytes(16, "big"),
                           span_id=(i + 1).to_bytes(8, "big"), name=f"s{i}", attributes={"pad": "x" * 300})
                      for i in range(n)])


def records(n: int, trace: int = 1, body: str = "r") -> LogBatch:
    return LogBatch([LogRecord(resource=RES, scope=SCOPE, trace_id=trace.to_bytes(16, "big"),
                               span_id=(i + 1).to_bytes(8, "big"), body=f"{body}{i}", event_name="gen_ai.user.message")
                     for i in range(n)])


class Sender:
    """Records every request per signal; fails the listed call numbers with a retryable error."""

    endpoint, timeout = "fake", 1.0

    def __init__(self, fail_calls: set[int]) -> None:
        self.calls = 0
        self.fail_calls = fail_calls
        self.sent: list[tuple[str, bytes]] = []

    def send(self, signal: str, payload: bytes):
        self.calls += 1
        if self.calls in self.fail_calls:
            raise RetryableError("upstream unavailable", retry_after=0.0)
        self.sent.append((signal, payload))
        return None

    def close(self) -> None:
        pass


def exporter(sender: Sender, **raw) -> UpstreamExporter:
    cfg, errors = build(UpstreamConfig, {"endpoint": "x", "max_request_size": 1024,
                                         "sending_queue": {"enabled": False},
                                         "retry_on_failure": {"initial_interval": "1ms"}, **raw})
    assert not errors, errors
    return UpstreamExporter(cfg, ComponentContext("otlp", "exporter", Telemetry(), logging.getLogger("t")), sender)


def test_a_shared_exporter_keeps_each_batchs_retry_state_apart():
    """Traces batch A is split into several requests; the second fails.  A logs batch goes out in
    between (another pipeline, same exporter).  When A is offered again it resumes at its second
    request: nothing is sent twice, nothing skipped.  (Keyed by ``id(batch)`` and shared, the logs
    batch reset A's state and A's first request went out twice.)"""
    sender = Sender(fail_calls={2})
    upstream = exporter(sender)
    traces, logs = spans(9), records(2)
    with pytest.raises(RetryableError):
        upstream.export(traces)
    upstream.export(logs)
    upstream.export(traces)
    traces_sent = [p for s, p in sender.sent if s == "traces"]
    assert len(traces_sent) > 2 and len(set(traces_sent)) == len(traces_sent)
    ids = [sp.span_id for p in traces_sent for sp in decode(p, False).batch]
    assert sorted(ids) == sorted(s.span_id for s in traces) and len(ids) == len(set(ids))
    assert [s for s, _ in sender.sent].count("logs") == 1


def test_metrics_batches_split_by_resource_and_arrive_whole():
    sender = Sender(fail_calls=set())
    upstream = exporter(sender, max_request_size=2048)
    request = metrics_request()
    for n in range(1, 40):  # enough resources to need several requests
        rm = request.resource_metrics.add()
        rm.CopyFrom(request.resource_metrics[0])
        rm.resource.attributes[0].value.string_value = f"app{n}"
    batch = decode(request.SerializeToString(), False, "metrics").batch
    upstream.export(batch)
    assert len(sender.sent) > 1
    merged = [rm for _, p in sender.sent for rm in decode(p, False, "metrics").batch.resource_metrics]
    assert merged == list(request.resource_metrics)


def test_persistent_queue_records_keep_their_signal_across_a_restart(tmp_path):
    class Down(Sender):
        def send(self, signal, payload):
            raise RetryableError("down", retry_after=0.0)

    raw = {"sending_queue": {"enabled": True, "num_consumers": 1, "drain_timeout": "0s",
                             "storage": {"directory": str(tmp_path)}},
           "retry_on_failure": {"initial_interval": "1s", "max_elapsed_time": 0}}
    first = exporter(Down(set()), **raw)
    first.export(records(3))
    first.export(spans(2))
    first.shutdown()
    sender = Sender(fail_calls=set())
    second = exporter(sender, **raw)
    deadline = time.monotonic() + 15
    while len(sender.sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    second.shutdown()
    assert sorted(s for s, _ in sender.sent) == ["logs", "traces"]
    logs_payload = next(p for s, p in sender.sent if s == "logs")
    assert [r.body for r in decode(logs_payload, False, LOGS).batch] == ["r0", "r1", "r2"]


def sampler(telemetry: Telemetry, pipeline: str, **raw) -> SamplingProcessor:
    cfg, errors = build(SamplingConfig, raw)
    assert not errors, errors
    ctx = ComponentContext("sampling", "processor", telemetry, logging.getLogger("t"), pipeline)
    return SamplingProcessor(cfg, ctx)


def test_log_records_follow_their_traces_sampling_decision():
    telemetry = Telemetry()
    traces = sampler(telemetry, "traces", probabilistic={"sampling_percentage": 50}, keep={"errors": False},
                     decision_wait="0s")
    logs = sampler(telemetry, "logs", probabilistic={"sampling_percentage": 50}, keep={"errors": False},
                   decision_wait="0s")
    kept = {span.trace_id for t in range(1, 200) for span in traces.process(spans(1, t))}
    assert 40 < len(kept) < 160
    out = logs.process(LogBatch([r for t in range(1, 200) for r in records(1, t)]))
    assert {r.trace_id for r in out} == kept
    outside = LogRecord(resource=RES, scope=SCOPE, body="no trace")
    assert logs.process(LogBatch([outside])).records == [outside]


def test_a_held_log_record_follows_a_trace_a_keep_rule_rescues():
    telemetry = Telemetry()
    raw = {"probabilistic": {"sampling_percentage": 0}, "keep": {"errors": False, "services": ["svc"]},
           "decision_wait": "10s"}
    logs, traces = sampler(telemetry, "logs", **raw), sampler(telemetry, "traces", **raw)
    assert len(logs.process(records(2, trace=7))) == 0  # undecided: held
    assert len(traces.process(spans(1, trace=7))) == 1  # the services rule keeps the trace
    assert [r.body for r in logs.flush()] == ["r0", "r1"]


def test_content_sampling_strips_message_bodies_of_log_events():
    telemetry = Telemetry()
    raw = {"content_sampling": {"percentage": 0}, "keep": {"errors": False}}
    traces, logs = sampler(telemetry, "traces", **raw), sampler(telemetry, "logs", **raw)
    traces.process(spans(1, trace=3))
    out = logs.process(records(1, trace=3))
    assert out.records[0].body is None and out.records[0].attributes["sampling.content"] == "stripped"


def test_debug_exporter_prints_every_signal(caplog):
    from exporters.debug import DebugConfig, DebugExporter

    caplog.set_level(logging.INFO)
    debug = DebugExporter(DebugConfig(verbosity="detailed"), logging.getLogger("debug-test"))
    debug.export(spans(1))
    debug.export(records(1, body="hello "))
    debug.export(decode(metrics_request().SerializeToString(), False, "metrics").batch)
    text = caplog.text
    assert "TracesExporter: 1 spans" in text and "LogsExporter: 1 log records" in text
    assert "MetricsExporter: 5 metric points" in text
    assert "hello 0" in text and "metric 'h' kind=histogram" in text
