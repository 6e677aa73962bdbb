"""Config keys shared by ``sqlite`` and ``postgres`` (no heavy imports: ``validate`` loads this)."""

from __future__ import annotations

from dataclasses import dataclass

from collector.model import LOGS, TRACES
from config.schema import ByteSize, Duration, setting

__all__ = ["StorageConfig", "RetentionPolicy", "STORAGE_SIGNALS"]

STORAGE_SIGNALS: frozenset[str] = frozenset({TRACES, LOGS})
"""What ``sqlite`` and ``postgres`` store: spans, and log records (``logs`` table).  Metrics go
to the prometheus exporter or upstream."""


@dataclass
class RetentionPolicy:
    """What the retention thread enforces (seconds and bytes; 0 turns a rule off)."""

    ttl: float = 0.0            # seconds; 0 = keep forever
    content_ttl: float = 0.0    # seconds; 0 = keep content as long as the span
    max_size_bytes: int = 0     # 0 = no cap
    interval: float = 300.0     # seconds between checks

    @property
    def active(self) -> bool:
        return bool(self.ttl or self.content_ttl or self.max_size_bytes)


@dataclass
class StorageConfig:
    """Keys shared by ``sqlite`` and ``postgres``."""

    max_content_bytes: ByteSize = setting(1048576, min=1024, doc=(
        "longest JSON value (messages, attributes, events) stored per column; longer strings are cut "
        "and end with '…[truncated N bytes]'"))
    full_text_search: bool = setting(False, doc="index input/output messages and system "
                                                "instructions for the query CLI's --search")
    ttl: Duration = setting(0.0, doc="delete traces whose last span was received longer ago than this "
                                     "(collector clock, not span times), with their log records and scores; "
                                     "0 keeps them forever")
    content_ttl: Duration = setting(0.0, doc="null prompt/response content of spans and log records received "
                                             "longer ago than this, and feedback comments; 0 keeps it as long "
                                             "as the span")
    max_size_mb: int = setting(0, min=0, doc="delete the traces received first when the data outgrows this; "
                                                "0 = no cap")
    retention_check_interval: Duration = setting(300.0, min=0.01, doc="how often retention runs")

    def validate(self) -> list[str]:
        if self.ttl and self.content_ttl and self.content_ttl > self.ttl:
            return ["content_ttl: must not be longer than ttl (rows are deleted first)"]
        return []

    def retention_policy(self) -> RetentionPolicy:
        return RetentionPolicy(ttl=self.ttl, content_ttl=self.content_ttl,
                               max_size_bytes=self.max_size_mb * 2**20,
                               interval=self.retention_check_interval)
