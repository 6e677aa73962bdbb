"""A span's every OTLP field leaves the collector exactly as it came in (no processors configured).

One collector fans out to the same fake upstream over ``otlp`` and ``otlphttp``; both copies are
compared with what the client sent, field by field, walking the protobuf descriptors so that a
field added to OTLP later is compared too.
"""

from __future__ import annotations

import signal
import time

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.upstream_support import Collector, FakeUpstream, OtlpClient


def kv(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def every_kind_of_attribute(prefix: str) -> list[KeyValue]:
    nested = AnyValue()
    nested.kvlist_value.values.extend([kv("inner", string_value="x"), kv("n", int_value=-3)])
    array = AnyValue()
    array.array_value.values.extend([AnyValue(string_value="a"), AnyValue(int_value=2), AnyValue(double_value=0.5),
                                     AnyValue(bool_value=False), nested])
    return [
        kv(f"{prefix}.str", string_value="héllo ✓ \u0000 end"),
        kv(f"{prefix}.int", int_value=-(2**63)),
        kv(f"{prefix}.double", double_value=1.25e-300),
        kv(f"{prefix}.bool", bool_value=True),
        kv(f"{prefix}.bytes", bytes_value=b"\x00\xff\x10"),
        KeyValue(key=f"{prefix}.array", value=array),
        KeyValue(key=f"{prefix}.kvlist", value=nested),
        KeyValue(key=f"{prefix}.empty", value=AnyValue()),
        kv(f"{prefix}.empty_string", string_value=""),
    ]


def full_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for r in range(2):
        rs = request.resource_spans.add()
        rs.schema_url = f"https://opentelemetry.io/schemas/1.2{r}.0"
        rs.resource.attributes.extend([kv("service.name", string_value=f"svc-{r}"), *every_kind_of_attribute("res")])
        rs.resource.dropped_attributes_count = 3 + r
        for s in range(2):
            ss = rs.scope_spans.add()
            ss.schema_url = f"https://example.com/scope/{r}/{s}"
            ss.scope.name = f"instrumentation-{s}"
            ss.scope.version = f"{s}.0.1"
            ss.scope.attributes.extend(every_kind_of_attribute("scope"))
            ss.scope.dropped_attributes_count = 7
            for i in range(3):
                span = ss.spans.add()
                span.trace_id = bytes([r + 1] * 8 + [s + 1] * 4 + [i + 1] * 4)
                span.span_id = bytes([r + 1, s + 1, i + 1, 9, 9, 9, 9, 9])
                span.parent_span_id = bytes([1, 2, 3, 4, 5, 6, 7, i + 1]) if i else b""
                span.trace_state = "vendor=abc,other=xyz"
                span.flags = 0x301  # sampled + has-is-remote + is-remote
                span.name = f"chat gpt-4o #{i}"
                span.kind = trace_pb2.Span.SPAN_KIND_CLIENT
                span.start_time_unix_nano = 1_700_000_000_123_456_789 + i
                span.end_time_unix_nano = 1_700_000_001_987_654_321 + i
                span.attributes.extend([kv("gen_ai.request.model", string_value="gpt-4o"),
                                        kv("gen_ai.usage.input_tokens", int_value=1234),
                                        *every_kind_of_attribute("span")])
                span.dropped_attributes_count = 11
                for e in range(2):
                    event = span.events.add()
                    event.name = f"gen_ai.choice.{e}"
                    event.time_unix_nano = 1_700_000_000_500_000_000 + e
                    event.attributes.extend(every_kind_of_attribute("event"))
                    event.dropped_attributes_count = e
                span.dropped_events_count = 5
                link = span.links.add()
                link.trace_id = bytes(range(1, 17))
                link.span_id = bytes(range(20, 28))
                link.trace_state = "k=v"
                link.attributes.extend(every_kind_of_attribute("link"))
                link.dropped_attributes_count = 2
                link.flags = 0x101
                span.dropped_links_count = 4
                span.status.code = (trace_pb2.Status.STATUS_CODE_OK, trace_pb2.Status.STATUS_CODE_ERROR,
                                    trace_pb2.Status.STATUS_CODE_UNSET)[i]
                span.status.message = "rate limited" if i == 1 else ""
    return request


def assert_same(sent: Message, got: Message, path: str = "request") -> int:
    """Compare every field of two messages recursively; returns how many leaf fields were compared."""
    compared = 0
    for field in sent.DESCRIPTOR.fields:
        where = f"{path}.{field.name}"
        a, b = getattr(sent, field.name), getattr(got, field.name)
        if field.is_repeated:
            assert len(a) == len(b), f"{where}: {len(a)} entries sent, {len(b)} received"
            for i, (x, y) in enumerate(zip(a, b)):
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    compared += assert_same(x, y, f"{where}[{i}]")
                else:
                    assert x == y, f"{where}[{i}]: sent {x!r}, received {y!r}"
                    compared += 1
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.containing_oneof is not None:
                assert sent.WhichOneof(field.containing_oneof.name) == got.WhichOneof(field.containing_oneof.name), \
                    f"{where}: value kind differs"
            compared += assert_same(a, b, where)
        else:
            if field.containing_oneof is not None:
                assert sent.WhichOneof(field.containing_oneof.name) == got.WhichOneof(field.containing_oneof.name), \
                    f"{where}: value kind differs"
            assert a == b, f"{where}: sent {a!r}, received {b!r}"
            compared += 1
    return compared


@pytest.fixture
def upstream():
    fake = FakeUpstream()
    yield fake
    fake.close()


def test_every_otlp_field_passes_through_unchanged(tmp_path, upstream):
    exporters = f"""  otlp:
    endpoint: "{upstream.grpc_endpoint}"
    tls: {{insecure: true}}
  otlphttp:
    endpoint: "{upstream.http_endpoint}"
    compression: none
"""
    collector = Collector(tmp_path, "passthrough", exporters, ["otlp", "otlphttp"]).start()
    try:
        client = OtlpClient(collector.grpc_port)
        sent = full_request()
        assert client.send(sent).name == "OK"
        client.close()
        want = {s.span_id for rs in sent.resource_spans for ss in rs.scope_spans for s in ss.spans}
        assert len(want) == 12
        assert not upstream.wait_for_spans(want, timeout=15)
        deadline = time.monotonic() + 15
        while len(upstream.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(upstream.requests) == 2, "one copy over gRPC, one over HTTP"
        by_transport = {("http" if "content-type" in h else "grpc"): r
                        for h, r in zip(upstream.headers, upstream.requests)}
        assert set(by_transport) == {"grpc", "http"}
        for transport, got in by_transport.items():
            # every value equal; only the wire presence of an *empty* sub-message (an unset status,
            # an empty AnyValue) is not kept, which OTLP gives no meaning
            assert assert_same(sent, got, transport) > 1000
    finally:
        collector.stop(signal.SIGTERM)
