"""``nop``: accept and discard, as the OTel Collector's nop exporter.

For a signal you do not want kept but do not want refused either: the SDKs' default exporters
send traces, logs and metrics to one endpoint, and a refused signal costs the application an
error per export.  What it discards is still counted (``otelcol_exporter_sent_<unit>``), so
the data is visible in the collector's own metrics, never silently gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.component import ALL_SIGNALS, Exporter, Factory
from collector.model import Batch


@dataclass
class NopConfig:
    """No settings."""


class NopExporter(Exporter):
    def export(self, batch: Batch) -> None:
        """Nothing to do: the pipeline counts the batch as sent."""


FACTORY = Factory("nop", NopConfig, lambda cfg, ctx: NopExporter(), signals=ALL_SIGNALS,
                  doc="discard (counted): for a signal you accept but do not keep")
