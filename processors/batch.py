"""``batch``: how the pipeline groups incoming requests before processing and export.

Batching happens in the pipeline's intake (see ``collector/pipeline.py``), because an
acknowledgement waits for the export: this processor only carries the policy there.  Its
``timeout`` defaults to 0 (group commit: whatever queued while the previous batch was written goes
together), unlike the OTel Collector's 200ms, which would add 200ms to every acknowledgement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from collector.component import ALL_SIGNALS, Factory, IntakeProcessor
from collector.pipeline import BatchPolicy, IntakeSettings
from config.schema import Duration, setting


@dataclass
class BatchConfig:
    send_batch_size: int = setting(8192, min=1, doc="items (spans, log records, metric points) that make a batch full")
    send_batch_max_size: int = setting(0, min=0, doc="never merge requests beyond this many items (0 = no cap)")
    timeout: Duration = setting(0.0, doc="longest wait for a batch to fill; 0 = group commit")

    def validate(self) -> list[str]:
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            return ["send_batch_max_size must be 0 or >= send_batch_size"]
        return []


class BatchProcessor(IntakeProcessor):
    """Passes batches through unchanged; sets the pipeline's batch policy."""

    def __init__(self, config: BatchConfig) -> None:
        self.batch_policy = BatchPolicy(config.send_batch_size, config.send_batch_max_size, config.timeout)

    def configure(self, intake: IntakeSettings) -> IntakeSettings:
        return replace(intake, policy=self.batch_policy)


FACTORY = Factory("batch", BatchConfig, lambda cfg, ctx: BatchProcessor(cfg),
                  signals=ALL_SIGNALS, intake_rank=1,
                  doc="groups queued requests into batches (group commit by default)",
                  example="""\
send_batch_size: 8192
timeout: 0s             # group commit: no added latency
""")
