"""Open the store a query reads: ``--db`` (a SQLite path or a database URL) or, by default, the
first storage exporter (``sqlite`` / ``postgres``) of ``--config``.

The query CLI never creates or migrates anything: a SQLite file that does not exist is an error (a
typo must not silently produce an empty database), and the connection is made ``query_only``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from collector.query.args import UsageError

__all__ = ["Store", "open_store", "resolve_db", "STORAGE_TYPES"]

STORAGE_TYPES = {"sqlite": "path", "postgres": "url"}
"""Storage exporter type -> the config key that names its database."""


@dataclass
class Store:
    """An open store: the engine and which SQL dialect it speaks (``sqlite`` or ``postgresql``)."""

    engine: Engine
    dialect: str

    def connect(self):
        return self.engine.connect()


def _default_from_config(config_path: str) -> str:
    """The database of the first storage exporter in the config's ``exporters:``.

    The config is loaded and validated exactly as ``genai-collector run`` does (``${env:...}``,
    defaults such as the SQLite exporter's default ``path``), so the query reads the store the
    collector writes.
    """
    from config.schema import ConfigErrors
    from config.service import load_config

    if not Path(config_path).is_file():
        raise UsageError(f"no --db given and config file {config_path} not found "
                         f"(pass --db PATH_OR_URL or --config FILE)")
    try:
        cfg = load_config(config_path)
    except ConfigErrors as exc:
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        raise UsageError(f"{config_path}: {exc.errors[0]}{more}") from None
    for spec in cfg.exporters.values():
        key = STORAGE_TYPES.get(spec.type)
        if key is not None:
            return str(getattr(spec.config, key))
    raise UsageError(f"{config_path} has no sqlite or postgres exporter; pass --db PATH_OR_URL")


def resolve_db(db: str | None, config_path: str) -> URL:
    """``--db`` (or the config's storage exporter) as a SQLAlchemy URL, checked for existence."""
    target = db if db else _default_from_config(config_path)
    if "://" not in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise UsageError(f"database file not found: {target}")
        return URL.create("sqlite+pysqlite", database=str(path.resolve()))
    try:
        url = make_url(target)
    except (ArgumentError, ValueError):
        raise UsageError(f"malformed database URL: {target!r} "
                         f"(expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB)") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:" or not os.path.isfile(url.database):
            raise UsageError(f"database file not found: {url.database or '(none)'}")
        return url.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        # psycopg (3) is the driver we ship; a bare postgresql:// would ask for psycopg2.
        return url.set(drivername="postgresql+psycopg")
    raise UsageError(f"unsupported database URL scheme {url.drivername!r} (use sqlite or postgresql)")


def _sqlite_setup(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = 1")      # a reader must never write, whatever SQL runs
    cursor.execute("PRAGMA cache_size = -65536")  # 64 MiB: stats scan many pages once
    cursor.execute("PRAGMA mmap_size = 1073741824")
    cursor.execute("PRAGMA busy_timeout = 5000")  # the collector may be writing right now
    cursor.close()


def open_store(db: str | None, config_path: str) -> Store:
    """Connect and check that this is a genai-collector store; every failure is a UsageError."""
    url = resolve_db(db, config_path)
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 5}
    engine = sa.create_engine(url, **kwargs)
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_setup)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("spans"):
                raise UsageError(f"{shown} has no spans table: not a genai-collector store")
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise UsageError(f"cannot open {shown}: {reason}") from None
    return Store(engine, backend)
