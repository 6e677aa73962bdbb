"""collector/otlp_json.py decodes OTLP/JSON to exactly the spans the protobuf path gives."""

from __future__ import annotations

import base64
import json

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.model import spans_from_request, spans_to_request
from collector.otlp_json import DecodeFailure, spans_from_json


def rich_request() -> ExportTraceServiceRequest:
    """Every field and every AnyValue kind, with values that stress the JSON mapping."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rs.resource.dropped_attributes_count = 2
    rs.resource.attributes.add(key="service.name").value.string_value = "svc ✓"
    ss = rs.scope_spans.add(schema_url="s")
    ss.scope.name, ss.scope.version = "scope", "1.0"
    ss.scope.attributes.add(key="lib").value.bool_value = True
    span = ss.spans.add(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), parent_span_id=bytes(range(9, 17)),
                        trace_state="k=v", flags=0x101, name="chat", kind=3,
                        start_time_unix_nano=(1 << 63) + 5, end_time_unix_nano=(1 << 64) - 1,
                        dropped_attributes_count=1, dropped_events_count=2, dropped_links_count=3)
    attrs = span.attributes
    attrs.add(key="s").value.string_value = "text"
    attrs.add(key="i").value.int_value = -(1 << 63)
    attrs.add(key="d").value.double_value = 0.1
    attrs.add(key="b").value.bool_value = False
    attrs.add(key="raw").value.bytes_value = b"\x00\xffbytes"
    arr = attrs.add(key="arr").value.array_value
    arr.values.add().string_value = "a"
    arr.values.add().int_value = 7
    kv = attrs.add(key="kv").value.kvlist_value
    kv.values.add(key="inner").value.array_value.values.add().double_value = 1.5
    attrs.add(key="empty")
    event = span.events.add(name="gen_ai.choice", time_unix_nano=123, dropped_attributes_count=1)
    event.attributes.add(key="index").value.int_value = 0
    link = span.links.add(trace_id=bytes(range(2, 18)), span_id=bytes(range(2, 10)), trace_state="x=y", flags=1,
                          dropped_attributes_count=4)
    link.attributes.add(key="why").value.string_value = "follows"
    span.status.code = 2
    span.status.message = "boom"
    ss.spans.add(trace_id=bytes(16), span_id=b"\x01", name="invalid ids are kept for validation")
    return req


def to_otlp_json(req: ExportTraceServiceRequest, snake: bool = False) -> dict:
    data = json_format.MessageToDict(req, preserving_proto_field_name=snake)
    id_keys = ("trace_id", "span_id", "parent_span_id") if snake else ("traceId", "spanId", "parentSpanId")

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in id_keys and isinstance(v, str):
                    obj[k] = base64.b64decode(v).hex()
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(data)
    return data


@pytest.mark.parametrize("snake", [False, True])
def test_json_decodes_to_the_same_spans_as_protobuf(snake):
    req = rich_request()
    spans = spans_from_json(json.dumps(to_otlp_json(req, snake)).encode())
    assert spans_to_request(spans) == spans_to_request(spans_from_request(req))
    assert spans[0].attributes["raw"] == b"\x00\xffbytes" and spans[0].attributes["empty"] is None


def test_numbers_as_numbers_and_enums_as_numbers_are_accepted():
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "01" * 16, "spanId": "02" * 8, "kind": 2, "startTimeUnixNano": 5, "endTimeUnixNano": 6.0,
         "status": {"code": "STATUS_CODE_OK"},
         "attributes": [{"key": "n", "value": {"intValue": 3}}, {"key": "f", "value": {"doubleValue": "NaN"}}]}]}]}]}
    (span,) = spans_from_json(json.dumps(body).encode())
    assert (span.kind, span.start_time_unix_nano, span.end_time_unix_nano, span.status_code) == (2, 5, 6, 1)
    assert span.attributes["n"] == 3 and span.attributes["f"] != span.attributes["f"]


@pytest.mark.parametrize("span", [
    {"startTimeUnixNano": -1}, {"startTimeUnixNano": 1 << 64}, {"startTimeUnixNano": 1.5}, {"flags": 1 << 32},
    {"kind": 1 << 40}, {"kind": True}, {"attributes": [{"key": "x", "value": {"boolValue": "yes"}}]},
    {"attributes": [{"key": "x", "value": {"bytesValue": "not base64!"}}]},
    {"attributes": [{"key": 5, "value": {}}]}, {"events": {}}, {"status": []}, {"links": [{"traceId": 7}]},
])
def test_out_of_range_and_wrong_types_are_decode_failures(span):
    with pytest.raises(DecodeFailure):
        spans_from_json(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.text(alphabet="0123456789abcdefABCDEF-xz ", max_size=40), st.integers(-(1 << 70), 1 << 70))
def test_ids_and_integers_follow_the_protobuf_rules(hex_id, number):
    """Same verdict as protobuf's own JSON parser for integers; hex ids either parse or are invalid."""
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": hex_id, "startTimeUnixNano": str(number)}]}]}]}
    try:
        json_format.ParseDict({"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": str(number)}]}]}]},
                              ExportTraceServiceRequest())
        proto_ok = True
    except json_format.ParseError:
        proto_ok = False
    try:
        (span,) = spans_from_json(json.dumps(body).encode())
    except DecodeFailure:
        assert not proto_ok
        return
    assert proto_ok and span.start_time_unix_nano == number
    try:
        assert span.span_id == bytes.fromhex(hex_id)
    except ValueError:
        assert span.span_id == b"\x00"
