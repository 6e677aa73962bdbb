"""``genai_metrics`` connector (traces -> metrics): GenAI metrics from the normalised spans.

An exporter of a traces pipeline and a receiver of a metrics pipeline, like the OTel Collector's
``spanmetrics`` connector, but computed from ``span.genai`` (filled by ``genai_normalize``,
``genai_cost`` and ``genai_token_rate``), so apps whose instrumentation emits no metrics
(OpenInference, OpenLLMetry, Langfuse SDKs) get them as well as those that do.

Metrics (names and buckets from the GenAI semantic conventions where they define one):

================================================  =========  ===========================================
``gen_ai.client.token.usage``                     histogram  ``{token}``, by ``gen_ai.token.type``
                                                             (input / output); buckets 1, 4, 16 ... 4^13
``gen_ai.client.operation.duration``              histogram  ``s``; buckets 0.01, 0.02 ... 81.92
``gen_ai.client.operation.time_to_first_chunk``   histogram  ``s``; same buckets (streamed calls only)
``gen_ai.client.output_tokens_per_second``        histogram  ``{token}/s``; buckets 1, 2, 5 ... 5000
``gen_ai.client.cost``                            counter    ``USD``; the ``genai_cost`` estimate
``gen_ai.client.calls``                           counter    ``{call}``; errors are the calls with
                                                             ``error.type`` set
================================================  =========  ===========================================

Every data point carries the dimensions ``service.name``, ``gen_ai.provider.name``,
``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.response.model`` and ``error.type``
(an absent value is left out), plus the span (or resource) attributes listed in ``dimensions``.
User and session ids are never dimensions unless listed: they are unbounded.

Cardinality is bounded by ``max_series`` (distinct dimension sets): once reached, spans of a new
set are recorded in one overflow series whose only attribute is ``otel.metric.overflow=true``, as
the OTel SDKs do, and counted in ``otelcol_connector_overflow_spans``.  With
``metrics_expiration`` a series not updated for that long is dropped, so its slot is free again.

Temporality follows ``spanmetrics``: cumulative by default, i.e. each flush reports the totals
since the series was created (its ``start_time_unix_nano``), which is what Prometheus wants and
what makes a lost or refused flush harmless (the next one carries the same totals).  ``delta``
reports what happened since the previous flush and then forgets the series, for backends that
prefer it.  A restart starts every series over from zero with a new start time; Prometheus'
``rate()``/``increase()`` treat that as a counter reset.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Callable, Literal

from collector.component import ComponentContext, Connector, ConnectorFactory, Consumer, Consumers
from collector.model import METRICS, SpanBatch
from collector.model_metrics import MetricBatch
from config.schema import Duration, setting
from processors.genai_conventions import ATTRIBUTE_MAP

__all__ = ["GenAIMetricsConfig", "GenAIMetricsConnector", "FACTORY", "TOKEN_BOUNDS", "DURATION_BOUNDS",
           "RATE_BOUNDS", "BASE_DIMENSIONS", "OVERFLOW_ATTRIBUTE"]

log = logging.getLogger("genai_collector.connector.genai_metrics")

TOKEN_BOUNDS: tuple[int, ...] = tuple(4 ** i for i in range(14))  # 1 ... 67108864; ints: token counts are
# ints, and bisecting ints among ints is ~1/3 faster than among floats
DURATION_BOUNDS: tuple[float, ...] = tuple(0.01 * 2 ** i for i in range(14))    # 0.01 ... 81.92
RATE_BOUNDS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
                                  2000.0, 5000.0)

BASE_DIMENSIONS: tuple[str, ...] = ("service.name", "gen_ai.provider.name", "gen_ai.operation.name",
                                    "gen_ai.request.model", "gen_ai.response.model", "error.type")
"""The dimensions every data point has, in the order of the series key."""

OVERFLOW_ATTRIBUTE = "otel.metric.overflow"
SCOPE_NAME = "genai_metrics"
"""The instrumentation scope of the output: the prometheus exporter makes it ``otel_scope_name``,
which tells these series from an app's own ``gen_ai.client.*`` metrics (docs/metrics.md)."""

# (name, unit, description) of each metric; the order is the order of emission
TOKEN_USAGE = ("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.")
DURATION = ("gen_ai.client.operation.duration", "s", "GenAI operation duration.")
TTFC = ("gen_ai.client.operation.time_to_first_chunk", "s",
        "Time from the start of the call to the first streamed chunk.")
RATE = ("gen_ai.client.output_tokens_per_second", "{token}/s",
        "Output tokens per second of generation (after the first chunk when it is known).")
COST = ("gen_ai.client.cost", "USD", "Estimated cost of the calls in US dollars (genai_cost processor).")
CALLS = ("gen_ai.client.calls", "{call}", "GenAI calls; those with error.type set failed.")

ID_KEYS: frozenset[str] = frozenset(k for k, (f, *_) in ATTRIBUTE_MAP.items() if f in ("session_id", "user_id"))
"""User and session id attributes of every dialect: unbounded, so a warning when listed as dimensions."""

_TEMPORALITY = {"delta": 1, "cumulative": 2}
_INF = float("inf")  # AggregationTemporality enum of the OTLP proto


@dataclass
class GenAIMetricsConfig:
    dimensions: list[str] = setting(
        default_factory=list,
        doc="extra dimensions: span attribute keys (looked up on the span, then its resource), "
            "e.g. gen_ai.agent.name or a feature attribute; each value multiplies the series")
    max_series: int = setting(
        2000, min=1, max=1_000_000,
        doc="distinct dimension sets kept; spans of further sets go to one overflow series "
            "(otel.metric.overflow=true)")
    metrics_flush_interval: Duration = setting(
        15.0, min=0.05, doc="how often the metrics are sent to the metrics pipelines")
    metrics_expiration: Duration = setting(
        0.0, doc="drop a series not updated for this long (0: keep every series while the collector "
                 "runs); a series that comes back starts over from zero")
    aggregation_temporality: Literal["cumulative", "delta"] = setting(
        "cumulative", doc="cumulative: totals since the series started (what Prometheus wants); "
                          "delta: what happened since the previous flush")

    def validate(self) -> list[str]:
        clash = sorted(set(self.dimensions) & set(BASE_DIMENSIONS + (OVERFLOW_ATTRIBUTE,)))
        if clash:
            return [f"dimensions: {', '.join(clash)} is always a dimension; remove it"]
        if len(set(self.dimensions)) != len(self.dimensions):
            return ["dimensions: listed more than once"]
        return []


class _Series:
    """The state of one dimension set: bucket counts and sums of each histogram, the counters.

    Flat slots rather than histogram objects: ``export`` updates them inline (a bisection and two
    additions per value), which is what keeps a span under 3 µs.  Counts per bucket follow OTLP:
    ``len(bounds) + 1`` buckets, bucket i holding values in ``(bounds[i-1], bounds[i]]``.
    """

    __slots__ = ("attributes", "start_ns", "last_ns", "calls", "cost", "cost_seen",
                 "tin", "tin_sum", "tout", "tout_sum", "dur", "dur_sum", "ttfc", "ttfc_sum", "rate", "rate_sum")

    def __init__(self, attributes: dict[str, Any], now_ns: int) -> None:
        self.attributes = attributes
        self.start_ns = now_ns
        self.last_ns = now_ns
        self.calls = 0
        self.cost = 0.0
        self.cost_seen = False
        self.tin, self.tout = [0] * (len(TOKEN_BOUNDS) + 1), [0] * (len(TOKEN_BOUNDS) + 1)
        self.dur, self.ttfc = [0] * (len(DURATION_BOUNDS) + 1), [0] * (len(DURATION_BOUNDS) + 1)
        self.rate = [0] * (len(RATE_BOUNDS) + 1)
        self.tin_sum = self.tout_sum = self.dur_sum = self.ttfc_sum = self.rate_sum = 0.0

    def copy(self) -> "_Series":
        out = _Series.__new__(_Series)
        for name in _Series.__slots__:
            value = getattr(self, name)
            setattr(out, name, list(value) if isinstance(value, list) else value)
        return out


class GenAIMetricsConnector(Connector):
    """Aggregates GenAI spans into series; a flush thread sends them to the metrics pipelines.

    ``export`` (the traces side) only updates in-memory series under a lock: a few bisections and
    additions per span, no allocation once a series exists.  The protobuf is built at flush time,
    from a copy taken under the lock.
    """

    durable = False  # derived data: a traces pipeline never waits on, nor fails for, its metrics

    def __init__(self, config: GenAIMetricsConfig, ctx: ComponentContext,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self.extra = tuple(config.dimensions)
        self.max_series = config.max_series
        self.temporality = _TEMPORALITY[config.aggregation_temporality]
        self.clock = clock
        self.log = ctx.logger
        self._series: dict[tuple, _Series] = {}
        self._overflow: _Series | None = None
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush_ns = clock()
        self.overflow_spans = ctx.counter("overflow_spans",
                                          "Spans recorded in the overflow series (max_series reached).")
        self.expired = ctx.counter("expired_series", "Series dropped by metrics_expiration.")
        self.flush_failed = ctx.counter("flush_failed", "Flushes the metrics pipelines did not take.")
        ctx.gauge("series", "Dimension sets held.", lambda: len(self._series))
        for key in sorted(ID_KEYS & set(self.extra)):
            self.log.warning("genai_metrics: dimension %s is a user or session id: every value is a new series "
                             "(max_series %d caps them; later ones go to the overflow series)", key, self.max_series)

    # -- traces side --------------------------------------------------------------------------

    def export(self, batch: SpanBatch) -> None:
        now = self.clock()
        extra = self.extra
        bl, tb, db, rb = bisect_left, TOKEN_BOUNDS, DURATION_BOUNDS, RATE_BOUNDS
        resource, service = None, None
        with self._lock:
            get = self._series.get
            for span in batch.spans:
                g = span.genai
                if g is None or (g.operation is None and g.model is None):
                    continue  # an app's own span carrying only gen_ai.conversation.id etc. is no call
                if span.resource is not resource:  # spans of a request share their Resource
                    resource = span.resource
                    service = resource.attributes.get("service.name")
                key = (service, g.provider, g.operation, g.request_model, g.response_model, g.error_type)
                if extra:
                    key += self._extra_values(span)
                s = get(key)
                if s is None:
                    s = self._new_series(key, now)
                s.last_ns = now
                s.calls += 1
                v = g.input_tokens
                if v is not None:
                    s.tin[bl(tb, v)] += 1
                    s.tin_sum += v
                v = g.output_tokens
                if v is not None:
                    s.tout[bl(tb, v)] += 1
                    s.tout_sum += v
                start = span.start_time_unix_nano
                v = span.end_time_unix_nano - start
                if v > 0 and start > 0:
                    v /= 1e9
                    s.dur[bl(db, v)] += 1
                    s.dur_sum += v
                v = g.ttft_ms
                if v is not None:
                    v /= 1e3
                    s.ttfc[bl(db, v)] += 1
                    s.ttfc_sum += v
                v = g.output_tokens_per_second
                if v is not None:
                    s.rate[bl(rb, v)] += 1
                    s.rate_sum += v
                v = g.cost_usd
                if v is not None and 0.0 <= v < _INF:  # a counter: never down, never NaN
                    s.cost += v
                    s.cost_seen = True

    def _extra_values(self, span) -> tuple:
        attrs, res = span.attributes, span.resource.attributes
        out = []
        for k in self.extra:
            v = attrs.get(k)
            if v is None:
                v = res.get(k)
            out.append(v if v is None or isinstance(v, (str, bool, int, float)) else str(v))
        return tuple(out)

    def _new_series(self, key: tuple, now: int) -> _Series:
        """A series for a new dimension set, or the overflow series once ``max_series`` is reached."""
        if len(self._series) >= self.max_series:
            self.overflow_spans.add(1)
            if self._overflow is None:
                self._overflow = _Series({OVERFLOW_ATTRIBUTE: True}, now)
            return self._overflow
        names = BASE_DIMENSIONS + self.extra
        attributes = {k: v for k, v in zip(names, key) if v is not None}
        s = self._series[key] = _Series(attributes, now)
        return s

    def shutdown(self) -> None:
        """Stop the flush thread after one last flush (the traces pipelines have drained)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    # -- metrics side -------------------------------------------------------------------------

    def start(self, consumers: Consumers) -> None:
        """Begin flushing into the metrics pipelines that list this connector."""
        self._consumer = consumers.get(METRICS)
        self._thread = threading.Thread(target=self._run, name="connector-genai_metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.config.metrics_flush_interval
        while not self._stop.wait(interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Send the current series to the metrics pipelines (nothing when there are none)."""
        consumer = self._consumer
        resource_metrics = self.collect()
        if consumer is None or not resource_metrics:
            return
        try:
            consumer.consume(MetricBatch(resource_metrics), timeout=self.config.metrics_flush_interval)
        except Exception as exc:  # noqa: BLE001 - with cumulative temporality the next flush repeats it
            self.flush_failed.add(1)
            self.log.warning("genai_metrics: the metrics pipeline did not take a flush: %s", exc)

    def collect(self) -> list:
        """The series as OTLP ``ResourceMetrics`` (one, with an empty resource), or [] if none."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            series = list(self._series.values())
            if self._overflow is not None:
                series.append(self._overflow)
            snapshot = [s.copy() for s in series]
            start_override = None
            if self.temporality == 1:  # delta: report since the last flush, then forget
                start_override = self._last_flush_ns
                self._series.clear()
                self._overflow = None
            self._last_flush_ns = now
        if not snapshot:
            return []
        return [_to_resource_metrics(snapshot, now, self.temporality, start_override)]

    def _expire(self, now: int) -> None:
        ttl = self.config.metrics_expiration
        if not ttl:
            return
        cutoff = now - int(ttl * 1e9)
        stale = [k for k, s in self._series.items() if s.last_ns < cutoff]
        for k in stale:
            del self._series[k]
        if self._overflow is not None and self._overflow.last_ns < cutoff:
            self._overflow = None
            stale.append(None)
        if stale:
            self.expired.add(len(stale))


# ---------------------------------------------------------------------------------------------
# snapshot -> OTLP protobuf


def _to_resource_metrics(series: list[_Series], now: int, temporality: int, start_override: int | None):
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    from collector.model import attributes_to_proto

    rm = metrics_pb2.ResourceMetrics()
    sm = rm.scope_metrics.add()
    sm.scope.name = SCOPE_NAME

    def metric(spec: tuple[str, str, str]):
        m = sm.metrics.add()
        m.name, m.unit, m.description = spec
        return m

    def point(container, s: _Series, extra: dict[str, Any] | None = None):
        p = container.data_points.add()
        attributes_to_proto({**s.attributes, **extra} if extra else s.attributes, p.attributes)
        p.start_time_unix_nano = start_override if start_override is not None else s.start_ns
        p.time_unix_nano = now
        return p

    def histogram(spec, bounds, counts: str, total: str, extra: dict[str, Any] | None = None):
        m = next((m for m in sm.metrics if m.name == spec[0]), None) or metric(spec)
        m.histogram.aggregation_temporality = temporality
        for s in series:
            buckets = getattr(s, counts)
            n = sum(buckets)
            if not n:
                continue
            p = point(m.histogram, s, extra)
            p.count = n
            p.sum = getattr(s, total)
            p.explicit_bounds.extend(bounds)
            p.bucket_counts.extend(buckets)
        if not m.histogram.data_points:
            del sm.metrics[-1]

    histogram(TOKEN_USAGE, TOKEN_BOUNDS, "tin", "tin_sum", {"gen_ai.token.type": "input"})
    histogram(TOKEN_USAGE, TOKEN_BOUNDS, "tout", "tout_sum", {"gen_ai.token.type": "output"})
    histogram(DURATION, DURATION_BOUNDS, "dur", "dur_sum")
    histogram(TTFC, DURATION_BOUNDS, "ttfc", "ttfc_sum")
    histogram(RATE, RATE_BOUNDS, "rate", "rate_sum")
    for spec, values in ((COST, [(s, s.cost) for s in series if s.cost_seen]),
                         (CALLS, [(s, s.calls) for s in series if s.calls])):
        if not values:
            continue
        m = metric(spec)
        m.sum.aggregation_temporality = temporality
        m.sum.is_monotonic = True
        for s, value in values:
            p = point(m.sum, s)
            if spec is CALLS:
                p.as_int = value
            else:
                p.as_double = value
    return rm


def _create(config: GenAIMetricsConfig, ctx: ComponentContext) -> GenAIMetricsConnector:
    return GenAIMetricsConnector(config, ctx)


FACTORY = ConnectorFactory("genai_metrics", GenAIMetricsConfig, _create,
                           doc="traces -> metrics: GenAI token usage, duration, TTFT, token rate, cost, calls",
                           connects=(("traces", "metrics"),))
