"""``prometheus`` exporter: serves its pipelines' metrics for a Prometheus server to scrape.

As the OTel Collector's ``prometheusexporter``: every metric the pipelines deliver is kept (the
latest cumulative value per series; deltas are added up) and served on ``endpoint`` in the
Prometheus text format, or OpenMetrics when the scraper asks for it in ``Accept``.  A series not
updated for ``metric_expiration`` disappears from the output.

Names follow the OTel-to-Prometheus translation (``prometheus/otlptranslator``): invalid characters
become ``_``; the unit becomes a suffix (``s`` -> ``_seconds``, ``By`` -> ``_bytes``, ``{token}``
dropped, ``x/s`` -> ``_per_second``, a gauge in ``1`` -> ``_ratio``); counters (monotonic sums) end
in ``_total``; histograms are ``_bucket``/``_sum``/``_count``.  Attribute keys become label names
the same way (``gen_ai.request.model`` -> ``gen_ai_request_model``).  The resource gives ``job``
(``service.namespace/service.name``) and ``instance`` (``service.instance.id``); its other
attributes go to one ``target_info`` series per resource, or onto every series with
``resource_to_telemetry_conversion.enabled``.  The instrumentation scope gives ``otel_scope_name``
and ``otel_scope_version`` (as the Collector's exporter does): that is how the ``genai_metrics``
connector's series (scope ``genai_metrics``) are told from an app's own metrics of the same name.

The encoding is ``prometheus_client``'s (a custom collector whose families its exposition and
OpenMetrics generators write, and its HTTP server with content negotiation and gzip): the text
formats' escaping and ordering rules are theirs, not a second copy here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from collector.component import ComponentContext, Exporter, Factory
from collector.model import METRICS
from config.schema import Duration, setting

if TYPE_CHECKING:
    from collector.model_metrics import MetricBatch

__all__ = ["PrometheusConfig", "PrometheusExporter", "FACTORY", "metric_name", "label_name"]

log = logging.getLogger("genai_collector.exporter.prometheus")

_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes",
    "GiBy": "gibibytes", "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes",
    "GBy": "gigabytes", "TBy": "terabytes", "m": "meters", "V": "volts", "A": "amperes", "J": "joules",
    "W": "watts", "g": "grams", "Cel": "celsius", "Hz": "hertz", "%": "percent",
}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
_ANNOTATION = re.compile(r"\{[^}]*\}")
_IDENTITY = ("service.name", "service.namespace", "service.instance.id")

GAUGE, COUNTER, HISTOGRAM, SUMMARY = "gauge", "counter", "histogram", "summary"
_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK


def _clean(name: str, pattern: re.Pattern) -> str:
    """Invalid characters -> ``_``, runs of ``_`` collapsed, no ``_`` at either end."""
    return re.sub(r"__+", "_", pattern.sub("_", name)).strip("_")


def label_name(key: str) -> str:
    """``gen_ai.request.model`` -> ``gen_ai_request_model``; a leading digit gets ``key_``."""
    out = _INVALID_LABEL.sub("_", key)
    return "key_" + out if out[:1].isdigit() else out


def metric_name(name: str, unit: str, kind: str, namespace: str = "") -> tuple[str, str]:
    """OTel name + unit -> (Prometheus family name without ``_total``, OpenMetrics unit)."""
    base = _clean(f"{namespace}_{name}" if namespace else name, _INVALID) or "_"
    if base[0].isdigit():
        base = "_" + base
    tokens = base.split("_")
    unit = _ANNOTATION.sub("", unit or "").strip()
    main, _, per = unit.partition("/")
    main_word = "ratio" if main == "1" and kind == GAUGE else _UNITS.get(main, "" if main == "1" else main)
    main_word = _clean(main_word, _INVALID_LABEL)
    if main_word and main_word not in tokens:
        base += "_" + main_word
    per_word = _PER_UNITS.get(per, per)
    per_word = _clean(per_word, _INVALID_LABEL)
    if per_word and not base.endswith("per_" + per_word):
        base += "_per_" + per_word
    om_unit = main_word if main_word and base.endswith("_" + main_word) and not per_word else ""
    return base, om_unit


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return "" if value is None else str(value)


def _labels(attributes: dict[str, Any]) -> dict[str, str]:
    """Attributes as labels; keys that clean to the same name are joined with ``;`` (as the
    translator does), in key order so the result does not depend on arrival order."""
    out: dict[str, str] = {}
    for key in sorted(attributes):
        name = label_name(key)
        value = _label_value(attributes[key])
        out[name] = f"{out[name]};{value}" if name in out else value
    return out


@dataclass
class ResourceToTelemetryConfig:
    enabled: bool = setting(False, doc="put every resource attribute on every series as a label, "
                                       "instead of one target_info series per resource")


@dataclass
class PrometheusConfig:
    endpoint: str = setting("127.0.0.1:8889", pattern=r"^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$",
                            doc="host:port the scrape endpoint listens on (any path answers)")
    namespace: str = setting("", pattern=r"^([a-zA-Z_][a-zA-Z0-9_]*)?$",
                             doc="prefix for every metric name (namespace_name)")
    const_labels: dict[str, str] = setting(default_factory=dict, doc="labels added to every series")
    metric_expiration: Duration = setting(300.0, min=0.001,
                                          doc="a series not updated for this long is no longer served")
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = setting(
        default_factory=ResourceToTelemetryConfig, doc="resource attributes as labels (enabled: true)")


class _Family:
    __slots__ = ("name", "kind", "help", "unit", "series")

    def __init__(self, name: str, kind: str, help: str, unit: str) -> None:
        self.name, self.kind, self.help, self.unit = name, kind, help, unit
        self.series: dict[tuple, list] = {}  # label items -> [updated (monotonic s), value...]


class PrometheusExporter(Exporter):
    """Keeps the latest value of every series and serves them; one instance per config id."""

    def __init__(self, config: PrometheusConfig, ctx: ComponentContext) -> None:
        self.config = config
        self.log = ctx.logger
        self.to_labels = config.resource_to_telemetry_conversion.enabled
        self.const = {label_name(k): v for k, v in config.const_labels.items()}
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None
        self.unsupported = ctx.counter("unsupported_points",
                                       "Data points the Prometheus format cannot carry (exponential histograms).")
        self._warned = False
        ctx.gauge("series", "Series served.", lambda: sum(len(f.series) for f in self._families.values()))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``endpoint`` (the factory calls it: the server is up before any data flows)."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import start_http_server

        from collector.netserver import harden_started_server
        from collector.telemetry import IDLE_TIMEOUT, parse_address

        host, port = parse_address(self.config.endpoint)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.config.endpoint}: {exc.strerror or exc}") from None
        harden_started_server(self._server, IDLE_TIMEOUT)
        self.log.info("prometheus exporter: serving metrics on http://%s/metrics", self.config.endpoint)

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else 0

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- intake -------------------------------------------------------------------------------

    def export(self, batch: MetricBatch) -> None:
        self.export_resource_metrics(batch.resource_metrics)

    def export_resource_metrics(self, resource_metrics: Iterable) -> None:
        """Fold OTLP ``ResourceMetrics`` messages into the served series."""
        now = time.monotonic()
        with self._lock:
            for rm in resource_metrics:
                resource = _attributes(rm.resource.attributes)
                base = self._resource_labels(resource)
                if not self.to_labels:
                    self._target_info(resource, base, now)
                for sm in rm.scope_metrics:
                    labels = base
                    if sm.scope.name or sm.scope.version:
                        labels = {**base, **{k: v for k, v in (("otel_scope_name", sm.scope.name),
                                                             ("otel_scope_version", sm.scope.version)) if v}}
                    for m in sm.metrics:
                        self._metric(m, labels, now)

    def _resource_labels(self, resource: dict[str, Any]) -> dict[str, str]:
        labels: dict[str, str] = dict(_labels(resource)) if self.to_labels else {}
        name = resource.get("service.name")
        if name is not None:
            ns = resource.get("service.namespace")
            labels["job"] = f"{_label_value(ns)}/{_label_value(name)}" if ns else _label_value(name)
        instance = resource.get("service.instance.id")
        if instance is not None:
            labels["instance"] = _label_value(instance)
        labels.update(self.const)
        return labels

    def _target_info(self, resource: dict[str, Any], base: dict[str, str], now: float) -> None:
        rest = {k: v for k, v in resource.items() if k not in _IDENTITY}
        if not rest:
            return
        family = self._family("target_info", GAUGE, "Target metadata", "")
        family.series[tuple(sorted({**_labels(rest), **base}.items()))] = [now, 1.0]

    def _family(self, name: str, kind: str, help: str, unit: str) -> _Family:
        family = self._families.get(name)
        if family is None or family.kind != kind:
            if family is not None:
                self.log.warning("metric %s changed type %s -> %s; keeping the new one", name, family.kind, kind)
            family = self._families[name] = _Family(name, kind, help, unit)
        return family

    def _metric(self, m, base: dict[str, str], now: float) -> None:
        data = m.WhichOneof("data")
        if data == "gauge":
            points, kind, delta = m.gauge.data_points, GAUGE, False
        elif data == "sum":
            kind = COUNTER if m.sum.is_monotonic else GAUGE
            points, delta = m.sum.data_points, m.sum.aggregation_temporality == 1
        elif data == "histogram":
            points, kind, delta = m.histogram.data_points, HISTOGRAM, m.histogram.aggregation_temporality == 1
        elif data == "summary":
            points, kind, delta = m.summary.data_points, SUMMARY, False
        else:
            n = len(m.exponential_histogram.data_points) if data == "exponential_histogram" else 0
            self.unsupported.add(n)
            if not self._warned:
                self._warned = True
                self.log.warning("prometheus exporter: %s (%s) cannot be served; use explicit-bucket "
                                 "histograms (logged once)", m.name, data)
            return
        name, unit = metric_name(m.name, m.unit, kind, self.config.namespace)
        family = self._family(name, kind, m.description or m.name, unit)
        for p in points:
            if p.flags & _NO_RECORDED_VALUE:  # a staleness marker: nothing to serve
                continue
            key = tuple(sorted({**_labels(_attributes(p.attributes)), **base}.items()))
            if kind == HISTOGRAM:
                value = [list(p.explicit_bounds), list(p.bucket_counts), p.sum, p.count]
            elif kind == SUMMARY:
                value = [[q.quantile for q in p.quantile_values], [q.value for q in p.quantile_values],
                         p.sum, p.count]
            else:
                value = [p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)]
            old = family.series.get(key) if delta else None
            if old is not None:
                value = _add(old[1:], value)
            family.series[key] = [now] + value

    # -- prometheus_client custom collector ---------------------------------------------------
    # Each series keeps its own label set (no "" for the labels other series of the family
    # have), so the samples are built here and the families only encoded by prometheus_client.

    def collect(self):
        """Called by prometheus_client on every scrape: expire stale series, yield families."""
        from prometheus_client.metrics_core import Metric
        from prometheus_client.samples import Sample

        cutoff = time.monotonic() - self.config.metric_expiration
        with self._lock:
            snapshot = []
            for name, family in list(self._families.items()):
                stale = [k for k, v in family.series.items() if v[0] < cutoff]
                for k in stale:
                    del family.series[k]
                if not family.series:
                    del self._families[name]
                    continue
                snapshot.append((family.name, family.kind, family.help, family.unit,
                                 list(family.series.items())))
        for name, kind, help, unit, series in snapshot:
            out = Metric(name, help, kind, unit)
            for key, value in series:
                labels = dict(key)
                if kind == HISTOGRAM:
                    for le, count in _buckets(value[1], value[2]):
                        out.samples.append(Sample(f"{name}_bucket", {**labels, "le": le}, count))
                elif kind == SUMMARY:
                    for quantile, q_value in zip(value[1], value[2]):
                        out.samples.append(Sample(name, {**labels, "quantile": _float_text(quantile)}, q_value))
                if kind in (HISTOGRAM, SUMMARY):
                    out.samples.append(Sample(f"{name}_count", labels, value[4]))
                    out.samples.append(Sample(f"{name}_sum", labels, value[3]))
                else:
                    out.samples.append(Sample(f"{name}_total" if kind == COUNTER else name, labels, value[1]))
            yield out


def _attributes(kvs) -> dict[str, Any]:
    from collector.model import attributes_from_proto

    return attributes_from_proto(kvs)


def _add(old: list, new: list) -> list:
    """Accumulate a delta point into the stored one (buckets must match, else the new one wins)."""
    if len(new) == 1:
        return [old[0] + new[0]]
    if old[0] != new[0] or len(old[1]) != len(new[1]):
        return new
    return [new[0], [a + b for a, b in zip(old[1], new[1])], old[2] + new[2], old[3] + new[3]]


def _buckets(bounds: list[float], counts: list[int]) -> list[tuple[str, float]]:
    """OTLP per-bucket counts -> Prometheus cumulative ``le`` buckets ending in ``+Inf``."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip(bounds, counts):
        total += count
        out.append((_float_text(bound), total))
    total += sum(counts[len(bounds):])
    out.append(("+Inf", total))
    return out


def _float_text(value: float) -> str:
    """The ``le`` text Prometheus clients write: ``1.0``, ``0.01``, ``6.7108864e+07``."""
    from prometheus_client.utils import floatToGoString

    return floatToGoString(value)


def _create(config: PrometheusConfig, ctx: ComponentContext) -> PrometheusExporter:
    """Created = listening, so a taken port fails the start (``validate`` creates nothing)."""
    exporter = PrometheusExporter(config, ctx)
    exporter.start()
    return exporter


FACTORY = Factory("prometheus", PrometheusConfig, _create, signals=frozenset({METRICS}),
                  doc="serves the pipelines' metrics for Prometheus to scrape (text or OpenMetrics)")
