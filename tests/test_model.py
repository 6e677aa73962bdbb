"""The internal span model keeps every OTLP field: decode then encode gives the same request."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from collector.model import spans_from_request, spans_to_request, value_from_proto, value_to_proto


def kv(container, key, **value):
    item = container.add()
    item.key = key
    for kind, v in value.items():
        if kind == "array":
            for x in v:
                item.value.array_value.values.add().string_value = x
        elif kind == "kvlist":
            for k2, x in v.items():
                sub = item.value.kvlist_value.values.add()
                sub.key = k2
                sub.value.int_value = x
        else:
            setattr(item.value, kind, v)


def full_request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(2):
        rs = req.resource_spans.add()
        rs.schema_url = f"https://opentelemetry.io/schemas/1.{r}"
        kv(rs.resource.attributes, "service.name", string_value=f"svc{r}")
        rs.resource.dropped_attributes_count = 3
        for s in range(2):
            ss = rs.scope_spans.add()
            ss.schema_url = "scope-schema"
            ss.scope.name, ss.scope.version = f"lib{s}", "1.2.3"
            kv(ss.scope.attributes, "scope.attr", bool_value=True)
            ss.scope.dropped_attributes_count = 1
            span = ss.spans.add()
            span.trace_id, span.span_id, span.parent_span_id = bytes(range(16)), bytes(range(1, 9)), b"\x09" * 8
            span.trace_state, span.flags, span.name, span.kind = "k=v", 257, "chat gpt-4o", trace_pb2.Span.SPAN_KIND_CLIENT
            span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
            kv(span.attributes, "s", string_value="text ünïcode")
            kv(span.attributes, "i", int_value=-(2**63))
            kv(span.attributes, "d", double_value=0.25)
            kv(span.attributes, "b", bool_value=False)
            kv(span.attributes, "raw", bytes_value=b"\x00\xff")
            kv(span.attributes, "arr", array=["a", "b"])
            kv(span.attributes, "map", kvlist={"x": 1})
            span.attributes.add().key = "empty"
            span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count = 1, 2, 3
            ev = span.events.add()
            ev.name, ev.time_unix_nano, ev.dropped_attributes_count = "gen_ai.choice", 5, 4
            kv(ev.attributes, "index", int_value=0)
            link = span.links.add()
            link.trace_id, link.span_id, link.trace_state, link.flags = b"\x01" * 16, b"\x02" * 8, "a=b", 1
            link.dropped_attributes_count = 7
            kv(link.attributes, "why", string_value="retry")
            span.status.code, span.status.message = trace_pb2.Status.STATUS_CODE_ERROR, "boom"
    return req


def test_round_trip_keeps_every_field():
    original = full_request()
    again = spans_to_request(spans_from_request(original))
    assert again == original


def test_decoded_spans_have_every_slot_set_as_the_constructor_would():
    """spans_from_request fills the slots directly (fast path): none may be left unset."""
    from collector.model import Span

    for span in spans_from_request(full_request()):
        built = Span(resource=span.resource, scope=span.scope, trace_id=span.trace_id, span_id=span.span_id)
        for slot in Span.__slots__:
            value = getattr(span, slot)  # AttributeError if the fast path forgot a slot
            assert type(value) is type(getattr(built, slot)) or getattr(built, slot) in ("", 0, b"", None), slot
        assert span.genai is None
    empty = ExportTraceServiceRequest()
    empty.resource_spans.add().scope_spans.add().spans.add().name = "bare"
    (bare,) = spans_from_request(empty)
    assert (bare.events, bare.links, bare.attributes, bare.parent_span_id, bare.status_code) == ([], [], {}, b"", 0)


def test_attribute_values_map_to_python_types():
    spans = spans_from_request(full_request())
    attrs = spans[0].attributes
    assert attrs == {"s": "text ünïcode", "i": -(2**63), "d": 0.25, "b": False, "raw": b"\x00\xff",
                     "arr": ["a", "b"], "map": {"x": 1}, "empty": None}
    assert spans[0].resource is spans[1].resource  # shared, so encoding regroups them
    assert spans[0].service_name == "svc0"


def test_python_values_that_do_not_fit_int64_become_strings():
    out = AnyValue()
    value_to_proto(2**70, out)
    assert value_from_proto(out) == str(2**70)
