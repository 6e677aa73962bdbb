"""The internal span model: decoded once from OTLP, carried through every stage, encoded back.

Why not pass protobuf messages along?  Processors read and write attributes many times per span;
protobuf's repeated KeyValue lists make every lookup a linear scan and every write an allocation.
A plain ``dict`` per span is what Python is fast at.  The model keeps *every* OTLP field so that an
upstream exporter can send out exactly what came in (plus enrichment, minus redaction).

Attribute values map to Python types losslessly: string -> ``str``, bool -> ``bool``, int ->
``int``, double -> ``float``, bytes -> ``bytes``, array -> ``list``, kvlist -> ``dict``, empty ->
``None``.

The canonical GenAI fields (see docs/genai.md, "Canonical fields") live in :class:`GenAI`, filled by the
``genai_normalize`` processor and enriched by the cost, token-rate and session processors; storage
exporters turn them into columns.  ``span.genai`` is ``None`` for spans that are not LLM calls.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

if TYPE_CHECKING:  # protobuf loads only where spans are encoded: the query CLI imports this too
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "SIGNALS", "TRACES", "LOGS", "METRICS", "UNITS", "Batch",
    "Resource", "Scope", "Event", "Link", "GenAI", "Span", "SpanBatch",
    "attributes_from_proto", "attributes_to_proto", "value_from_proto", "value_to_proto",
    "LLM_OPERATIONS",
]

TRACES, LOGS, METRICS = "traces", "logs", "metrics"
SIGNALS: tuple[str, ...] = (TRACES, LOGS, METRICS)
"""The OTLP signals, as pipeline ids spell them (``traces``, ``logs/audit``...)."""
UNITS: dict[str, str] = {TRACES: "spans", LOGS: "log_records", METRICS: "metric_points"}
"""What counters count per signal, as the OTel Collector names them (``otelcol_exporter_sent_spans``)."""

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
STATUS_NAMES = {STATUS_UNSET: "unset", STATUS_OK: "ok", STATUS_ERROR: "error"}
KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
"""``gen_ai.operation.name`` values that count as a turn (an LLM call) in the rollups and queries."""


@dataclass(slots=True, eq=False)
class Resource:
    """Resource of a ResourceSpans; shared (by identity) by all spans decoded from it."""

    attributes: dict[str, Any] = field(default_factory=dict)
    dropped_attributes_count: int = 0
    schema_url: str = ""

    @property
    def service_name(self) -> str | None:
        value = self.attributes.get("service.name")
        return value if isinstance(value, str) else None


@dataclass(slots=True, eq=False)
class Scope:
    """Instrumentation scope of a ScopeSpans; shared by identity like :class:`Resource`."""

    name: str = ""
    version: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    dropped_attributes_count: int = 0
    schema_url: str = ""


@dataclass(slots=True)
class Event:
    name: str
    time_unix_nano: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)
    dropped_attributes_count: int = 0


@dataclass(slots=True)
class Link:
    trace_id: bytes
    span_id: bytes
    trace_state: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    dropped_attributes_count: int = 0
    flags: int = 0


@dataclass(slots=True)
class GenAI:
    """Canonical GenAI fields of one span, whatever dialect it arrived in.

    Token counts follow the OTel conventions: cache_read / cache_write are slices of
    ``input_tokens`` and reasoning is a slice of ``output_tokens``, not additions.
    Messages are the structured OTel form: ``[{"role": ..., "parts": [{"type": "text", ...}]}]``.
    """

    provider: str | None = None
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    ttft_ms: float | None = None
    output_tokens_per_second: float | None = None
    session_id: str | None = None
    user_id: str | None = None
    error_type: str | None = None
    input_messages: list[dict[str, Any]] | None = None
    output_messages: list[dict[str, Any]] | None = None
    system_instructions: list[dict[str, Any]] | None = None

    @property
    def model(self) -> str | None:
        """The model that served the call (Langfuse's precedence: response, then request)."""
        return self.response_model or self.request_model


GENAI_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(GenAI))


class Span:
    """One span.  ``__slots__`` keeps it small and fast: tens of thousands are alive at once."""

    __slots__ = (
        "resource", "scope", "trace_id", "span_id", "parent_span_id", "trace_state", "flags",
        "name", "kind", "start_time_unix_nano", "end_time_unix_nano", "attributes",
        "dropped_attributes_count", "events", "dropped_events_count", "links",
        "dropped_links_count", "status_code", "status_message", "genai",
    )

    def __init__(
        self,
        *,
        resource: Resource,
        scope: Scope,
        trace_id: bytes,
        span_id: bytes,
        name: str = "",
        parent_span_id: bytes = b"",
        trace_state: str = "",
        flags: int = 0,
        kind: int = 0,
        start_time_unix_nano: int = 0,
        end_time_unix_nano: int = 0,
        attributes: dict[str, Any] | None = None,
        dropped_attributes_count: int = 0,
        events: list[Event] | None = None,
        dropped_events_count: int = 0,
        links: list[Link] | None = None,
        dropped_links_count: int = 0,
        status_code: int = STATUS_UNSET,
        status_message: str = "",
        genai: GenAI | None = None,
    ) -> None:
        self.resource = resource
        self.scope = scope
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.trace_state = trace_state
        self.flags = flags
        self.name = name
        self.kind = kind
        self.start_time_unix_nano = start_time_unix_nano
        self.end_time_unix_nano = end_time_unix_nano
        self.attributes = attributes if attributes is not None else {}
        self.dropped_attributes_count = dropped_attributes_count
        self.events = events if events is not None else []
        self.dropped_events_count = dropped_events_count
        self.links = links if links is not None else []
        self.dropped_links_count = dropped_links_count
        self.status_code = status_code
        self.status_message = status_message
        self.genai = genai

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_time_unix_nano - self.start_time_unix_nano) / 1e6

    @property
    def service_name(self) -> str | None:
        return self.resource.service_name

    def __repr__(self) -> str:
        return f"Span({self.name!r}, trace={self.trace_id.hex()}, span={self.span_id.hex()})"


class Batch:
    """The unit that moves between pipeline stages, whatever the signal.

    The pipeline, the fan-out and the upstream exporters handle every signal through this
    interface only: ``len`` (what the counters count: spans, log records, metric data points),
    ``items`` (the pieces a batch can be cut into), ``merge``, ``copy`` and ``to_request``.
    ``nbytes`` is the encoded size the batch arrived with; admission (memory_limiter) counts it.
    """

    __slots__ = ("_items", "nbytes", "__weakref__")  # weakref: exporters key retry state by batch
    signal: ClassVar[str]
    unit: ClassVar[str]
    """Counter unit, as the OTel Collector names it: ``spans``, ``log_records``, ``metric_points``."""

    def __init__(self, items: list | None = None, nbytes: int = 0) -> None:
        self._items = items if items is not None else []
        self.nbytes = nbytes

    @property
    def items(self) -> list:
        """The list a batch is made of and can be split into (spans, log records, ResourceMetrics)."""
        return self._items

    def with_items(self, items: list, nbytes: int = 0) -> "Batch":
        """A batch of the same signal holding ``items``."""
        return type(self)(items, nbytes)

    @classmethod
    def merge(cls, batches: Sequence["Batch"]) -> "Batch":
        """One batch with the items of ``batches`` in order (their ``nbytes`` summed)."""
        if len(batches) == 1:
            return batches[0]
        items: list = []
        for b in batches:
            items.extend(b.items)
        return cls(items, sum(b.nbytes for b in batches))

    def copy(self) -> "Batch":
        """A deep copy, for a second pipeline (processors modify items in place)."""
        return type(self)(copy.deepcopy(self.items), self.nbytes)

    def to_request(self):
        """The OTLP ``Export*ServiceRequest`` protobuf message for this batch."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} {self.unit}, {self.nbytes} bytes)"


class SpanBatch(Batch):
    """A list of spans."""

    __slots__ = ()
    signal = TRACES
    unit = UNITS[TRACES]

    @property
    def spans(self) -> list[Span]:
        return self._items

    def to_request(self) -> ExportTraceServiceRequest:
        return spans_to_request(self.spans)


# ---------------------------------------------------------------------------------------------
# protobuf <-> model


def value_from_proto(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [value_from_proto(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_from_proto(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value
    return None


def attributes_from_proto(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """Decode a repeated KeyValue; the common scalar kinds are inlined because this is the hot path.

    A non-empty ``string_value`` can only be there when the value is a string (oneof), so most
    attributes are decoded without the ``WhichOneof`` call: 21 -> 17 us per span of the bench mix.
    """
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        text = v.string_value
        if text:
            out[kv.key] = text
            continue
        kind = v.WhichOneof("value")
        if kind == "int_value":
            out[kv.key] = v.int_value
        elif kind == "string_value":
            out[kv.key] = text
        else:
            out[kv.key] = value_from_proto(v)
    return out


def value_to_proto(value: Any, out: AnyValue) -> None:
    """Fill ``out`` from a Python value (the inverse of :func:`value_from_proto`)."""
    if value is None:
        return
    if isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            out.int_value = value
        else:
            out.string_value = str(value)
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, (bytes, bytearray)):
        out.bytes_value = bytes(value)
    elif isinstance(value, dict):
        kvl = out.kvlist_value
        kvl.SetInParent()
        for k, v in value.items():
            kv = kvl.values.add()
            kv.key = str(k)
            value_to_proto(v, kv.value)
    elif isinstance(value, (list, tuple)):
        arr = out.array_value
        arr.SetInParent()
        for v in value:
            value_to_proto(v, arr.values.add())
    else:
        out.string_value = str(value)


def attributes_to_proto(attributes: dict[str, Any], out) -> None:
    """Append ``attributes`` to a repeated KeyValue field ``out``."""
    for key, value in attributes.items():
        kv = out.add()
        kv.key = key
        value_to_proto(value, kv.value)


def resource_from_proto(container) -> Resource:
    """The Resource of a Resource{Spans,Logs,Metrics} message (with its schema_url)."""
    r = container.resource
    return Resource(attributes_from_proto(r.attributes), r.dropped_attributes_count, container.schema_url)


def scope_from_proto(container) -> Scope:
    """The Scope of a Scope{Spans,Logs,Metrics} message (with its schema_url)."""
    s = container.scope
    return Scope(s.name, s.version, attributes_from_proto(s.attributes), s.dropped_attributes_count,
                 container.schema_url)


def resource_to_proto(resource: Resource, out) -> None:
    """Fill a Resource{Spans,Logs,Metrics}'s resource and schema_url."""
    attributes_to_proto(resource.attributes, out.resource.attributes)
    out.resource.dropped_attributes_count = resource.dropped_attributes_count
    out.schema_url = resource.schema_url


def scope_to_proto(scope: Scope, out) -> None:
    """Fill a Scope{Spans,Logs,Metrics}'s scope and schema_url."""
    out.scope.name = scope.name
    out.scope.version = scope.version
    attributes_to_proto(scope.attributes, out.scope.attributes)
    out.scope.dropped_attributes_count = scope.dropped_attributes_count
    out.schema_url = scope.schema_url


def spans_from_request(request: ExportTraceServiceRequest) -> list[Span]:
    """Decode every span of a request, without validation (see ``collector.otlp`` for that)."""
    spans: list[Span] = []
    append = spans.append
    new_span = object.__new__
    for rs in request.resource_spans:
        resource = resource_from_proto(rs)
        for ss in rs.scope_spans:
            scope = scope_from_proto(ss)
            for p in ss.spans:
                # Slots set directly instead of Span(**20 keywords): 2.7 -> 1.3 us per span.
                # Every slot of Span must be set here (tests/test_model.py checks).
                span = new_span(Span)
                span.resource = resource
                span.scope = scope
                span.trace_id = p.trace_id
                span.span_id = p.span_id
                span.parent_span_id = p.parent_span_id
                span.trace_state = p.trace_state
                span.flags = p.flags
                span.name = p.name
                span.kind = p.kind
                span.start_time_unix_nano = p.start_time_unix_nano
                span.end_time_unix_nano = p.end_time_unix_nano
                span.attributes = attributes_from_proto(p.attributes)
                span.dropped_attributes_count = p.dropped_attributes_count
                events, links = p.events, p.links
                span.events = [Event(e.name, e.time_unix_nano, attributes_from_proto(e.attributes),
                                     e.dropped_attributes_count) for e in events] if events else []
                span.dropped_events_count = p.dropped_events_count
                span.links = [Link(lk.trace_id, lk.span_id, lk.trace_state,
                                   attributes_from_proto(lk.attributes), lk.dropped_attributes_count,
                                   lk.flags) for lk in links] if links else []
                span.dropped_links_count = p.dropped_links_count
                st = p.status
                span.status_code = st.code
                span.status_message = st.message
                span.genai = None
                append(span)
    return spans


def span_to_proto(span: Span, out: trace_pb2.Span) -> None:
    out.trace_id = span.trace_id
    out.span_id = span.span_id
    out.parent_span_id = span.parent_span_id
    out.trace_state = span.trace_state
    out.flags = span.flags
    out.name = span.name
    out.kind = span.kind
    out.start_time_unix_nano = span.start_time_unix_nano
    out.end_time_unix_nano = span.end_time_unix_nano
    attributes_to_proto(span.attributes, out.attributes)
    out.dropped_attributes_count = span.dropped_attributes_count
    for e in span.events:
        pe = out.events.add()
        pe.name = e.name
        pe.time_unix_nano = e.time_unix_nano
        attributes_to_proto(e.attributes, pe.attributes)
        pe.dropped_attributes_count = e.dropped_attributes_count
    out.dropped_events_count = span.dropped_events_count
    for lk in span.links:
        pl = out.links.add()
        pl.trace_id = lk.trace_id
        pl.span_id = lk.span_id
        pl.trace_state = lk.trace_state
        attributes_to_proto(lk.attributes, pl.attributes)
        pl.dropped_attributes_count = lk.dropped_attributes_count
        pl.flags = lk.flags
    out.dropped_links_count = span.dropped_links_count
    if span.status_code or span.status_message:
        out.status.code = span.status_code
        out.status.message = span.status_message


def regroup_to_proto(items: Iterable[Any], resources, scopes_field: str, items_field: str, fill) -> None:
    """Append ``items`` (spans, log records) to a repeated Resource{Spans,Logs} field ``resources``,
    grouped by their shared resource and scope objects; ``fill(item, message)`` encodes one item."""
    by_resource: dict[int, Any] = {}
    by_scope: dict[tuple[int, int], Any] = {}
    for item in items:
        rkey = id(item.resource)
        skey = (rkey, id(item.scope))
        container = by_scope.get(skey)
        if container is None:
            rc = by_resource.get(rkey)
            if rc is None:
                rc = by_resource[rkey] = resources.add()
                resource_to_proto(item.resource, rc)
            sc = getattr(rc, scopes_field).add()
            scope_to_proto(item.scope, sc)
            container = by_scope[skey] = getattr(sc, items_field)
        fill(item, container.add())


def spans_to_request(spans: Iterable[Span]) -> ExportTraceServiceRequest:
    """Encode spans back to OTLP, regrouped by their (shared) resource and scope objects."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    regroup_to_proto(spans, request.resource_spans, "scope_spans", "spans", span_to_proto)
    return request
