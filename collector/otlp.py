"""OTLP trace requests: decode (protobuf or OTLP/JSON), validate spans, build responses.

Shared by every transport so gRPC and HTTP behave the same.  Validation follows the spec's partial
success: a span with a trace id that is not 16 non-zero bytes, a span id that is not 8 non-zero
bytes, a parent id that is neither empty nor 8 bytes, or an end before its start is rejected and
counted; the rest of the request is kept.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from opentelemetry.proto.trace.v1 import trace_pb2

from collector.model import Span, spans_from_request

__all__ = ["DecodeFailure", "Decoded", "decode_protobuf", "decode_json", "validate_spans",
           "response_bytes", "status_bytes"]

_ZERO16, _ZERO8 = bytes(16), bytes(8)
_SPAN_KINDS = frozenset(trace_pb2.Span.SpanKind.keys())
_STATUS_CODES = frozenset(trace_pb2.Status.StatusCode.keys())
_MAX_ERRORS_LISTED = 5


class DecodeFailure(ValueError):
    """The request body is not a valid OTLP trace request; the message says why."""


@dataclass
class Decoded:
    spans: list[Span]
    rejected: int
    error_message: str


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise DecodeFailure(f"invalid protobuf ExportTraceServiceRequest: {exc}") from None
    return request


def _hex_to_b64(obj: dict, key: str) -> None:
    value = obj.get(key)
    if value is None:
        return
    if not isinstance(value, str):
        raise DecodeFailure(f"{key}: expected a hex string, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b"\x00"  # kept as an invalid id, so the span is rejected with partial success
    obj[key] = base64.b64encode(raw).decode()


def _fix_json_ids(data: dict) -> None:
    """OTLP/JSON carries ids as hex; protobuf's JSON mapping wants base64 for bytes fields."""
    for rs in _list(data, "resourceSpans", "resource_spans"):
        for ss in _list(rs, "scopeSpans", "scope_spans"):
            for span in _list(ss, "spans"):
                if not isinstance(span, dict):
                    raise DecodeFailure("spans: expected objects")
                for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                    _hex_to_b64(span, key)
                _check_enum(span, "kind", _SPAN_KINDS)
                status = span.get("status")
                if isinstance(status, dict):
                    _check_enum(status, "code", _STATUS_CODES)
                for link in _list(span, "links"):
                    if not isinstance(link, dict):
                        raise DecodeFailure("links: expected objects")
                    for key in ("traceId", "spanId", "trace_id", "span_id"):
                        _hex_to_b64(link, key)


def _check_enum(obj: dict, key: str, names: frozenset[str]) -> None:
    """Unknown enum names are errors, as in the Collector (protobuf's parser would drop them silently)."""
    value = obj.get(key)
    if isinstance(value, str) and value not in names:
        raise DecodeFailure(f"{key}: unknown enum value {value!r}")


def _list(obj, *keys) -> list:
    if not isinstance(obj, dict):
        raise DecodeFailure("expected a JSON object")
    for key in keys:
        value = obj.get(key)
        if value is not None:
            if not isinstance(value, list):
                raise DecodeFailure(f"{key}: expected an array")
            return value
    return []


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeFailure(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeFailure("invalid OTLP/JSON: the body must be a JSON object")
    _fix_json_ids(data)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeFailure(f"invalid OTLP/JSON: {exc}") from None
    return request


def _problem(span: Span) -> str | None:
    tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
    if len(tid) != 16 or tid == _ZERO16:
        return f"invalid trace id {tid.hex()!r} (must be 16 bytes, not all zero)"
    if len(sid) != 8 or sid == _ZERO8:
        return f"invalid span id {sid.hex()!r} (must be 8 bytes, not all zero)"
    if pid and len(pid) != 8:
        return f"invalid parent span id {pid.hex()!r} (must be empty or 8 bytes)"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return f"span {sid.hex()}: end time before start time"
    return None


def validate_spans(request: ExportTraceServiceRequest) -> Decoded:
    """Decode to the internal model and drop invalid spans (partial success)."""
    spans = spans_from_request(request)
    good: list[Span] = []
    problems: list[str] = []
    for span in spans:
        problem = _problem(span)
        if problem is None:
            good.append(span)
        else:
            problems.append(problem)
    message = ""
    if problems:
        listed = "; ".join(problems[:_MAX_ERRORS_LISTED])
        more = f" (and {len(problems) - _MAX_ERRORS_LISTED} more)" if len(problems) > _MAX_ERRORS_LISTED else ""
        message = f"{len(problems)} span(s) rejected: {listed}{more}"
    return Decoded(good, len(problems), message)


def response_bytes(decoded: Decoded | None, as_json: bool) -> bytes:
    response = ExportTraceServiceResponse()
    if decoded is not None and decoded.rejected:
        response.partial_success.rejected_spans = decoded.rejected
        response.partial_success.error_message = decoded.error_message
    if as_json:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def status_bytes(code: int, message: str, as_json: bool) -> bytes:
    """A ``google.rpc.Status`` body, as OTLP/HTTP wants for errors."""
    status = status_pb2.Status(code=code, message=message)
    if as_json:
        return json_format.MessageToJson(status, indent=None).encode()
    return status.SerializeToString()
