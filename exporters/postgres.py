"""``postgres``: store spans in PostgreSQL (psycopg 3), same schema and write path as ``sqlite``.

Several collectors may write to one database: rollup rows are upserted in key order so concurrent
batches cannot deadlock, and replays are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from collector.component import ComponentContext, Factory
from config.schema import Duration, setting
from exporters.storage.config import STORAGE_SIGNALS, StorageConfig

if TYPE_CHECKING:
    from exporters.storage.exporter import StorageExporter


@dataclass(kw_only=True)  # kw_only: a required key after the inherited defaults
class PostgresConfig(StorageConfig):
    url: str = setting(pattern=r"(postgres|postgresql)(\+psycopg)?://.+", doc=(
        "SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@127.0.0.1:5432/db "
        "(postgres:// and postgresql:// are accepted)"))
    pool_size: int = setting(4, min=1, max=100, doc="connections kept open (as many more may be opened in bursts)")
    connect_timeout: Duration = setting(5.0, min=1, doc="give up connecting after this (then retry later)")


def create(config: PostgresConfig, ctx: ComponentContext) -> StorageExporter:
    from exporters.storage.exporter import StorageExporter
    from exporters.storage.store import Store, postgres_url

    store = Store(postgres_url(config.url), max_content_bytes=config.max_content_bytes,
                  full_text_search=config.full_text_search, pool_size=config.pool_size,
                  connect_timeout=config.connect_timeout)
    return StorageExporter(store, config, ctx)


FACTORY = Factory("postgres", PostgresConfig, create, doc="store spans and log records in PostgreSQL",
                  signals=STORAGE_SIGNALS,
                  example="""\
url: postgresql+psycopg://collector:${env:PG_PASSWORD}@127.0.0.1:5432/genai
pool_size: 4
content_ttl: 30d
""")
