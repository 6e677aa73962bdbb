"""Exporter registry: type name -> module (one line per exporter)."""

from collector.component import Registry

EXPORTERS = Registry("exporter", {
    "debug": "exporters.debug",
    "nop": "exporters.nop",
    "sqlite": "exporters.sqlite",
    "postgres": "exporters.postgres",
    "otlp": "exporters.otlp",
    "otlphttp": "exporters.otlphttp",
    "prometheus": "exporters.prometheus",
})
