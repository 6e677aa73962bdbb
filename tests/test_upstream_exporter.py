"""The ``otlp`` / ``otlphttp`` exporters against a fake upstream that fails on command.

Every test runs over both transports: gRPC statuses and HTTP codes must lead to the same
decisions (retry with the server's delay, or drop with a log line and a counter).
"""

from __future__ import annotations

import logging
import time

import pytest

from collector.component import ComponentContext, Overloaded, PermanentError, RetryableError
from collector.model import SpanBatch, spans_from_request
from collector.pipeline import ExporterHandle, Pipeline
from collector.telemetry import Telemetry
from config.schema import build
from exporters import EXPORTERS
from tests.upstream_support import FakeUpstream, make_request

TRANSPORTS = ["otlp", "otlphttp"]
FAST_RETRY = {"initial_interval": "50ms", "max_interval": "200ms", "randomization_factor": 0}


@pytest.fixture
def upstream():
    fake = FakeUpstream()
    yield fake
    fake.close()


class Made:
    def __init__(self, exporter, telemetry: Telemetry, exporter_id: str) -> None:
        self.exporter = exporter
        self.telemetry = telemetry
        self.id = exporter_id

    def metric(self, name: str) -> float:
        return self.telemetry.value(f"otelcol_exporter_{name}", exporter=self.id)


@pytest.fixture
def make(upstream):
    made: list[Made] = []

    def _make(transport: str, **overrides) -> Made:
        raw = ({"endpoint": upstream.grpc_endpoint, "tls": {"insecure": True}} if transport == "otlp"
               else {"endpoint": upstream.http_endpoint})
        raw.update(overrides)
        cfg, errors = build(EXPORTERS.get(transport).config_class, raw)
        assert not errors, errors
        telemetry = Telemetry()
        ctx = ComponentContext(transport, "exporter", telemetry, logging.getLogger(f"test.{transport}"))
        m = Made(EXPORTERS.get(transport).create(cfg, ctx), telemetry, transport)
        made.append(m)
        return m

    yield _make
    for m in made:
        m.exporter.shutdown()


def batch_of(n: int) -> tuple[SpanBatch, set[bytes]]:
    request, ids = make_request(n)
    return SpanBatch(spans_from_request(request), request.ByteSize()), ids


NO_QUEUE = {"sending_queue": {"enabled": False}, "retry_on_failure": FAST_RETRY}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_sends_the_encoded_spans_with_headers(upstream, make, transport, compression):
    m = make(transport, headers={"X-Tenant": "acme"}, compression=compression, **NO_QUEUE)
    batch, ids = batch_of(20)
    m.exporter.export(batch)
    assert set(upstream.span_ids) == ids
    assert upstream.headers[0]["x-tenant"] == "acme"
    assert m.metric("delivered_spans") == 20
    if transport == "otlphttp":
        assert upstream.headers[0].get("content-encoding") == ("gzip" if compression == "gzip" else None)
        assert upstream.headers[0]["content-type"] == "application/x-protobuf"


@pytest.mark.parametrize("transport,kind,hint", [
    ("otlp", "unavailable", None), ("otlp", "resource_exhausted", 3.0), ("otlp", "unavailable", 2.0),
    ("otlphttp", "503", None), ("otlphttp", "502", None), ("otlphttp", "504", None),
    ("otlphttp", "429", 3.0), ("otlphttp", "503", 2.0)])
def test_retryable_failures_go_back_to_the_pipeline_with_the_servers_delay(upstream, make, transport, kind, hint):
    m = make(transport, **NO_QUEUE)
    batch, ids = batch_of(5)
    upstream.fail(kind, retry_after=hint)
    with pytest.raises(RetryableError) as info:
        m.exporter.export(batch)
    if hint is not None:
        assert info.value.retry_after >= hint
    else:
        assert 0.05 <= info.value.retry_after <= 0.2  # the configured backoff, first step
    assert not upstream.span_ids
    upstream.ok()
    m.exporter.export(batch)  # the pipeline offers the same batch again
    assert set(upstream.span_ids) == ids


@pytest.mark.parametrize("transport,kind", [("otlp", "invalid_argument"), ("otlphttp", "400"),
                                            ("otlphttp", "401"), ("otlp", "resource_exhausted")])
def test_permanent_failures_are_not_retried(upstream, make, transport, kind):
    """RESOURCE_EXHAUSTED without RetryInfo means 'too large' in the OTLP spec: not retryable."""
    m = make(transport, **NO_QUEUE)
    upstream.fail(kind)
    with pytest.raises(PermanentError, match=f"fake {kind}"):
        m.exporter.export(batch_of(3)[0])
    assert upstream.attempts == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pipeline_drops_permanent_failures_with_a_log_line_and_a_counter(upstream, make, transport, caplog):
    m = make(transport, **NO_QUEUE)
    upstream.fail("400")
    handle = ExporterHandle(m.id, m.exporter, m.telemetry)
    pipeline = Pipeline("traces", [], [handle], m.telemetry)
    pipeline.start()
    batch, _ = batch_of(7)
    with caplog.at_level(logging.ERROR):
        pipeline.submit(batch).wait(10)  # not durable: the client is answered, the loss is counted
    pipeline.drain(time.monotonic() + 5)
    assert m.metric("send_failed_spans") == 7
    assert any("dropping 7 spans" in r.getMessage() and "fake 400" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gives_up_after_max_elapsed_time(upstream, make, transport):
    m = make(transport, sending_queue={"enabled": False},
             retry_on_failure={**FAST_RETRY, "max_elapsed_time": "300ms"})
    upstream.fail("unavailable")
    batch, _ = batch_of(2)
    started = time.monotonic()
    while True:
        try:
            m.exporter.export(batch)
        except RetryableError as exc:
            time.sleep(exc.retry_after)
            continue
        except PermanentError as exc:
            assert "max_elapsed_time" in str(exc)
            break
    assert 0.2 <= time.monotonic() - started < 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_partial_success_is_logged_and_counted(upstream, make, transport, caplog):
    m = make(transport, **NO_QUEUE)
    upstream.partial_reject = 2
    with caplog.at_level(logging.WARNING):
        m.exporter.export(batch_of(10)[0])
    assert m.metric("upstream_rejected_spans") == 2
    assert m.metric("delivered_spans") == 8
    assert any("rejected 2 of 10 spans" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_large_batches_are_split_under_max_request_size(upstream, make, transport):
    m = make(transport, max_request_size="16KiB", **NO_QUEUE)
    batch, ids = batch_of(300)  # ~100 KB encoded
    m.exporter.export(batch)
    assert set(upstream.span_ids) == ids and len(upstream.span_ids) == 300
    assert len(upstream.raw) >= 6
    assert max(len(r) for r in upstream.raw) <= 16 * 1024


def test_a_split_batch_retried_midway_does_not_resend_the_parts_already_delivered(upstream, make):
    m = make("otlp", max_request_size="16KiB", **NO_QUEUE)
    batch, ids = batch_of(300)
    first = len(batch_of(1)[0].spans)
    upstream.fail("unavailable", times=1)
    with pytest.raises(RetryableError):
        m.exporter.export(batch)
    m.exporter.export(batch)
    assert first and len(upstream.span_ids) == 300 and set(upstream.span_ids) == ids


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_queue_sends_in_the_background_and_retries_until_delivered(upstream, make, transport):
    m = make(transport, retry_on_failure=FAST_RETRY, sending_queue={"num_consumers": 2})
    assert m.exporter.durable is False
    upstream.fail("unavailable", times=4)
    sent: set[bytes] = set()
    for _ in range(5):
        batch, ids = batch_of(10)
        m.exporter.export(batch)  # returns at once: queued
        sent |= ids
    assert not upstream.wait_for_spans(sent, timeout=10)
    assert m.metric("retries") >= 4
    assert m.metric("delivered_spans") == 50


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_full_queue_refuses_with_backpressure_and_counts(upstream, make, transport):
    m = make(transport, retry_on_failure=FAST_RETRY, sending_queue={"num_consumers": 1, "queue_size": 2})
    upstream.fail("unavailable")
    kept: set[bytes] = set()
    refused = None
    for _ in range(4):
        batch, ids = batch_of(5)
        try:
            m.exporter.export(batch)
            kept |= ids
        except RetryableError as exc:
            refused = (batch, ids, exc)
            break
    assert refused is not None, "a full queue must refuse"
    assert refused[2].retry_after > 0
    assert m.metric("enqueue_failed_spans") == 5
    assert m.metric("send_failed_spans") == 0  # refused, not dropped
    upstream.ok()
    assert not upstream.wait_for_spans(kept, timeout=10)
    deadline = time.monotonic() + 10
    while True:  # what the pipeline does: offer the refused batch again
        try:
            m.exporter.export(refused[0])
            break
        except RetryableError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert not upstream.wait_for_spans(refused[1], timeout=10)
    assert m.metric("enqueue_failed_spans") == 5  # counted once per refused batch, not per offer


def test_full_queue_turns_into_refusal_at_admission(upstream, make):
    """Through the pipeline: a held batch fills the admission limit, new data gets Overloaded."""
    m = make("otlp", retry_on_failure=FAST_RETRY, sending_queue={"num_consumers": 1, "queue_size": 1})
    upstream.fail("unavailable")
    handle = ExporterHandle(m.id, m.exporter, m.telemetry)
    pipeline = Pipeline("traces", [], [handle], m.telemetry, limit_bytes=20_000)
    pipeline.start()
    tickets, overloaded, accepted = [], 0, set()
    for _ in range(30):
        batch, ids = batch_of(10)
        try:
            tickets.append(pipeline.submit(batch))
            accepted |= ids
        except Overloaded:
            overloaded += 1
        time.sleep(0.02)
    assert overloaded > 0
    assert m.metric("send_failed_spans") == 0
    upstream.ok()
    for t in tickets:
        t.wait(15)
    assert pipeline.drain(time.monotonic() + 10)
    assert not upstream.wait_for_spans(accepted, timeout=10)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_give_up_in_the_background_is_dropped_and_counted(upstream, make, transport, caplog):
    m = make(transport, retry_on_failure={**FAST_RETRY, "max_elapsed_time": "300ms"},
             sending_queue={"num_consumers": 1})
    upstream.fail("unavailable")
    with caplog.at_level(logging.ERROR):
        m.exporter.export(batch_of(4)[0])
        deadline = time.monotonic() + 5
        while m.metric("send_failed_spans") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert m.metric("send_failed_spans") == 4
    assert any("dropping 4 spans" in r.getMessage() for r in caplog.records)


def test_permanent_error_in_the_background_is_dropped_at_once(upstream, make):
    m = make("otlphttp", retry_on_failure=FAST_RETRY, sending_queue={"num_consumers": 1})
    upstream.fail("400")
    m.exporter.export(batch_of(4)[0])
    deadline = time.monotonic() + 5
    while m.metric("send_failed_spans") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m.metric("send_failed_spans") == 4 and upstream.attempts == 1


def test_memory_queue_shutdown_drains_then_counts_what_it_could_not_send(upstream, make):
    m = make("otlp", retry_on_failure=FAST_RETRY, sending_queue={"num_consumers": 1, "drain_timeout": "300ms"})
    upstream.ok()
    batch, ids = batch_of(3)
    m.exporter.export(batch)
    assert not upstream.wait_for_spans(ids, timeout=5)
    upstream.fail("unavailable")
    m.exporter.export(batch_of(6)[0])
    m.exporter.export(batch_of(5)[0])
    started = time.monotonic()
    m.exporter.shutdown()
    assert time.monotonic() - started < 8
    assert m.metric("send_failed_spans") == 11


def test_persistent_queue_is_durable_and_resumes_in_a_new_exporter(upstream, make, tmp_path):
    queue = {"num_consumers": 2, "drain_timeout": "200ms", "storage": {"directory": str(tmp_path / "q")}}
    upstream.fail("unavailable")
    m = make("otlp", retry_on_failure=FAST_RETRY, sending_queue=queue)
    assert m.exporter.durable is True  # export returns only once the request is fsync'd
    sent: set[bytes] = set()
    for _ in range(4):
        batch, ids = batch_of(10)
        m.exporter.export(batch)
        sent |= ids
    m.exporter.shutdown()  # the upstream is still down: the queue keeps everything
    assert not upstream.span_ids and m.metric("send_failed_spans") == 0
    upstream.ok()
    again = make("otlp", retry_on_failure=FAST_RETRY, sending_queue=queue)
    assert not upstream.wait_for_spans(sent, timeout=10)
    assert again.metric("delivered_spans") == 40


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_verifies_the_server_with_ca_file(make, transport, tmp_path):
    from tests.upstream_support import self_signed

    cert, key = self_signed()
    (tmp_path / "ca.pem").write_bytes(cert)
    secure = FakeUpstream(tls=(cert, key))
    try:
        endpoint = (f"https://localhost:{secure.grpc_port}" if transport == "otlp"
                    else f"https://localhost:{secure.http_port}")
        trusted = make(transport, endpoint=endpoint, tls={"ca_file": str(tmp_path / "ca.pem")}, **NO_QUEUE)
        batch, ids = batch_of(3)
        trusted.exporter.export(batch)
        assert set(secure.span_ids) == ids
        untrusted = make(transport, endpoint=endpoint, **NO_QUEUE)  # system roots do not know this CA
        with pytest.raises(RetryableError):
            untrusted.exporter.export(batch_of(1)[0])
        assert len(secure.span_ids) == 3
    finally:
        secure.close()


def test_missing_tls_file_fails_at_start_naming_the_key(make):
    with pytest.raises(ValueError, match="tls::ca_file"):
        make("otlp", tls={"ca_file": "/nonexistent/ca.pem"})


def test_an_unexpected_transport_error_drops_that_request_and_the_consumer_lives_on():
    from exporters.otlp_common import UpstreamConfig, UpstreamExporter

    class Flaky:
        endpoint, timeout = "flaky", 1.0

        def __init__(self) -> None:
            self.calls = 0

        def send(self, signal: str, payload: bytes):
            self.calls += 1
            if self.calls == 1:
                raise ValueError("metadata was rejected")
            return None

        def close(self) -> None:
            pass

    cfg, errors = build(UpstreamConfig, {"endpoint": "x", "sending_queue": {"num_consumers": 1}})
    assert not errors
    telemetry = Telemetry()
    exporter = UpstreamExporter(cfg, ComponentContext("otlp", "exporter", telemetry, logging.getLogger("t")), Flaky())
    exporter.export(batch_of(3)[0])
    exporter.export(batch_of(4)[0])
    deadline = time.monotonic() + 5
    while telemetry.value("otelcol_exporter_delivered_spans", exporter="otlp") < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    exporter.shutdown()
    assert telemetry.value("otelcol_exporter_send_failed_spans", exporter="otlp") == 3
    assert telemetry.value("otelcol_exporter_delivered_spans", exporter="otlp") == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mutual_tls_presents_the_client_certificate(make, transport, tmp_path):
    from tests.upstream_support import self_signed

    server_cert, server_key = self_signed()
    client_cert, client_key = self_signed("genai-collector")
    for name, data in (("ca.pem", server_cert), ("client.pem", client_cert), ("client.key", client_key)):
        (tmp_path / name).write_bytes(data)
    secure = FakeUpstream(tls=(server_cert, server_key), client_ca=client_cert)
    try:
        endpoint = (f"https://localhost:{secure.grpc_port}" if transport == "otlp"
                    else f"https://localhost:{secure.http_port}")
        tls = {"ca_file": str(tmp_path / "ca.pem")}
        anonymous = make(transport, endpoint=endpoint, tls=tls, **NO_QUEUE)
        with pytest.raises(RetryableError):
            anonymous.exporter.export(batch_of(1)[0])
        mutual = make(transport, endpoint=endpoint, tls={**tls, "cert_file": str(tmp_path / "client.pem"),
                                                         "key_file": str(tmp_path / "client.key")}, **NO_QUEUE)
        batch, ids = batch_of(3)
        mutual.exporter.export(batch)
        assert set(secure.span_ids) == ids
    finally:
        secure.close()


def test_a_huge_answer_from_the_upstream_is_read_only_up_to_a_cap(make):
    """A hostile or broken upstream streaming an endless error body must not exhaust memory."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(1 << 33))  # 8 GiB promised
            self.end_headers()
            chunk = b"x" * (1 << 16)
            try:
                while True:
                    self.wfile.write(chunk)
            except OSError:
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        m = make("otlphttp", endpoint=f"http://127.0.0.1:{server.server_address[1]}", **NO_QUEUE)
        started = time.monotonic()
        with pytest.raises(PermanentError, match="HTTP 400: xxx"):
            m.exporter.export(batch_of(2)[0])
        assert time.monotonic() - started < 5
    finally:
        server.shutdown()
        server.server_close()


def test_a_byte_sized_memory_queue_refuses_by_bytes(upstream, make):
    m = make("otlp", retry_on_failure=FAST_RETRY,
             sending_queue={"num_consumers": 1, "sizer": "bytes", "queue_size": "64KiB"})
    upstream.fail("unavailable")
    queued = 0
    with pytest.raises(RetryableError):
        for _ in range(50):
            m.exporter.export(batch_of(20)[0])  # ~7 KB each
            queued += 1
    assert 5 <= queued <= 10
    assert m.metric("queue_bytes") <= 64 * 1024
