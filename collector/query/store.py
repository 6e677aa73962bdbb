"""Open the store a query reads: ``--db`` (a SQLite path or a database URL) or, by default, the
first storage exporter (``sqlite`` / ``postgres``) of ``--config``.

The query CLI never creates or migrates anything: a SQLite file that does not exist is an error (a
typo must not silently produce an empty database), and connections are read-only (SQLite
``query_only``, Postgres read-only transactions).

It talks to the DBAPI drivers (sqlite3, psycopg) directly rather than through SQLAlchemy: see
:mod:`exporters.storage.sqltext` for why, and for the :class:`Sql` fragments it runs.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from collector.query.args import UsageError
from exporters.storage.search import register_sqlite_lower
from exporters.storage.sqltext import Sql

__all__ = ["Store", "Connection", "Target", "open_store", "resolve_db", "error_reason", "has_table", "STORAGE_TYPES"]

STORAGE_TYPES = {"sqlite": "path", "postgres": "url"}
"""Storage exporter type -> the config key that names its database."""

_HAS_TABLE = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
    "postgresql": "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() "
                  "AND table_name = ?",
}


def has_table(conn: "Connection", name: str) -> bool:
    """Whether the store has table ``name`` (a store written by an older collector may lack one)."""
    return bool(conn.scalar(Sql(_HAS_TABLE[conn.dialect], name)))


@dataclass(frozen=True)
class Target:
    """Where the store is: ``dialect`` (``sqlite`` / ``postgresql``), the file path or the libpq
    connection URL, and how to name it in messages (password hidden)."""

    dialect: str
    location: str
    shown: str

    @property
    def sqlalchemy_url(self) -> str:
        """The URL the storage write path opens (``replay --record``, ``delete --user``)."""
        from exporters.storage.store import postgres_url, sqlite_url

        return sqlite_url(self.location) if self.dialect == "sqlite" else postgres_url(self.location)


class Connection:
    """One DBAPI connection that runs :class:`Sql` fragments."""

    def __init__(self, dbapi: Any, dialect: str) -> None:
        self.dbapi = dbapi
        self.dialect = dialect

    def execute(self, query: Sql) -> Any:
        """The DBAPI cursor, executed (rows are tuples in the select's column order)."""
        cursor = self.dbapi.cursor()
        cursor.execute(query.render(self.dialect), query.params)
        return cursor

    def rows(self, query: Sql) -> list[dict[str, Any]]:
        cursor = self.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def scalar(self, query: Sql) -> Any:
        row = self.execute(query).fetchone()
        return row[0] if row else None

    def interrupt(self) -> None:
        """Stop the statement running on this connection, from another thread (Ctrl-C); a
        connection that has just finished (or closed) meanwhile is left as it is."""
        try:
            if self.dialect == "postgresql":
                self.dbapi.cancel()
            else:
                self.dbapi.interrupt()
        except Exception:  # noqa: BLE001 - racing the query's own end: nothing left to stop
            pass

    def stream(self, query: Sql, batch: int = 2000) -> Iterator[dict[str, Any]]:
        """Rows as dicts without holding them all: a server-side cursor on Postgres."""
        if self.dialect == "postgresql":
            cursor = self.dbapi.cursor(name="genai_collector_stream")
            cursor.itersize = batch
            cursor.execute(query.render(self.dialect), query.params)
        else:
            cursor = self.execute(query)
        names = [d[0] for d in cursor.description]
        try:
            while rows := cursor.fetchmany(batch):
                for row in rows:
                    yield dict(zip(names, row))
        finally:
            cursor.close()


@dataclass
class Store:
    """An open store: which SQL dialect it speaks and a small pool of read-only connections (the
    ``stats`` queries run three at once, one per connection)."""

    target: Target
    _idle: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dialect(self) -> str:
        return self.target.dialect

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """The driver's exception classes: what a failing query raises."""
        if self.dialect == "postgresql":
            import psycopg

            return (psycopg.Error,)
        return (sqlite3.Error,)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._lock:
            dbapi = self._idle.pop() if self._idle else None
        if dbapi is None:
            dbapi = _connect(self.target)
        try:
            yield Connection(dbapi, self.dialect)
        except BaseException:
            dbapi.close()
            raise
        dbapi.rollback()  # end the read transaction: the next use sees the store as it is then
        with self._lock:
            self._idle.append(dbapi)

    @contextmanager
    def writer(self) -> Iterator[Connection]:
        """A connection that may write, for one short transaction (committed when the block ends,
        rolled back on an error), then closed: the pooled readers stay read-only, and a writer
        never holds SQLite's write lock longer than its statements (it waits up to 10 s for the
        collector's own batch, as ``busy_timeout``)."""
        dbapi = _connect(self.target, writable=True)
        try:
            if self.dialect == "sqlite":
                dbapi.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting busy_timeout
            yield Connection(dbapi, self.dialect)
            dbapi.commit() if self.dialect == "postgresql" else dbapi.execute("COMMIT")
        except BaseException:
            dbapi.rollback()
            raise
        finally:
            dbapi.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for dbapi in idle:
            dbapi.close()


def _connect(target: Target, writable: bool = False) -> Any:
    """A reader (the default: it must never write, whatever SQL runs) or a writer (feedback)."""
    if target.dialect == "postgresql":
        import psycopg

        conn = psycopg.connect(target.location, connect_timeout=5)
        conn.read_only = not writable
        return conn
    conn = sqlite3.connect(target.location, timeout=10 if writable else 5, check_same_thread=False,
                           isolation_level=None)
    if writable:
        conn.execute("PRAGMA busy_timeout = 10000")  # the collector may be writing a batch
        return conn
    register_sqlite_lower(conn)  # --search folds case beyond ASCII
    for pragma in ("query_only = 1",
                   "cache_size = -65536",       # 64 MiB: stats scan many pages once
                   "mmap_size = 1073741824",
                   "busy_timeout = 5000"):      # the collector may be writing right now
        conn.execute(f"PRAGMA {pragma}")
    return conn


def _default_from_config(config_path: str) -> str:
    """The database of the first storage exporter in the config's ``exporters:``.

    The exporters are loaded and validated exactly as ``genai-collector run`` does
    (``${env:...}``, defaults such as the SQLite exporter's default ``path``), so the query reads
    the store the collector writes; the other sections are not read (a receiver being fixed does
    not stop queries, and their modules are slow to import).
    """
    from config.schema import ConfigErrors
    from config.service import load_section

    if not Path(config_path).is_file():
        raise UsageError(f"no --db given and config file {config_path} not found "
                         f"(pass --db PATH_OR_URL or --config FILE)")
    try:
        exporters = load_section(config_path, "exporters")
    except ConfigErrors as exc:
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        raise UsageError(f"{config_path}: {exc.errors[0]}{more}") from None
    for spec in exporters.values():
        key = STORAGE_TYPES.get(spec.type)
        if key is not None:
            return str(getattr(spec.config, key))
    raise UsageError(f"{config_path} has no sqlite or postgres exporter; pass --db PATH_OR_URL")


def _sqlite_file(path: str, shown: str) -> Target:
    file = Path(path).expanduser()
    if path and file.is_dir():
        raise UsageError(f"{path} is a directory, not a database file")
    if not path or path == ":memory:" or not file.is_file():
        raise UsageError(f"database file not found: {path or '(none)'}")
    return Target("sqlite", str(file.resolve()), shown)


_PASSWORD = re.compile(r"^([^:/]+://[^:/@]*:)[^/]*@")
"""``scheme://user:PASSWORD@``: what messages show as ``***``."""


def resolve_db(db: str | None, config_path: str) -> Target:
    """``--db`` (or the config's storage exporter), checked: a SQLite file that exists, or a
    Postgres URL in SQLAlchemy's spelling (``postgresql+psycopg://USER@HOST/DB``) as libpq's."""
    target = db if db else _default_from_config(config_path)
    if "://" not in target:
        return _sqlite_file(target, target)
    scheme, rest = target.split("://", 1)
    backend = scheme.split("+", 1)[0].lower()
    shown = _PASSWORD.sub(r"\1***@", target, count=1)
    try:
        urlsplit(f"{backend}://{rest}").port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        raise UsageError(f"malformed database URL: {shown!r} "
                         f"(expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB)") from None
    if backend == "sqlite":
        # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path
        return _sqlite_file(rest.split("?", 1)[0][1:], shown)
    if backend in ("postgresql", "postgres"):
        return Target("postgresql", f"postgresql://{rest}", shown)
    raise UsageError(f"unsupported database URL scheme {scheme!r} (use sqlite or postgresql)")


def error_reason(exc: BaseException) -> str:
    """A driver error in one line (psycopg puts hints on the lines below)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_store(db: str | None, config_path: str) -> Store:
    """Connect and check that this is a genai-collector store; every failure is a UsageError."""
    store = Store(resolve_db(db, config_path))
    try:
        with store.connect() as conn:
            present = has_table(conn, "spans")
    except store.errors as exc:
        store.close()
        raise UsageError(f"cannot open {store.target.shown}: {error_reason(exc)}") from None
    if not present:
        store.close()
        raise UsageError(f"{store.target.shown} has no spans table: not a genai-collector store")
    return store
