"""OTLP requests of every signal: decode (protobuf or OTLP/JSON), validate, build responses.

Shared by every transport so gRPC and HTTP behave the same, and by every signal so traces, logs
and metrics behave the same: an :class:`OtlpSignal` holds what differs (service and path names,
message classes, decoders, what makes an item invalid, the partial-success field).

Validation follows the spec's partial success, the rest of the request is kept:
* spans: a trace id that is not 16 non-zero bytes, a span id that is not 8 non-zero bytes, a
  parent id that is neither empty nor 8 bytes, an end before its start, or a time past 2**63-1 ns
  (uint64 on the wire, int64 in every store);
* log records: a trace id that is neither empty nor 16 bytes, a span id neither empty nor 8 bytes
  (a record outside any trace is valid);
* metrics: the data points of a metric without a name (nothing can identify them).

Invalid UTF-8 in a string field costs only that value: it is stored with U+FFFD (protobuf: see
:mod:`collector.lenient_proto`; JSON: the body is read with replacement) and partial success
carries a warning with 0 rejected, as the spec allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.lenient_proto import parse_lenient
from collector.model import LOGS, METRICS, TRACES, Batch, Span, SpanBatch, spans_from_request
from collector.model_logs import LogBatch, LogRecord, records_from_request
from collector.model_metrics import MetricBatch, metric_points
from collector.otlp_json import DecodeFailure, metrics_from_json, records_from_json, spans_from_json

__all__ = ["DecodeFailure", "Decoded", "OtlpSignal", "OTLP_SIGNALS", "decode", "decode_protobuf",
           "validate_spans", "check_spans", "response_bytes", "status_bytes"]

_ZERO16, _ZERO8 = bytes(16), bytes(8)
MAX_TIME_UNIX_NANO = 2**63 - 1
"""Latest storable span time (int64 nanoseconds: 2262-04-11); later ones are rejected."""
_MAX_ERRORS_LISTED = 5


@dataclass
class Decoded:
    """The valid part of a request, and what partial success reports about the rest."""

    batch: Batch
    rejected: int
    error_message: str
    repaired: int = 0
    """String values whose invalid UTF-8 was replaced with U+FFFD (the items were kept)."""


@dataclass(frozen=True)
class OtlpSignal:
    """Everything about one signal that the receiver, the journal and the exporters need."""

    name: str
    grpc_service: str
    http_path: str
    request_class: type
    response_class: type
    rejected_field: str
    journal_tags: tuple[bytes, bytes]
    """(protobuf, JSON) tags of this signal's records in the intake journal."""
    from_json: Callable[[bytes], Any]
    """An OTLP/JSON body to the decoded form: items (spans, records) or, for metrics, the request."""
    from_request: Callable[[Any], Any]
    """A protobuf request message to the same decoded form."""
    validate: Callable[[Any, int], tuple[Batch, int, list[str]]]
    """The decoded form (and its encoded size) to (valid batch, rejected count, problems)."""

    def decode_protobuf(self, body: bytes):
        return self.parse_protobuf(body)[0]

    def parse_protobuf(self, body: bytes) -> tuple[Any, int]:
        """The request and how many string values had invalid UTF-8 (repaired with U+FFFD)."""
        try:
            return parse_lenient(self.request_class, body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise DecodeFailure(f"invalid protobuf {self.request_class.__name__}: {exc}") from None

    def parse_json(self, body: bytes) -> tuple[Any, int]:
        """The decoded form of an OTLP/JSON body; one that is not valid UTF-8 is read with U+FFFD
        for the bad bytes (1 repaired), so a bad string costs only itself, as with protobuf."""
        try:
            return self.from_json(body), 0
        except DecodeFailure:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                return self.from_json(body.decode("utf-8", "replace").encode("utf-8")), 1
            raise


def _listed(problems: list[str], rejected: int, unit: str) -> str:
    if not rejected:
        return ""
    listed = "; ".join(problems[:_MAX_ERRORS_LISTED])
    more = f" (and {len(problems) - _MAX_ERRORS_LISTED} more)" if len(problems) > _MAX_ERRORS_LISTED else ""
    return f"{rejected} {unit} rejected: {listed}{more}"


# -- traces -------------------------------------------------------------------------------------


def _span_problem(span: Span) -> str | None:
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


def _record_problem(record: LogRecord) -> str | None:
    tid, sid = record.trace_id, record.span_id
    if len(tid) not in (0, 16):
        return f"invalid trace id {tid.hex()!r} (must be empty or 16 bytes)"
    if len(sid) not in (0, 8):
        return f"invalid span id {sid.hex()!r} (must be empty or 8 bytes)"
    return None


def _split(items: list, problem: Callable[[Any], str | None]) -> tuple[list, int, list[str]]:
    good: list = []
    problems: list[str] = []
    for item in items:
        p = problem(item)
        if p is None:
            good.append(item)
        else:
            problems.append(p)
    return good, len(problems), problems


def check_spans(spans: list[Span]) -> Decoded:
    """Split decoded spans into the valid ones and a count + message for the rejected ones."""
    good, rejected, problems = _split(spans, _span_problem)
    return Decoded(SpanBatch(good), rejected, _listed(problems, rejected, "span(s)"))


def _spans(spans: list[Span], nbytes: int) -> tuple[Batch, int, list[str]]:
    good, rejected, problems = _split(spans, _span_problem)
    return SpanBatch(good, nbytes), rejected, problems


def _records(records: list[LogRecord], nbytes: int) -> tuple[Batch, int, list[str]]:
    good, rejected, problems = _split(records, _record_problem)
    return LogBatch(good, nbytes), rejected, problems


def _metrics(request: ExportMetricsServiceRequest, nbytes: int) -> tuple[Batch, int, list[str]]:
    """Drop unnamed metrics (in place); their data points are the rejected count."""
    rejected = 0
    problems: list[str] = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            bad = [i for i, m in enumerate(sm.metrics) if not m.name]
            for i in reversed(bad):
                rejected += metric_points(sm.metrics[i])
                problems.append("a metric without a name")
                del sm.metrics[i]
    return MetricBatch.from_request(request, nbytes), rejected, problems


TRACES_SIGNAL = OtlpSignal(
    TRACES, "opentelemetry.proto.collector.trace.v1.TraceService", "/v1/traces",
    ExportTraceServiceRequest, ExportTraceServiceResponse, "rejected_spans", (b"P", b"J"),
    spans_from_json, spans_from_request, _spans)
LOGS_SIGNAL = OtlpSignal(
    LOGS, "opentelemetry.proto.collector.logs.v1.LogsService", "/v1/logs",
    ExportLogsServiceRequest, ExportLogsServiceResponse, "rejected_log_records", (b"L", b"l"),
    records_from_json, records_from_request, _records)
METRICS_SIGNAL = OtlpSignal(
    METRICS, "opentelemetry.proto.collector.metrics.v1.MetricsService", "/v1/metrics",
    ExportMetricsServiceRequest, ExportMetricsServiceResponse, "rejected_data_points", (b"M", b"m"),
    metrics_from_json, lambda request: request, _metrics)

OTLP_SIGNALS: dict[str, OtlpSignal] = {s.name: s for s in (TRACES_SIGNAL, LOGS_SIGNAL, METRICS_SIGNAL)}
_UNITS = {TRACES: "span(s)", LOGS: "log record(s)", METRICS: "data point(s)"}


def decode(body: bytes, as_json: bool, signal: str = TRACES) -> Decoded:
    """A request body (OTLP/JSON or protobuf) to its valid part; raises DecodeFailure."""
    sig = OTLP_SIGNALS[signal]
    try:
        if as_json:
            parsed, repaired = sig.parse_json(body)
        else:
            request, repaired = sig.parse_protobuf(body)
            parsed = sig.from_request(request)
        batch, rejected, problems = sig.validate(parsed, len(body))
    except RecursionError:
        raise DecodeFailure("request nested too deeply") from None
    message = _listed(problems, rejected, _UNITS[signal])
    if repaired:
        note = f"{repaired} string value(s) with invalid UTF-8 stored with U+FFFD"
        message = f"{message}; {note}" if message else note
    return Decoded(batch, rejected, message, repaired)


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    return TRACES_SIGNAL.decode_protobuf(body)


def validate_spans(request: ExportTraceServiceRequest) -> Decoded:
    """Decode to the internal model and drop invalid spans (partial success)."""
    return check_spans(spans_from_request(request))


def response_bytes(decoded: Decoded | None, as_json: bool, signal: str = TRACES) -> bytes:
    sig = OTLP_SIGNALS[signal]
    response = sig.response_class()
    if decoded is not None and decoded.error_message:  # with 0 rejected: a warning (the spec allows it)
        setattr(response.partial_success, sig.rejected_field, decoded.rejected)
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
