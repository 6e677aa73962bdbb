"""``sqlite``: store spans in an embedded SQLite file (the default destination).

WAL journal, ``synchronous=NORMAL`` by default (a commit survives a crash of the collector; only
an OS crash or power loss can lose the last commits - use ``FULL`` if that matters), one writer.
Schema, write path and retention are shared with ``postgres`` (see ``exporters/storage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from collector.component import ComponentContext, Factory
from config.schema import Duration, setting
from exporters.storage.config import STORAGE_SIGNALS, StorageConfig

if TYPE_CHECKING:
    from exporters.storage.exporter import StorageExporter


@dataclass
class SqliteConfig(StorageConfig):
    path: str = setting("./genai-collector.db", pattern=r".*\S.*", doc="database file (created if missing)")
    synchronous: Literal["OFF", "NORMAL", "FULL"] = setting(
        "NORMAL", doc="SQLite synchronous mode; FULL also survives power loss, at some speed")
    busy_timeout: Duration = setting(10.0, min=0, doc=(
        "wait this long for another process's write lock before the export is retried"))


def create(config: SqliteConfig, ctx: ComponentContext) -> StorageExporter:
    from exporters.storage.exporter import StorageExporter
    from exporters.storage.store import Store, sqlite_url

    store = Store(sqlite_url(config.path), max_content_bytes=config.max_content_bytes,
                  full_text_search=config.full_text_search, sqlite_synchronous=config.synchronous,
                  sqlite_busy_timeout=config.busy_timeout)
    return StorageExporter(store, config, ctx)


FACTORY = Factory("sqlite", SqliteConfig, create, doc="store spans and log records in a SQLite file",
                  signals=STORAGE_SIGNALS,
                  example="""\
path: ./genai-collector.db
full_text_search: true        # for the query commands' --search
content_ttl: 30d              # prompts and responses removed after 30 days...
ttl: 365d                     # ...whole traces after a year
max_size_mb: 2048             # and never more than ~2 GB: oldest traces go first
""")
