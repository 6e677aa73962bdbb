"""The memory bound (issue 17, item 4) on the shipped config: 48 concurrent 15 MB requests.

Half arrive as gRPC Export calls, half as OTLP/HTTP POSTs with a Content-Length, all at once
(``bench/hostile_memory.py``, whose soak variant runs more rounds).  What is admitted is bounded
before it is read: HTTP bodies are admitted by their Content-Length before a byte is read, gRPC
messages are received a few at a time with a 1 MiB flow-control window for the others.  Asserted:
peak RSS (the kernel's high-water mark) under 450 MB, memory given back afterwards, every refusal
retryable, and every acknowledged span stored.
"""

from __future__ import annotations

from bench import hostile_memory

PEAK_LIMIT_MB = 450  # the goal on the shipped config (idle ~100 MB; measured peaks 340-400)
RETAINED_LIMIT_MB = 150  # above idle, 16 s after the attack (measured ~90; main kept ~400)
RETRYABLE = {"grpc RESOURCE_EXHAUSTED", "grpc UNAVAILABLE", "http 429", "http 503",
             "http ConnectionResetError", "http BrokenPipeError", "http URLError"}


def test_48_concurrent_15mb_requests_stay_within_the_bound_on_the_shipped_config():
    result = hostile_memory.run(hostile_memory.SHIPPED_CONFIG, requests=48, size_mb=15.0, rounds=1, settle=16.0)
    answers = result["answers"]
    assert result["peak_rss_mb"] < PEAK_LIMIT_MB, result
    assert result["after_rss_mb"] - result["idle_rss_mb"] < RETAINED_LIMIT_MB, result
    admitted = {kind: answers.get(ok, 0) for kind, ok in (("grpc", "grpc OK"), ("http", "http 200"))}
    assert sum(admitted.values()) >= 1, result  # the limit admits into an empty pipeline
    assert set(answers) - {"grpc OK", "http 200"} <= RETRYABLE, result
    # the gRPC requests all carry one body and the HTTP ones another (span ids repeat): each
    # admitted body is stored in full, once
    per_body = len(hostile_memory_body_span_ids())
    assert result["stored_spans"] == per_body * sum(1 for n in admitted.values() if n), result


def hostile_memory_body_span_ids() -> set[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(hostile_memory.big_request(15.0, 1))
    return {s.span_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
