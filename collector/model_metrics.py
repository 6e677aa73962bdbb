"""The internal metrics model: the decoded ``ResourceMetrics`` messages, plus a light typed view.

Why metrics stay protobuf messages when spans and log records become Python objects: nothing in
this collector rewrites metric data points (the GenAI processors, redaction and sampling work on
spans and logs), while the metric schema is large (gauge, sum, histogram, exponential histogram,
summary, exemplars, flags, oneof int/double values).  A Python copy of all of it would cost a
decode and an encode per point for no reader, and every field it forgot would be lost upstream.
Keeping the messages means an upstream exporter re-sends every field unchanged, by construction.

Readers that want names and attributes (the debug exporter, a Prometheus exporter, a connector)
iterate :meth:`MetricBatch.metrics`: one :class:`MetricView` per metric with its decoded resource
and scope (shared per ResourceMetrics / ScopeMetrics, like spans') and the metric message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from collector.model import METRICS, UNITS, Batch, Resource, Scope, resource_from_proto, scope_from_proto

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.metrics.v1 import metrics_pb2

__all__ = ["MetricBatch", "MetricView", "METRIC_KINDS", "metric_points"]

METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
"""The ``data`` oneof of an OTLP Metric."""


def metric_points(metric: metrics_pb2.Metric) -> int:
    """How many data points a metric carries (0 when its data is unset)."""
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


@dataclass(frozen=True, slots=True)
class MetricView:
    """One metric with its resource and scope decoded; ``metric`` is the protobuf message."""

    resource: Resource
    scope: Scope
    metric: Any  # metrics_pb2.Metric

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def kind(self) -> str | None:
        """``gauge``, ``sum``, ``histogram``, ``exponential_histogram``, ``summary`` or None."""
        return self.metric.WhichOneof("data")

    @property
    def data_points(self) -> Any:
        kind = self.kind
        return getattr(self.metric, kind).data_points if kind else ()


class MetricBatch(Batch):
    """A list of ``ResourceMetrics`` messages; ``len`` counts data points, as the Collector does."""

    __slots__ = ("points",)
    signal = METRICS
    unit = UNITS[METRICS]

    def __init__(self, resource_metrics: list | None = None, nbytes: int = 0) -> None:
        super().__init__(resource_metrics, nbytes)
        self.points = sum(metric_points(m) for rm in self._items for sm in rm.scope_metrics for m in sm.metrics)

    @property
    def resource_metrics(self) -> list:
        """The ``ResourceMetrics`` messages (the items a batch is split into)."""
        return self._items

    def __len__(self) -> int:
        return self.points

    def copy(self) -> "MetricBatch":
        from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics

        copies = []
        for rm in self.resource_metrics:
            c = ResourceMetrics()
            c.CopyFrom(rm)
            copies.append(c)
        return MetricBatch(copies, self.nbytes)

    def metrics(self) -> Iterator[MetricView]:
        """Every metric, with its resource and scope decoded once per ResourceMetrics / ScopeMetrics."""
        for rm in self.resource_metrics:
            resource = resource_from_proto(rm)
            for sm in rm.scope_metrics:
                scope = scope_from_proto(sm)
                for m in sm.metrics:
                    yield MetricView(resource, scope, m)

    def to_request(self) -> ExportMetricsServiceRequest:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

        request = ExportMetricsServiceRequest()
        request.resource_metrics.extend(self.resource_metrics)
        return request

    @classmethod
    def from_request(cls, request: ExportMetricsServiceRequest, nbytes: int = 0) -> "MetricBatch":
        """Take the ResourceMetrics of a decoded request (no copy: the request is not used again)."""
        return cls(list(request.resource_metrics), nbytes)
