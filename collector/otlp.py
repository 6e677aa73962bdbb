"""OTLP trace requests: decode (protobuf or OTLP/JSON), validate spans, build responses.

Shared by every transport so gRPC and HTTP behave the same.  Validation follows the spec's partial
success: a span with a trace id that is not 16 non-zero bytes, a span id that is not 8 non-zero
bytes, a parent id that is neither empty nor 8 bytes, an end before its start or a time past
2**63-1 ns (uint64 on the wire, int64 in every store) is rejected and counted; the rest of the
request is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.lenient_proto import parse_lenient
from collector.model import Span, spans_from_request
from collector.otlp_json import DecodeFailure, spans_from_json

__all__ = ["DecodeFailure", "Decoded", "decode", "decode_protobuf", "validate_spans", "check_spans",
           "response_bytes", "status_bytes"]

_ZERO16, _ZERO8 = bytes(16), bytes(8)
MAX_TIME_UNIX_NANO = 2**63 - 1
"""Latest storable span time (int64 nanoseconds: 2262-04-11); later ones are rejected."""
_MAX_ERRORS_LISTED = 5


@dataclass
class Decoded:
    spans: list[Span]
    rejected: int
    error_message: str
    repaired: int = 0  # string values whose invalid UTF-8 was replaced with U+FFFD


def _parse_protobuf(body: bytes) -> tuple[ExportTraceServiceRequest, int]:
    """The request and how many string values had invalid UTF-8 (repaired with U+FFFD, see
    :mod:`collector.lenient_proto`)."""
    try:
        return parse_lenient(ExportTraceServiceRequest, body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise DecodeFailure(f"invalid protobuf ExportTraceServiceRequest: {exc}") from None


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    return _parse_protobuf(body)[0]


def _json_spans(body: bytes) -> tuple[list[Span], int]:
    """OTLP/JSON spans; a body that is not valid UTF-8 is read with U+FFFD for the bad bytes
    (1 repaired), so one bad string costs only itself, as with protobuf."""
    try:
        return spans_from_json(body), 0
    except DecodeFailure:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return spans_from_json(body.decode("utf-8", "replace").encode("utf-8")), 1
        raise


def decode(body: bytes, as_json: bool) -> Decoded:
    """A request body (OTLP/JSON or protobuf) to its valid spans; raises DecodeFailure."""
    try:
        if as_json:
            spans, repaired = _json_spans(body)
        else:
            request, repaired = _parse_protobuf(body)
            spans = spans_from_request(request)
    except RecursionError:
        raise DecodeFailure("request nested too deeply") from None
    decoded = check_spans(spans)
    if repaired:
        decoded.repaired = repaired
        note = f"{repaired} string value(s) with invalid UTF-8 stored with U+FFFD"
        decoded.error_message = f"{decoded.error_message}; {note}" if decoded.error_message else note
    return decoded


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
    if span.end_time_unix_nano > MAX_TIME_UNIX_NANO:
        return f"span {sid.hex()}: time {span.end_time_unix_nano} ns is past 2262-04-11 (not storable)"
    return None


def validate_spans(request: ExportTraceServiceRequest) -> Decoded:
    """Decode to the internal model and drop invalid spans (partial success)."""
    return check_spans(spans_from_request(request))


def check_spans(spans: list[Span]) -> Decoded:
    """Split decoded spans into the valid ones and a count + message for the rejected ones."""
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
    if decoded is not None and decoded.error_message:  # with 0 rejected: a warning (the spec allows it)
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
