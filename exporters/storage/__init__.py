"""Shared storage for the ``sqlite`` and ``postgres`` exporters: one schema, one write path.

Modules:

- :mod:`exporters.storage.schema`   the SQLAlchemy Core tables (the contract the query CLI reads)
- :mod:`exporters.storage.rows`     span -> row conversion and sanitising (the hot path)
- :mod:`exporters.storage.store`    engine setup, migrations, batched upserts, rollups
- :mod:`exporters.storage.retention` the background thread for ``ttl`` / ``content_ttl`` / ``max_size_mb``
- :mod:`exporters.storage.search`   full-text search (SQLite FTS5, Postgres tsvector) for ``--search``
- :mod:`exporters.storage.config`   the config keys both exporters share (light: ``validate`` loads it)
- :mod:`exporters.storage.exporter` the exporter class (counters, outage logging, retention thread)
- :mod:`exporters.storage.migrations` Alembic scripts, run at start
"""
