"""Overload: backpressure the official SDK exporters retry, and a receiver that never blocks forever."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.receiver_helpers import InProcessCollector, collector_yaml, free_port, make_request, span_keys, stored_spans
from tests.test_receiver_durability import _wait_stored
from tests.test_receiver_protocol import grpc_export, http_post

LIMITED = "  memory_limiter:\n    limit_mib: 1\n"


def _big_request(seed: int, kib: int = 300):
    req = make_request(2, seed)
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="blob").value.string_value = "x" * (kib << 10)
    return req


@pytest.fixture
def limited(tmp_path):
    g, h = free_port(), free_port()
    c = InProcessCollector(collector_yaml(str(tmp_path), g, h, exporter_extra="    delay: 300ms", processors=LIMITED))
    c.grpc_port, c.http_port, c.db = g, h, f"{tmp_path}/spans.sqlite"
    yield c
    c.stop()


def _concurrently(fn, n: int) -> list:
    results: list = []
    threads = [threading.Thread(target=lambda i=i: results.append(fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_over_the_memory_limit_grpc_gets_resource_exhausted_with_retry_info(limited):
    results = _concurrently(lambda i: grpc_export(limited.grpc_port, _big_request(100 + i).SerializeToString()), 8)
    refused = [trailers for code, _, trailers in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused and any(code == grpc.StatusCode.OK for code, _, _ in results)
    trailers = dict(refused[0])
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])  # where the Python SDK looks
    assert info.retry_delay.seconds + info.retry_delay.nanos / 1e9 > 0
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])  # rich status, for Go clients
    assert status.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)


def test_over_the_memory_limit_http_gets_429_with_retry_after(limited):
    results = _concurrently(lambda i: http_post(limited.http_port, _big_request(200 + i).SerializeToString()), 8)
    refused = [headers for status, headers, _ in results if status == 429]
    assert refused and any(status == 200 for status, _, _ in results)
    assert int(refused[0]["Retry-After"]) >= 1


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporters_retry_through_backpressure_and_deliver_everything(limited, transport):
    from opentelemetry.sdk.trace import TracerProvider

    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{limited.grpc_port}", insecure=True, timeout=20)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{limited.http_port}/v1/traces", timeout=20)
    tracer = TracerProvider().get_tracer("load")

    def batch(i: int):
        spans = []
        for j in range(3):
            with tracer.start_as_current_span(f"big-{i}-{j}", attributes={"blob": "y" * 150_000}) as span:
                spans.append(span)
        return spans

    batches = [batch(i) for i in range(6)]
    results = _concurrently(lambda i: exporter.export(batches[i]).name, 6)
    exporter.shutdown()
    assert results == ["SUCCESS"] * 6
    expected = {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for b in batches for s in b}
    assert expected <= set(stored_spans(limited.db))


def test_a_request_never_waits_longer_than_ack_timeout(tmp_path):
    g, h = free_port(), free_port()
    db = f"{tmp_path}/spans.sqlite"
    c = InProcessCollector(collector_yaml(str(tmp_path), g, h, receiver_extra="    ack_timeout: 300ms",
                                          exporter_extra="    delay: 2s"))
    try:
        req = make_request(2, 1)
        started = time.monotonic()
        code, _, _ = grpc_export(g, req.SerializeToString())
        assert code == grpc.StatusCode.UNAVAILABLE  # retryable: the client sends it again
        req2 = make_request(2, 2)
        status, headers, _ = http_post(h, req2.SerializeToString())
        assert status == 503 and headers["Retry-After"] == "1"
        assert time.monotonic() - started < 2.5
        # what timed out was still taken: it is stored once the exporter gets to it
        assert span_keys(req) | span_keys(req2) <= set(_wait_stored(db, span_keys(req) | span_keys(req2), 15))
    finally:
        c.stop()


def test_http_requests_beyond_max_concurrent_requests_get_429(tmp_path):
    g, h = free_port(), free_port()
    c = InProcessCollector(collector_yaml(str(tmp_path), g, h, http_extra="        max_concurrent_requests: 1",
                                          exporter_extra="    delay: 500ms"))
    try:
        results = _concurrently(lambda i: http_post(h, make_request(1, 300 + i).SerializeToString()), 3)
        statuses = sorted(status for status, _, _ in results)
        assert statuses[0] == 200 and statuses[-1] == 429
        assert http_post(h, make_request(1, 400).SerializeToString())[0] == 200
    finally:
        c.stop()
