"""``memory_limiter``: cap the bytes a pipeline holds; beyond it receivers answer with backpressure.

The OTel Collector samples process memory every ``check_interval``; we count instead: every
admitted request adds its encoded size until every exporter has it, so the check is exact, costs
nothing and reacts to the request that would cross the line, not one interval later.  Decoded
spans take several times their encoded size in Python, which ``limit_mib`` must allow for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from collector.component import ALL_SIGNALS, Factory, IntakeProcessor
from collector.pipeline import IntakeSettings
from config.schema import setting


@dataclass
class MemoryLimiterConfig:
    limit_mib: int = setting(64, min=1, max=1 << 20, doc="encoded MiB admitted and not yet exported")


class MemoryLimiterProcessor(IntakeProcessor):
    """Passes batches through unchanged; sets the pipeline's admission limit."""

    def __init__(self, config: MemoryLimiterConfig) -> None:
        self.limit_bytes = config.limit_mib * 1024 * 1024

    def configure(self, intake: IntakeSettings) -> IntakeSettings:
        return replace(intake, limit_bytes=self.limit_bytes)


FACTORY = Factory("memory_limiter", MemoryLimiterConfig, lambda cfg, ctx: MemoryLimiterProcessor(cfg),
                  signals=ALL_SIGNALS, intake_rank=0,
                  doc="caps the bytes a pipeline holds; beyond it receivers push back",
                  example="""\
limit_mib: 64
""")
