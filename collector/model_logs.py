"""The internal log model: OTLP log records decoded once, carried through the chain, encoded back.

Same reasons and rules as the span model (:mod:`collector.model`): a plain object per record with
``dict`` attributes, because processors (redaction, sampling, the GenAI content join) read and
rewrite attributes and bodies; every OTLP field is kept so an upstream exporter sends out what came
in.  The body is an ``AnyValue`` mapped to Python like attribute values (``None`` when unset), so a
prompt in a body is the same ``str`` / ``dict`` / ``list`` a processor finds in an attribute.

Resource and scope objects are shared by identity between the records decoded from one
ResourceLogs / ScopeLogs, and encoding regroups records by them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from collector.model import (
    LOGS,
    UNITS,
    Batch,
    Resource,
    Scope,
    attributes_from_proto,
    attributes_to_proto,
    regroup_to_proto,
    resource_from_proto,
    scope_from_proto,
    value_from_proto,
    value_to_proto,
)

if TYPE_CHECKING:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

__all__ = ["LogRecord", "LogBatch", "records_from_request", "records_to_request"]


class LogRecord:
    """One OTLP LogRecord with its resource and scope.

    ``event_name`` is the LogRecord field (newer SDKs); older ones put the event name in the
    ``event.name`` attribute: :attr:`name` reads either.
    """

    __slots__ = (
        "resource", "scope", "time_unix_nano", "observed_time_unix_nano", "severity_number",
        "severity_text", "body", "attributes", "dropped_attributes_count", "flags", "trace_id",
        "span_id", "event_name",
    )

    def __init__(
        self,
        *,
        resource: Resource,
        scope: Scope,
        time_unix_nano: int = 0,
        observed_time_unix_nano: int = 0,
        severity_number: int = 0,
        severity_text: str = "",
        body: Any = None,
        attributes: dict[str, Any] | None = None,
        dropped_attributes_count: int = 0,
        flags: int = 0,
        trace_id: bytes = b"",
        span_id: bytes = b"",
        event_name: str = "",
    ) -> None:
        self.resource = resource
        self.scope = scope
        self.time_unix_nano = time_unix_nano
        self.observed_time_unix_nano = observed_time_unix_nano
        self.severity_number = severity_number
        self.severity_text = severity_text
        self.body = body
        self.attributes = attributes if attributes is not None else {}
        self.dropped_attributes_count = dropped_attributes_count
        self.flags = flags
        self.trace_id = trace_id
        self.span_id = span_id
        self.event_name = event_name

    @property
    def name(self) -> str:
        """The event name: the ``event_name`` field, else the older ``event.name`` attribute."""
        if self.event_name:
            return self.event_name
        value = self.attributes.get("event.name")
        return value if isinstance(value, str) else ""

    @property
    def service_name(self) -> str | None:
        return self.resource.service_name

    def __repr__(self) -> str:
        return f"LogRecord({self.name or self.severity_text!r}, trace={self.trace_id.hex()}, span={self.span_id.hex()})"


class LogBatch(Batch):
    """A list of log records."""

    __slots__ = ()
    signal = LOGS
    unit = UNITS[LOGS]

    @property
    def records(self) -> list[LogRecord]:
        return self._items

    def to_request(self) -> ExportLogsServiceRequest:
        return records_to_request(self.records)


def records_from_request(request: ExportLogsServiceRequest) -> list[LogRecord]:
    """Decode every log record of a request, without validation (see ``collector.otlp``)."""
    records: list[LogRecord] = []
    for rl in request.resource_logs:
        resource = resource_from_proto(rl)
        for sl in rl.scope_logs:
            scope = scope_from_proto(sl)
            for p in sl.log_records:
                records.append(LogRecord(
                    resource=resource, scope=scope,
                    time_unix_nano=p.time_unix_nano,
                    observed_time_unix_nano=p.observed_time_unix_nano,
                    severity_number=p.severity_number,
                    severity_text=p.severity_text,
                    body=value_from_proto(p.body) if p.HasField("body") else None,
                    attributes=attributes_from_proto(p.attributes),
                    dropped_attributes_count=p.dropped_attributes_count,
                    flags=p.flags,
                    trace_id=p.trace_id,
                    span_id=p.span_id,
                    event_name=p.event_name,
                ))
    return records


def _record_to_proto(record: LogRecord, out) -> None:
    out.time_unix_nano = record.time_unix_nano
    out.observed_time_unix_nano = record.observed_time_unix_nano
    out.severity_number = record.severity_number
    out.severity_text = record.severity_text
    if record.body is not None:
        value_to_proto(record.body, out.body)
    attributes_to_proto(record.attributes, out.attributes)
    out.dropped_attributes_count = record.dropped_attributes_count
    out.flags = record.flags
    out.trace_id = record.trace_id
    out.span_id = record.span_id
    out.event_name = record.event_name


def records_to_request(records: Iterable[LogRecord]) -> ExportLogsServiceRequest:
    """Encode records back to OTLP, regrouped by their (shared) resource and scope objects."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    regroup_to_proto(records, request.resource_logs, "scope_logs", "log_records", _record_to_proto)
    return request
