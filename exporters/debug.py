"""``debug``: log what passes, for first steps and troubleshooting (as the OTel debug exporter).

Not durable: its success never stands in for storage when a request is acknowledged.
``basic`` logs one line per batch; ``normal`` one line per span; ``detailed`` every field,
including the canonical GenAI fields and all attributes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Literal

from collector.component import ComponentContext, Factory
from collector.model import STATUS_NAMES, SpanBatch
from config.schema import setting


@dataclass
class DebugConfig:
    verbosity: Literal["basic", "normal", "detailed"] = setting("basic", doc="basic: one line per batch; "
                                                                 "normal: one line per span; detailed: every "
                                                                 "attribute, event and canonical GenAI field")


class DebugExporter:
    durable = False

    def __init__(self, config: DebugConfig, logger: logging.Logger) -> None:
        self.verbosity = config.verbosity
        self.log = logger

    def export(self, batch: SpanBatch) -> None:
        self.log.info("TracesExporter: %d spans", len(batch))
        if self.verbosity == "basic":
            return
        for span in batch:
            line = (f"span {span.name!r} trace_id={span.trace_id.hex()} span_id={span.span_id.hex()} "
                    f"service={span.service_name} duration_ms={span.duration_ms:.3f} "
                    f"status={STATUS_NAMES.get(span.status_code, span.status_code)}")
            if span.genai is not None:
                g = span.genai
                line += (f" model={g.model} input_tokens={g.input_tokens} output_tokens={g.output_tokens}"
                         f" cost_usd={g.cost_usd}")
            self.log.info(line)
            if self.verbosity == "detailed":
                detail = {"attributes": span.attributes, "resource": span.resource.attributes,
                          "events": [{"name": e.name, "attributes": e.attributes} for e in span.events],
                          "genai": asdict(span.genai) if span.genai is not None else None}
                self.log.info("  %s", json.dumps(detail, default=repr, ensure_ascii=False))

    def shutdown(self) -> None:
        pass


FACTORY = Factory("debug", DebugConfig, lambda cfg, ctx: DebugExporter(cfg, ctx.logger),
                  doc="logs what passes, for first steps and troubleshooting",
                  example="""\
verbosity: normal
""")
