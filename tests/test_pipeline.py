"""The pipeline's promises: ack after export, retries, backpressure, fan-out copies, drain."""

from __future__ import annotations

import threading
import time

import pytest

from collector.component import Exporter, Overloaded, PermanentError, Processor, RetryableError
from collector.model import Resource, Scope, Span, SpanBatch
from collector.pipeline import BatchPolicy, ExporterHandle, Fanout, Pipeline
from collector.telemetry import Telemetry


def make_batch(n: int, nbytes: int = 1000, name: str = "s") -> SpanBatch:
    res, scope = Resource({"service.name": "svc"}), Scope("lib")
    spans = [Span(resource=res, scope=scope, trace_id=bytes([1]) * 16, span_id=(i + 1).to_bytes(8, "big"),
                  name=f"{name}{i}", start_time_unix_nano=1, end_time_unix_nano=2) for i in range(n)]
    return SpanBatch(spans, nbytes)


class RecordingExporter(Exporter):
    """Remembers what it was given; can be told to fail or to block."""

    def __init__(self, durable: bool = True) -> None:
        self.durable = durable
        self.batches: list[list[str]] = []
        self.fail_next: list[Exception] = []
        self.gate = threading.Event()
        self.gate.set()

    def export(self, batch: SpanBatch) -> None:
        self.gate.wait()
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.batches.append([s.name for s in batch])

    def shutdown(self) -> None:
        pass


class Renamer(Processor):
    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def process(self, batch: SpanBatch) -> SpanBatch:
        for s in batch:
            s.name += self.suffix
        return batch

    def shutdown(self) -> None:
        pass


def pipeline(exporters, processors=(), limit=10_000_000, policy=None, telemetry=None, name="traces") -> Pipeline:
    t = telemetry or Telemetry()
    handles = [ExporterHandle(f"e{i}", e, t) for i, e in enumerate(exporters)]
    p = Pipeline(name, [(f"p{i}", proc) for i, proc in enumerate(processors)], handles, t, policy, limit)
    p.start()
    return p


def test_ack_waits_for_the_export():
    exp = RecordingExporter()
    exp.gate.clear()
    p = pipeline([exp])
    ticket = p.submit(make_batch(2))
    with pytest.raises(TimeoutError):
        ticket.wait(0.2)
    exp.gate.set()
    ticket.wait(5)
    assert exp.batches == [["s0", "s1"]]
    p.drain(time.monotonic() + 5)


def test_processors_run_in_order_before_export():
    exp = RecordingExporter()
    p = pipeline([exp], [Renamer("-a"), Renamer("-b")])
    p.submit(make_batch(1)).wait(5)
    assert exp.batches == [["s0-a-b"]]
    p.drain(time.monotonic() + 5)


def test_retryable_errors_are_retried_until_success():
    t = Telemetry()
    exp = RecordingExporter()
    exp.fail_next = [RetryableError("db down"), RetryableError("db down", retry_after=0.01)]
    p = pipeline([exp], telemetry=t)
    p.submit(make_batch(3)).wait(10)
    assert exp.batches == [["s0", "s1", "s2"]]
    assert t.value("otelcol_exporter_retries", exporter="e0") == 2
    assert t.value("otelcol_exporter_sent_spans", exporter="e0") == 3
    p.drain(time.monotonic() + 5)


def test_permanent_error_of_a_durable_exporter_reaches_the_client():
    t = Telemetry()
    exp = RecordingExporter()
    exp.fail_next = [PermanentError("rejected")]
    p = pipeline([exp], telemetry=t)
    with pytest.raises(PermanentError, match="rejected"):
        p.submit(make_batch(2)).wait(5)
    assert t.value("otelcol_exporter_send_failed_spans", exporter="e0") == 2
    p.submit(make_batch(1)).wait(5)  # still serving
    p.drain(time.monotonic() + 5)


def test_failure_of_a_non_durable_exporter_does_not_fail_the_ack():
    debug_like = RecordingExporter(durable=False)
    debug_like.fail_next = [PermanentError("log sink broken")]
    store = RecordingExporter()
    p = pipeline([debug_like, store])
    p.submit(make_batch(1)).wait(5)
    assert store.batches == [["s0"]]
    p.drain(time.monotonic() + 5)


def test_admission_refuses_beyond_the_limit_and_recovers():
    t = Telemetry()
    exp = RecordingExporter()
    exp.gate.clear()
    p = pipeline([exp], limit=1500, telemetry=t)
    first = p.submit(make_batch(1, nbytes=1000))
    with pytest.raises(Overloaded, match="memory limit"):
        p.submit(make_batch(4, nbytes=1000))
    assert t.value("otelcol_pipeline_refused_spans", pipeline="traces") == 4
    assert t.value("otelcol_pipeline_bytes_in_flight", pipeline="traces") == 1000
    exp.gate.set()
    first.wait(5)
    p.submit(make_batch(1, nbytes=1000)).wait(5)  # room again once exported
    assert t.value("otelcol_pipeline_bytes_in_flight", pipeline="traces") == 0
    p.drain(time.monotonic() + 5)


def test_an_oversized_request_still_gets_into_an_empty_pipeline():
    exp = RecordingExporter()
    p = pipeline([exp], limit=10)
    p.submit(make_batch(1, nbytes=1000)).wait(5)
    p.drain(time.monotonic() + 5)


def test_queued_requests_are_grouped_into_one_export():
    exp = RecordingExporter()
    exp.gate.clear()
    t = Telemetry()
    p = pipeline([exp], policy=BatchPolicy(send_batch_size=100), telemetry=t)
    tickets = [p.submit(make_batch(2, name="r0-"))]
    wait_until(lambda: t.value("otelcol_pipeline_queue_size", pipeline="traces") == 0)  # worker holds it
    tickets += [p.submit(make_batch(2, name=f"r{i}-")) for i in range(1, 5)]
    exp.gate.set()
    for ticket in tickets:
        ticket.wait(5)
    # the first request went alone (nothing else was queued); the other four were merged
    assert [len(b) for b in exp.batches] == [2, 8]
    p.drain(time.monotonic() + 5)


def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_send_batch_max_size_caps_merging():
    exp = RecordingExporter()
    exp.gate.clear()
    p = pipeline([exp], policy=BatchPolicy(send_batch_size=100, send_batch_max_size=4))
    tickets = [p.submit(make_batch(2)) for _ in range(5)]
    time.sleep(0.1)
    exp.gate.set()
    for ticket in tickets:
        ticket.wait(5)
    assert all(len(b) <= 4 for b in exp.batches)
    assert sum(len(b) for b in exp.batches) == 10
    p.drain(time.monotonic() + 5)


def test_fanout_gives_each_pipeline_its_own_copy():
    t = Telemetry()
    a, b = RecordingExporter(), RecordingExporter()
    pa = pipeline([a], [Renamer("-a")], telemetry=t, name="traces")
    pb = pipeline([b], [Renamer("-b")], telemetry=t, name="traces/other")
    Fanout([pa, pb]).consume(make_batch(2), timeout=5)
    assert a.batches == [["s0-a", "s1-a"]]
    assert b.batches == [["s0-b", "s1-b"]]
    for p in (pa, pb):
        p.drain(time.monotonic() + 5)


def test_fanout_releases_admission_when_one_pipeline_refuses():
    t = Telemetry()
    a, b = RecordingExporter(), RecordingExporter()
    b.gate.clear()
    pa = pipeline([a], telemetry=t, name="traces", limit=1500)
    pb = pipeline([b], telemetry=t, name="traces/b", limit=1500)
    fan = Fanout([pa, pb])
    fan.submit(make_batch(1, nbytes=1000))
    time.sleep(0.1)
    with pytest.raises(Overloaded):
        fan.submit(make_batch(1, nbytes=1000))
    assert t.value("otelcol_pipeline_bytes_in_flight", pipeline="traces") == 0
    b.gate.set()
    for p in (pa, pb):
        p.drain(time.monotonic() + 5)


def test_drain_finishes_everything_queued():
    exp = RecordingExporter()
    exp.gate.clear()
    p = pipeline([exp])
    tickets = [p.submit(make_batch(1, name=f"r{i}-")) for i in range(20)]
    threading.Timer(0.2, exp.gate.set).start()
    assert p.drain(time.monotonic() + 10)
    assert sum(len(b) for b in exp.batches) == 20
    assert all(t._event.is_set() and t.error is None for t in tickets)
    with pytest.raises(Overloaded, match="shutting down"):
        p.submit(make_batch(1))


def test_drain_deadline_gives_up_on_an_exporter_that_never_recovers():
    exp = RecordingExporter()
    exp.fail_next = [RetryableError("down")] * 1000
    p = pipeline([exp])
    ticket = p.submit(make_batch(1))
    start = time.monotonic()
    assert p.drain(time.monotonic() + 0.5) is False
    assert time.monotonic() - start < 5
    with pytest.raises(Overloaded, match="shutdown deadline"):
        ticket.wait(5)


def test_timed_flush_hands_held_spans_to_the_rest_of_the_chain():
    class Holder(Processor):
        """Holds spans like a tail sampler and releases them on the timer."""

        holds_data = True

        def __init__(self) -> None:
            self.held: list = []

        def process(self, batch):
            self.held.extend(batch.spans)
            return SpanBatch([])

        def flush(self, final: bool = False):
            out, self.held = SpanBatch(self.held), []
            return out

        def shutdown(self) -> None:
            pass

    exp = RecordingExporter()
    p = pipeline([exp], [Holder(), Renamer("-after")])
    p.submit(make_batch(2)).wait(5)
    deadline = time.monotonic() + 5
    while not exp.batches and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exp.batches == [["s0-after", "s1-after"]]
    p.drain(time.monotonic() + 5)
