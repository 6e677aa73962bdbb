"""``debug``: log what passes, for first steps and troubleshooting (as the OTel debug exporter).

Not durable: its success never stands in for storage when a request is acknowledged.
Every signal: ``basic`` logs one line per batch; ``normal`` one line per span, log record or
metric; ``detailed`` every field, including the canonical GenAI fields and all attributes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Literal

from google.protobuf import json_format

from collector.component import ALL_SIGNALS, Exporter, Factory
from collector.model import LOGS, METRICS, STATUS_NAMES, TRACES, Batch, Span
from collector.model_logs import LogRecord
from collector.model_metrics import MetricBatch, MetricView
from config.schema import setting


@dataclass
class DebugConfig:
    verbosity: Literal["basic", "normal", "detailed"] = setting("basic", doc="basic: one line per batch; "
                                                                 "normal: one line per span, log record or metric; "
                                                                 "detailed: every attribute, body, event and "
                                                                 "canonical GenAI field")


class DebugExporter(Exporter):
    """One line per batch, per item (``normal``) and every field (``detailed``), for every signal."""

    def __init__(self, config: DebugConfig, logger: logging.Logger) -> None:
        self.verbosity = config.verbosity
        self.log = logger
        self._lines = {TRACES: self._span, LOGS: self._record, METRICS: self._metric}

    def export(self, batch: Batch) -> None:
        items = batch.metrics() if isinstance(batch, MetricBatch) else batch
        self.log.info("%s: %d %s", _TITLES[batch.signal], len(batch), batch.unit.replace("_", " "))
        if self.verbosity == "basic":
            return
        line = self._lines[batch.signal]
        for item in items:
            text, detail = line(item)
            self.log.info(text)
            if self.verbosity == "detailed":
                self.log.info("  %s", json.dumps(detail, default=repr, ensure_ascii=False))

    @staticmethod
    def _span(span: Span) -> tuple[str, dict]:
        line = (f"span {span.name!r} trace_id={span.trace_id.hex()} span_id={span.span_id.hex()} "
                f"service={span.service_name} duration_ms={span.duration_ms:.3f} "
                f"status={STATUS_NAMES.get(span.status_code, span.status_code)}")
        if span.genai is not None:
            g = span.genai
            line += (f" model={g.model} input_tokens={g.input_tokens} output_tokens={g.output_tokens}"
                     f" cost_usd={g.cost_usd}")
        return line, {"attributes": span.attributes, "resource": span.resource.attributes,
                      "events": [{"name": e.name, "attributes": e.attributes} for e in span.events],
                      "genai": asdict(span.genai) if span.genai is not None else None}

    @staticmethod
    def _record(record: LogRecord) -> tuple[str, dict]:
        line = (f"log {record.name!r} severity={record.severity_text or record.severity_number} "
                f"trace_id={record.trace_id.hex()} span_id={record.span_id.hex()} service={record.service_name}")
        return line, {"body": record.body, "attributes": record.attributes, "resource": record.resource.attributes}

    @staticmethod
    def _metric(view: MetricView) -> tuple[str, dict]:
        line = (f"metric {view.name!r} kind={view.kind} unit={view.metric.unit!r} points={len(view.data_points)} "
                f"service={view.resource.service_name}")
        return line, {"resource": view.resource.attributes,
                      "metric": json_format.MessageToDict(view.metric, preserving_proto_field_name=True)}


_TITLES = {TRACES: "TracesExporter", LOGS: "LogsExporter", METRICS: "MetricsExporter"}

FACTORY = Factory("debug", DebugConfig, lambda cfg, ctx: DebugExporter(cfg, ctx.logger), signals=ALL_SIGNALS,
                  doc="logs what passes (traces, logs, metrics), for first steps and troubleshooting",
                  example="""\
verbosity: normal
""")
