"""``memory_limiter``: cap the bytes a pipeline holds; beyond it receivers answer with backpressure.

The OTel Collector samples process memory every ``check_interval``; we count instead: every
admitted request adds its encoded size until every exporter has it, so the check is exact, costs
nothing and reacts to the request that would cross the line, not one interval later.  Decoded
spans take several times their encoded size in Python, which ``limit_mib`` must allow for.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.component import Factory
from collector.model import SpanBatch
from config.schema import setting


@dataclass
class MemoryLimiterConfig:
    limit_mib: int = setting(64, min=1, max=1 << 20, doc="encoded MiB admitted and not yet exported")


class MemoryLimiterProcessor:
    """Passes batches through unchanged; the pipeline reads ``limit_bytes`` for admission."""

    def __init__(self, config: MemoryLimiterConfig) -> None:
        self.limit_bytes = config.limit_mib * 1024 * 1024

    def process(self, batch: SpanBatch) -> SpanBatch:
        return batch

    def shutdown(self) -> None:
        pass


FACTORY = Factory("memory_limiter", MemoryLimiterConfig, lambda cfg, ctx: MemoryLimiterProcessor(cfg),
                  doc="caps the bytes a pipeline holds; beyond it receivers push back",
                  example="""\
limit_mib: 64
""")
