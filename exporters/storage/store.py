"""Engine setup, migrations and the batched write path shared by SQLite and Postgres.

One :meth:`Store.write` = one transaction:

1. insert the new rows of the batch in bulk (SQLite: multi-row ``INSERT ... VALUES ... ON CONFLICT
   DO NOTHING`` statements of up to 512 rows on the DBAPI cursor, see :mod:`collector.sqlite_bulk`;
   Postgres: look up which keys are stored, then ``COPY`` the others into ``spans``): SQLAlchemy
   Core per-row compilation would cost more than the insert itself;
2. the rows that conflicted are replays: read their stored rollup-relevant columns and update
   them (``ON CONFLICT DO UPDATE``).  New data - the common case - never pays for this lookup;
3. upsert ``traces`` and ``sessions`` with *deltas*: a new span adds its counts, a replayed span
   adds ``new - old``, so replays never double count and a trace growing over many batches
   accumulates.  Deltas were chosen over "recompute the rollup from spans" because recomputing
   rescans every stored span of a long session on each batch that touches it, while the delta
   costs nothing per stored span.  (A changed replay can only widen a trace's first/last time.)

Errors: connection loss, locks, a full disk -> :class:`RetryableError` (the pipeline retries and
applies backpressure); a data error in one row -> the batch is retried row by row inside
savepoints so one bad span never takes its neighbours down; any other failure of the transaction
(the rollups included) -> the batch is written in halves until the span at fault is alone
(:meth:`Store._write_isolating`).  Rollup sums saturate at the int64 bounds.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import sqlalchemy as sa

from collector.component import RetryableError
from collector.model import Span
from collector.sqlite_bulk import insert_rows
from exporters.storage.logjoin import LogJoin
from exporters.storage.logrows import LOG_COLUMNS, log_row
from exporters.storage.rows import INT64_MAX, SPAN_COLUMNS, RowBuilder, RowStats, is_turn
from exporters.storage.schema import VERSION_TABLE, logs, sessions, spans, traces
from exporters.storage.search import FTS_INDEX_NEW_ROWS, fts_enabled

__all__ = ["Store", "PreparedRows", "PreparedLogs", "WriteResult", "sqlite_url", "postgres_url"]

log = logging.getLogger("genai_collector.storage")
T = TypeVar("T")

# Columns read back for replayed spans: enough to subtract their old contribution.
_OLD_COLUMNS = ("trace_id", "span_id", "status_code", "operation", "model", "input_tokens",
                "output_tokens", "cost_usd", "session_id")
WRITE_COLUMNS = SPAN_COLUMNS + ("received_unix_nano",)
"""Columns of a written row: what :meth:`RowBuilder.row` builds, plus the collector's receipt
time, stamped once per batch in :meth:`Store.prepare` (the clock retention counts from)."""
_IDX = {name: i for i, name in enumerate(WRITE_COLUMNS)}
_ROLLUP_SUMS = ("span_count", "error_count", "turns", "input_tokens", "output_tokens", "cost_usd")
_TRACE_COLUMNS = ("trace_id", "root_name", "service_name", "session_id", "user_id",
                  "start_time_unix_nano", "end_time_unix_nano") + _ROLLUP_SUMS + ("received_unix_nano",)
_SESSION_COLUMNS = (("session_id", "user_id", "start_time_unix_nano", "end_time_unix_nano") + _ROLLUP_SUMS
                    + ("received_unix_nano",))


def sqlite_url(path: str) -> str:
    return "sqlite:///" + str(Path(path).expanduser())


def postgres_url(url: str) -> str:
    """Accept ``postgres://`` / ``postgresql://`` and use psycopg 3 (the driver we ship)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@dataclass
class WriteResult:
    written: int = 0
    rejected: int = 0
    sanitized: int = 0
    truncated: int = 0
    row_errors: list[str] = field(default_factory=list)


class PreparedRows:
    """Rows of a batch by (trace_id, span_id), built before the transaction (:meth:`Store.prepare`)."""

    __slots__ = ("by_key", "stats", "spans")

    def __init__(self, by_key: dict[tuple[str, str], tuple], stats: RowStats, spans: int) -> None:
        self.by_key = by_key
        self.stats = stats
        self.spans = spans  # spans the rows were built from

    @staticmethod
    def merge(parts: Sequence["PreparedRows"]) -> "PreparedRows":
        """One set of rows for consecutive batches, in order: the last row of a key wins, as
        within one batch."""
        by_key = dict(parts[0].by_key)
        stats = RowStats()
        for part in parts:
            if part is not parts[0]:
                by_key.update(part.by_key)
            stats.sanitized += part.stats.sanitized
            stats.truncated += part.stats.truncated
            stats.rejected += part.stats.rejected
        return PreparedRows(by_key, stats, sum(part.spans for part in parts))


class PreparedLogs:
    """``logs`` rows of a batch of log records, built before the transaction (:meth:`Store.prepare_logs`)."""

    __slots__ = ("rows", "stats", "records")

    def __init__(self, rows: list[tuple], stats: RowStats, records: int) -> None:
        self.rows = rows
        self.stats = stats
        self.records = records  # log records the rows were built from

    @staticmethod
    def merge(parts: Sequence["PreparedLogs"]) -> "PreparedLogs":
        stats = RowStats()
        for part in parts:
            stats.sanitized += part.stats.sanitized
            stats.truncated += part.stats.truncated
            stats.rejected += part.stats.rejected
        return PreparedLogs([r for part in parts for r in part.rows], stats, sum(p.records for p in parts))


class _Dialect:
    """SQL shared by both databases; subclasses hold what differs (placeholders, bulk paths)."""

    placeholder = "?"
    least, greatest = "MIN", "MAX"
    sqlite = False

    def __init__(self) -> None:
        self.upsert_spans = self.upsert_sql("spans", WRITE_COLUMNS, ("trace_id", "span_id"), {
            c: f"excluded.{c}" for c in WRITE_COLUMNS if c not in ("trace_id", "span_id")
        } | {"content_purged": "0"})
        self.upsert_traces = self.upsert_sql("traces", _TRACE_COLUMNS, ("trace_id",), {
            "root_name": "COALESCE(excluded.root_name, traces.root_name)",
            "service_name": "CASE WHEN excluded.root_name IS NOT NULL "
                            "THEN COALESCE(excluded.service_name, traces.service_name) "
                            "ELSE COALESCE(traces.service_name, excluded.service_name) END",
            "session_id": "COALESCE(traces.session_id, excluded.session_id)",
            "user_id": "COALESCE(traces.user_id, excluded.user_id)",
            **self._minmax("traces"), **_sums("traces"),
        })
        self.upsert_sessions = self.upsert_sql("sessions", _SESSION_COLUMNS, ("session_id",), {
            "user_id": "COALESCE(sessions.user_id, excluded.user_id)",
            **self._minmax("sessions"), **_sums("sessions"),
        })
        # Log records are never updated: a replayed one (same record_key) is already stored.
        self.insert_logs = self.upsert_sql("logs", LOG_COLUMNS, ("record_key",), None)
        self.select_old = (f"SELECT {', '.join(_OLD_COLUMNS)} FROM spans "
                           f"WHERE trace_id = {self.placeholder} AND span_id = {self.placeholder}")

    def upsert_sql(self, table: str, columns: Sequence[str], key: Sequence[str],
                   updates: dict[str, str] | None) -> str:
        """One-row INSERT for ``executemany``; ``updates`` None means DO NOTHING on conflict."""
        values = ", ".join([self.placeholder] * len(columns))
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}){_on_conflict(key, updates)}"

    def _minmax(self, table: str) -> dict[str, str]:
        return {
            "start_time_unix_nano": f"{self.least}({table}.start_time_unix_nano, excluded.start_time_unix_nano)",
            "end_time_unix_nano": f"{self.greatest}({table}.end_time_unix_nano, excluded.end_time_unix_nano)",
            "received_unix_nano": f"{self.greatest}({table}.received_unix_nano, excluded.received_unix_nano)",
        }

    def begin(self, cur) -> None:
        """Start the transaction (psycopg opens one implicitly)."""

    def finish(self, cur) -> None:
        """Called once the batch's span rows are written, before the rollups."""

    def insert_new(self, cur, rows: list[tuple]) -> list[tuple]:
        """Insert rows whose key is not stored yet; return the others (replays), untouched."""
        raise NotImplementedError

    def fetch_old(self, cur, rows: list[tuple]) -> dict[tuple[str, str], tuple]:
        """Rollup-relevant stored columns of ``rows`` (all known to exist); the rare path."""
        found = {}
        for row in rows:
            cur.execute(self.select_old, (row[0], row[1]))
            rec = cur.fetchone()
            if rec is not None:
                found[(rec[0], rec[1])] = rec
        return found

    def upsert(self, cur, sql: str, rows: list[tuple]) -> None:
        cur.executemany(sql, rows)


class _SQLite(_Dialect):
    """Bulk statements are multi-row ``INSERT ... VALUES (...), (...)`` of up to 512 rows
    (:mod:`collector.sqlite_bulk`: ``executemany`` re-acquires the GIL after every row)."""

    sqlite = True

    def __init__(self) -> None:
        super().__init__()
        self.insert_spans = self.upsert_sql("spans", WRITE_COLUMNS, ("trace_id", "span_id"), None)
        self.full_text_search = False
        self._first_new_id = 0  # writes are serialised by the store's lock

    def upsert(self, cur, sql: str, rows: list[tuple]) -> None:
        insert_rows(cur, sql, rows)

    def begin(self, cur) -> None:
        cur.execute("BEGIN IMMEDIATE")  # take the write lock now, not at the first insert
        # Under the write lock, rows inserted by this transaction get ids above the maximum.
        self._first_new_id = cur.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM spans").fetchone()[0]

    def insert_new(self, cur, rows: list[tuple]) -> list[tuple]:
        if insert_rows(cur, self.insert_spans, rows) == len(rows):
            return []
        new = set(cur.execute("SELECT trace_id, span_id FROM spans WHERE id >= ?",
                              (self._first_new_id,)).fetchall())
        return [r for r in rows if (r[0], r[1]) not in new]

    def finish(self, cur) -> None:
        if self.full_text_search:
            # One statement for the whole batch: an FTS5 insert from a per-row trigger flushes
            # the index at every statement and made inserts 3x slower.
            cur.execute(FTS_INDEX_NEW_ROWS, (self._first_new_id,))


class _Postgres(_Dialect):
    """Bulk statements over ``unnest`` of one array per column: one round trip per batch."""

    placeholder = "%s"
    least, greatest = "LEAST", "GREATEST"

    def __init__(self) -> None:
        super().__init__()
        cols = ", ".join(WRITE_COLUMNS)
        self.select_existing = ("SELECT s.trace_id, s.span_id FROM spans s "
                                "JOIN unnest(%b::text[], %b::text[]) AS k(trace_id, span_id) "
                                "ON s.trace_id = k.trace_id AND s.span_id = k.span_id")
        self.copy_spans = f"COPY spans ({cols}) FROM STDIN"
        self.bulk = {
            self.upsert_spans: self._unnest_sql(spans, WRITE_COLUMNS, ("trace_id", "span_id"),
                                                _updates_of(self.upsert_spans)),
            self.upsert_traces: self._unnest_sql(traces, _TRACE_COLUMNS, ("trace_id",),
                                                 _updates_of(self.upsert_traces)),
            self.upsert_sessions: self._unnest_sql(sessions, _SESSION_COLUMNS, ("session_id",),
                                                   _updates_of(self.upsert_sessions)),
        }
        self.bulk[self.insert_logs] = self._unnest_sql(logs, LOG_COLUMNS, ("record_key",), None)

    @staticmethod
    def _unnest_sql(table: sa.Table, columns: Sequence[str], key: Sequence[str],
                    updates: str | None) -> str:
        from sqlalchemy.dialects import postgresql

        dialect = postgresql.dialect()
        # %b: binary parameters; the text format escapes every string in Python (5x slower).
        arrays = ", ".join(f"%b::{table.c[c].type.compile(dialect=dialect)}[]" for c in columns)
        conflict = f" ON CONFLICT ({', '.join(key)}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
        return f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays}){conflict}"

    def insert_new(self, cur, rows: list[tuple]) -> list[tuple]:
        """Look up which keys are stored (one index probe per row, one round trip), then COPY
        the others straight into ``spans``.  COPY's row formatting runs in C: half the client
        CPU of binding one array per column.  It used to COPY into a temporary staging table
        and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` from it, which made the server
        write and read every row twice: measured on the bench rows, 102 us of server-bound wall
        time per span for the two statements against 78 us for the lookup and the direct COPY.
        Should another writer store one of the keys between the lookup and the COPY, the COPY
        fails with a unique violation and the caller redoes the batch row by row (upserts)."""
        cur.execute(self.select_existing, ([r[0] for r in rows], [r[1] for r in rows]))
        stored = set(cur.fetchall())
        new = [r for r in rows if (r[0], r[1]) not in stored] if stored else rows
        if new:
            with cur.copy(self.copy_spans) as copy:
                write = copy.write_row
                for row in new:
                    write(row)
        return [r for r in rows if (r[0], r[1]) in stored] if stored else []

    def upsert(self, cur, sql: str, rows: list[tuple]) -> None:
        if rows:
            cur.execute(self.bulk[sql], _columns(rows))


def _columns(rows: list[tuple]) -> list[list]:
    """Rows -> one list per column (what ``unnest`` takes)."""
    return [list(c) for c in zip(*rows)]


def _on_conflict(key: Sequence[str], updates: dict[str, str] | None) -> str:
    if updates is None:
        return f" ON CONFLICT ({', '.join(key)}) DO NOTHING"
    return f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(f"{c} = {e}" for c, e in updates.items())


def _updates_of(sql: str) -> str:
    return sql.split(" DO UPDATE SET ", 1)[1]


def _sums(table: str) -> dict[str, str]:
    """Rollup sums that saturate at the int64 bounds instead of failing the upsert.

    Nested ``CASE`` because Postgres does not promise to short-circuit ``AND``: ``MAX - delta``
    is only evaluated for a positive delta, ``-MAX - delta`` for a negative one, so neither can
    overflow.  ``cost_usd`` is a float of clamped per-span values (:data:`MAX_COST_USD`)."""
    out = {}
    for c in _ROLLUP_SUMS:
        old, delta = f"{table}.{c}", f"excluded.{c}"
        out[c] = f"{old} + {delta}" if c == "cost_usd" else (
            f"CASE WHEN {delta} > 0 THEN CASE WHEN {old} > {INT64_MAX} - {delta} THEN {INT64_MAX} "
            f"ELSE {old} + {delta} END WHEN {delta} < 0 THEN CASE WHEN {old} < {-INT64_MAX} - {delta} "
            f"THEN {-INT64_MAX} ELSE {old} + {delta} END ELSE {old} END")
    return out


def _saturated(acc: list) -> list:
    """The integer sums of a rollup accumulator (indexes 2-6) held within int64, as the columns."""
    for i in range(2, 7):
        if not -INT64_MAX <= acc[i] <= INT64_MAX:
            acc[i] = INT64_MAX if acc[i] > 0 else -INT64_MAX
    return acc


def _new_rollup() -> list:
    """[start, end, span_count, error_count, turns, input_tokens, output_tokens, cost_usd,
    root_name, service_name, session_id, user_id, received]; neutral bounds so a batch that only
    removes a span (a replay moving it elsewhere) leaves the stored bounds alone."""
    return [INT64_MAX, 0, 0, 0, 0, 0, 0, 0.0, None, None, None, None, 0]


def _add(acc: list, sign: int, start: int, end: int, is_error: bool, turn: bool, tokens_in, tokens_out,
         cost) -> None:
    """Add (sign 1) or remove (sign -1) one span's contribution; a plain function on a list
    because it runs twice per span."""
    if start < acc[0]:
        acc[0] = start
    if end > acc[1]:
        acc[1] = end
    acc[2] += sign
    if is_error:
        acc[3] += sign
    if turn:
        acc[4] += sign
    if tokens_in:
        acc[5] += sign * tokens_in
    if tokens_out:
        acc[6] += sign * tokens_out
    if cost:
        acc[7] += sign * cost


class _Checkpointer:
    """Copies the SQLite WAL into the database file from a thread of its own.

    With the default auto-checkpoint the writer pays for it inside a commit: ~4 MB copied and
    fsynced every 2,000 spans, tens of milliseconds of the export's latency.  A PASSIVE
    checkpoint here runs beside the writer (sqlite3 releases the GIL while it works) and never
    blocks it.
    """

    def __init__(self, path: str, interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import sqlite3

        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or I/O trouble: the next round retries
                    log.debug("background checkpoint skipped: %s", exc)
        finally:
            conn.close()


class Store:
    """A database the exporters write spans to; thread-safe."""

    def __init__(self, url: str, *, max_content_bytes: int, full_text_search: bool = False,
                 pool_size: int = 5, connect_timeout: float = 5.0,
                 sqlite_synchronous: str = "NORMAL", sqlite_busy_timeout: float = 10.0) -> None:
        self.url = url
        self.rows = RowBuilder(max_content_bytes)
        self.clock: Callable[[], int] = time.time_ns  # receipt times (tests set a fake clock)
        self.full_text_search = full_text_search
        self.engine = _make_engine(url, pool_size, connect_timeout, sqlite_synchronous, sqlite_busy_timeout)
        self.dialect = _SQLite() if self.engine.dialect.name == "sqlite" else _Postgres()
        self.join = LogJoin(self.dialect.sqlite, self.rows)
        self.dbapi = self.engine.dialect.dbapi
        self._data_errors = (self.dbapi.DataError, self.dbapi.IntegrityError, ValueError,
                             OverflowError, UnicodeError)
        # SQLite has one writer: serialise in Python rather than spin in busy_timeout.
        self.write_lock = threading.Lock() if self.dialect.sqlite else None
        self._started = False
        self._start_lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate to the newest schema and set up full-text search; idempotent."""
        with self._start_lock:
            if self._started:
                return
            with self.translate_errors(), self.locked():
                from exporters.storage.migrations import upgrade
                from exporters.storage.search import set_full_text_search
                upgrade(self.engine)
                set_full_text_search(self.engine, self.full_text_search)
                if self.dialect.sqlite:
                    self.dialect.full_text_search = self.full_text_search
                    self._checkpointer = _Checkpointer(self.engine.url.database)
                    self._checkpointer.start()
            self._started = True

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self.dialect.sqlite and self._started:
            try:
                self.sqlite_maintenance()
            except self.dbapi.Error as exc:  # closing must not fail shutdown
                log.warning("sqlite checkpoint at shutdown failed: %s", exc)
        self.engine.dispose()

    def sqlite_maintenance(self, vacuum: bool = False) -> None:
        """Give freed pages back to the OS (``vacuum``) and fold the WAL into the database file.

        Runs outside any transaction.  The checkpoint is retried while the background
        checkpointer holds the checkpoint lock, so the file has shrunk when this returns.
        """
        with self.locked():
            raw = self.engine.raw_connection()
            try:
                conn = raw.driver_connection
                if vacuum:
                    # executescript steps to completion; execute() would stop after one step,
                    # and incremental_vacuum frees one page per step.
                    conn.executescript("PRAGMA incremental_vacuum")
                for _ in range(50):
                    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                    if not busy:
                        break
                    time.sleep(0.05)
            finally:
                raw.close()

    @contextmanager
    def locked(self) -> Iterator[None]:
        if self.write_lock is None:
            yield
        else:
            with self.write_lock:
                yield

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn "the database is not there right now" into RetryableError."""
        try:
            yield
        except RetryableError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            if self.is_transient(exc):
                raise RetryableError(f"database unavailable: {_first_line(exc)}") from exc
            raise

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError,
                            sa.exc.DisconnectionError)):
            return True
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return True
        dbapi = self.dbapi
        return isinstance(exc, (dbapi.OperationalError, dbapi.InterfaceError)) or isinstance(exc, OSError)

    def probe(self) -> None:
        """Raise :class:`RetryableError` unless the database takes a write now: migrate if not
        started yet, then commit a no-op ``UPDATE`` (a read would pass on a read-only file or a
        full disk)."""
        try:
            self.start()
            with self.translate_errors(), self.locked(), self.engine.begin() as conn:
                conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = version_num")
        except RetryableError:
            # Pooled connections may be stuck as they were opened (SQLite opens a file it
            # cannot write read-only, for good): the next try connects afresh.
            self.engine.dispose()
            raise

    # -- the write path --------------------------------------------------------------------------

    def write(self, spans: Sequence[Span]) -> WriteResult:
        """Persist ``spans`` in one transaction; returns once committed."""
        return self.write_prepared(self.prepare(spans))

    def prepare(self, spans: Sequence[Span]) -> "PreparedRows":
        """The rows of ``spans`` (pure CPU, no database): the half of :meth:`write` that the
        pipeline runs for the next batch while this one is being committed."""
        stats = RowStats()
        return PreparedRows(self._rows_by_key(spans, stats, (self.clock(),)), stats, len(spans))

    def write_prepared(self, prepared: "PreparedRows") -> WriteResult:
        """Persist prepared rows in one transaction; returns once committed.  ``prepared`` is
        not modified, so a retry after a RetryableError writes the same rows."""
        stats = prepared.stats
        rows = list(prepared.by_key.values())
        result = WriteResult(rejected=stats.rejected)
        if rows:
            self.start()
            with self.translate_errors(), self.locked():
                result.written, result.row_errors = self._write_isolating(rows)
        result.sanitized, result.truncated = stats.sanitized, stats.truncated
        result.rejected += len(result.row_errors)
        return result

    def _rows_by_key(self, spans: Sequence[Span], stats: RowStats,
                     received: tuple[int]) -> dict[tuple[str, str], tuple]:
        """Rows for the batch by key, last one winning when a batch holds the same span twice."""
        builder = self.rows
        resources: dict[int, str | None] = {}
        by_key: dict[tuple[str, str], tuple] = {}
        for span in spans:
            res = span.resource
            res_json = resources.get(id(res), "")
            if res_json == "":
                res_json = resources[id(res)] = builder.json(res.attributes, stats)
            try:
                row = builder.row(span, res_json, stats)
            except Exception:  # noqa: BLE001 - a span we cannot convert must not sink the batch
                log.exception("storage: cannot convert span %r; rejected", span)
                stats.rejected += 1
                continue
            if row is not None:
                by_key[(row[0], row[1])] = row + received
        return by_key

    def _write_isolating(self, rows: list[tuple], depth: int = 0) -> tuple[int, list[str]]:
        """Commit ``rows``; when the transaction fails for a reason that is not the database
        being unavailable (a bug, a value the rollups or a trigger refuse), write each half in a
        transaction of its own, down to the one span at fault, which is rejected alone.  The
        batch may hold several clients' requests (and, with the intake journal, acknowledged
        ones): one poison span must cost only itself.  ~2 log2(n) extra transactions per bad span.
        """
        try:
            return self._transaction(rows)
        except Exception as exc:  # noqa: BLE001 - classified: transient ones go up to be retried
            if self.is_transient(exc):
                raise
            if len(rows) == 1:
                return 0, [f"span {rows[0][0]}/{rows[0][1]}: {_first_line(exc)}"]
            if depth == 0:
                log.warning("storage: a batch of %d spans failed (%s); writing it in halves to isolate "
                            "the span at fault", len(rows), _first_line(exc))
            mid = len(rows) // 2
            written, errors = self._write_isolating(rows[:mid], depth + 1)
            more, more_errors = self._write_isolating(rows[mid:], depth + 1)
            return written + more, errors + more_errors

    def _in_transaction(self, work: Callable[[Any], T]) -> T:
        """Run ``work(cursor)`` in one transaction on a pooled connection: committed when it
        returns, rolled back (and a broken connection discarded) when it raises."""
        raw = self.engine.raw_connection()
        ok = False
        try:
            cur = raw.driver_connection.cursor()
            try:
                self.dialect.begin(cur)
                result = work(cur)
                raw.driver_connection.commit()
                ok = True
                return result
            finally:
                cur.close()
        finally:
            if not ok:
                _rollback_quietly(raw)
            raw.close()

    def _transaction(self, rows: list[tuple]) -> tuple[int, list[str]]:
        def work(cur) -> tuple[int, list[str]]:
            written, old, errors = self._write_spans(cur, self.join.fill_span_rows(cur, rows))
            self._upsert_rollups(cur, written, old)
            return len(written), errors
        return self._in_transaction(work)

    # -- log records -------------------------------------------------------------------------------

    def prepare_logs(self, records: Sequence[Any]) -> PreparedLogs:
        """The ``logs`` rows of decoded log records (pure CPU, no database)."""
        stats = RowStats()
        builder = self.rows
        resources: dict[int, str | None] = {}
        rows = []
        now = self.clock()
        for record in records:
            res = record.resource
            res_json = resources.get(id(res), "")
            if res_json == "":
                res_json = resources[id(res)] = builder.json(res.attributes, stats)
            try:
                rows.append(log_row(builder, record, res_json, stats, now))
            except Exception:  # noqa: BLE001 - a record we cannot convert must not sink the batch
                log.exception("storage: cannot convert log record %r; rejected", record)
                stats.rejected += 1
        return PreparedLogs(rows, stats, len(records))

    def write_logs_prepared(self, prepared: PreparedLogs) -> WriteResult:
        """Persist prepared log rows in one transaction (replays stored once) and join the
        content records among them to their spans; returns once committed."""
        stats = prepared.stats
        result = WriteResult(rejected=stats.rejected, sanitized=stats.sanitized, truncated=stats.truncated)
        if prepared.rows:
            self.start()
            with self.translate_errors(), self.locked():
                result.written, result.row_errors = self._log_transaction(prepared.rows)
        result.rejected += len(result.row_errors)
        return result

    def _log_transaction(self, rows: list[tuple]) -> tuple[int, list[str]]:
        def work(cur) -> tuple[int, list[str]]:
            keys = self.join.content_keys(rows)
            if keys:
                self.join.lock(cur, exclusive=True)
            result = self._insert_logs(cur, rows)
            if keys:
                self.join.fill_stored_spans(cur, keys)
            return result
        return self._in_transaction(work)

    def _insert_logs(self, cur, rows: list[tuple]) -> tuple[int, list[str]]:
        """Insert in bulk; on a data error, row by row in savepoints (keep the good ones)."""
        d = self.dialect
        cur.execute("SAVEPOINT gc_logs")
        try:
            d.upsert(cur, d.insert_logs, rows)
        except self._data_errors as exc:
            cur.execute("ROLLBACK TO SAVEPOINT gc_logs")
            log.warning("storage: log batch insert failed (%s); retrying record by record", _first_line(exc))
            errors = []
            for row in rows:
                cur.execute("SAVEPOINT gc_row")
                try:
                    cur.execute(d.insert_logs, row)
                except self._data_errors as row_exc:
                    cur.execute("ROLLBACK TO SAVEPOINT gc_row")
                    errors.append(f"log record {row[0]}: {_first_line(row_exc)}")
                cur.execute("RELEASE SAVEPOINT gc_row")
            return len(rows) - len(errors), errors
        cur.execute("RELEASE SAVEPOINT gc_logs")
        return len(rows), []

    def _write_spans(self, cur, rows: list[tuple]) -> tuple[list[tuple], dict, list[str]]:
        """Insert new spans in bulk, then update replayed ones; returns (rows written, their old
        rollup values, per-row errors)."""
        d = self.dialect
        cur.execute("SAVEPOINT gc_batch")
        try:
            replays = d.insert_new(cur, rows)
            old = d.fetch_old(cur, replays) if replays else {}
            d.upsert(cur, d.upsert_spans, replays)
        except self._data_errors as exc:
            cur.execute("ROLLBACK TO SAVEPOINT gc_batch")
            written = self._rows_one_by_one(cur, rows, exc)
        else:
            cur.execute("RELEASE SAVEPOINT gc_batch")
            written = rows, old, []
        d.finish(cur)
        return written

    def _rows_one_by_one(self, cur, rows: list[tuple], first: Exception) -> tuple[list[tuple], dict, list[str]]:
        """Upsert each row in its own savepoint; keep the good ones, report the bad."""
        log.warning("storage: batch insert failed (%s); retrying span by span", _first_line(first))
        d = self.dialect
        good, old, errors = [], {}, []
        for row in rows:
            cur.execute("SAVEPOINT gc_row")
            try:
                prev = d.fetch_old(cur, [row])
                cur.execute(d.upsert_spans, row)
            except self._data_errors as exc:
                cur.execute("ROLLBACK TO SAVEPOINT gc_row")
                errors.append(f"span {row[0]}/{row[1]}: {_first_line(exc)}")
            else:
                good.append(row)
                old.update(prev)
            cur.execute("RELEASE SAVEPOINT gc_row")
        return good, old, errors

    def _upsert_rollups(self, cur, rows: list[tuple], old: dict[tuple[str, str], tuple]) -> None:
        by_trace: dict[str, list] = {}
        by_session: dict[str, list] = {}
        i_parent, i_name, i_service = _IDX["parent_span_id"], _IDX["name"], _IDX["service_name"]
        i_start, i_end, i_status = _IDX["start_time_unix_nano"], _IDX["end_time_unix_nano"], _IDX["status_code"]
        i_op, i_model, i_in, i_out = _IDX["operation"], _IDX["model"], _IDX["input_tokens"], _IDX["output_tokens"]
        i_cost, i_session, i_user = _IDX["cost_usd"], _IDX["session_id"], _IDX["user_id"]
        i_received = _IDX["received_unix_nano"]
        for row in rows:
            trace_id, session_id, user_id = row[0], row[i_session], row[i_user]
            t = by_trace.get(trace_id)
            if t is None:
                t = by_trace[trace_id] = _new_rollup()
            contribution = (row[i_start], row[i_end], row[i_status] == 2, is_turn(row[i_op], row[i_model]),
                            row[i_in], row[i_out], row[i_cost])
            _add(t, 1, *contribution)
            received = row[i_received]
            if received > t[12]:
                t[12] = received
            if row[i_parent] is None:
                t[8], t[9] = row[i_name], row[i_service]
            elif t[8] is None and t[9] is None:
                t[9] = row[i_service]
            if t[10] is None:
                t[10] = session_id
            if t[11] is None:
                t[11] = user_id
            if session_id is not None:
                s = by_session.get(session_id)
                if s is None:
                    s = by_session[session_id] = _new_rollup()
                _add(s, 1, *contribution)
                if received > s[12]:
                    s[12] = received
                if s[11] is None:
                    s[11] = user_id
            if old:
                prev = old.get((trace_id, row[1]))
                if prev is not None:
                    _subtract(prev, by_trace, by_session)
        # Sorted so concurrent writers (Postgres) lock rollup rows in the same order: no deadlocks.
        upsert = self.dialect.upsert
        upsert(cur, self.dialect.upsert_traces, [
            (k, t[8], t[9], t[10], t[11], *_saturated(t)[:8], t[12]) for k, t in sorted(by_trace.items())])
        if by_session:
            upsert(cur, self.dialect.upsert_sessions, [
                (k, s[11], *_saturated(s)[:8], s[12]) for k, s in sorted(by_session.items())])


def _subtract(prev: tuple, by_trace: dict[str, list], by_session: dict[str, list]) -> None:
    """Remove a replayed span's stored contribution (its new one was just added)."""
    trace_id, _span_id, status, operation, model, tokens_in, tokens_out, cost, session_id = prev
    contribution = (INT64_MAX, 0, status == 2, is_turn(operation, model), tokens_in, tokens_out, cost)
    _add(by_trace[trace_id], -1, *contribution)
    if session_id is not None:
        s = by_session.get(session_id)
        if s is None:
            s = by_session[session_id] = _new_rollup()
        _add(s, -1, *contribution)


def open_writer(url: str, max_content_bytes: int = 1 << 20) -> Store:
    """A store for a one-off write to an existing database (``replay --record``, ``delete
    --user``): it keeps the database's full-text index as it is, where starting a Store with the
    wrong ``full_text_search`` would drop or build one."""
    store = Store(url, max_content_bytes=max_content_bytes)
    with store.translate_errors(), store.engine.connect() as conn:
        store.full_text_search = fts_enabled(conn)
    return store


def _rollback_quietly(raw) -> None:
    try:
        raw.driver_connection.rollback()
    except Exception:  # noqa: BLE001 - the connection is likely gone; the pool must forget it
        raw.invalidate()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _make_engine(url: str, pool_size: int, connect_timeout: float, synchronous: str,
                 busy_timeout: float) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"isolation_level": None, "check_same_thread": False,
                                                     "timeout": busy_timeout})
        sa.event.listen(engine, "connect", _sqlite_pragmas(synchronous, busy_timeout))
        # isolation_level=None hands transaction control to us; SQLAlchemy's own transactions
        # (migrations, retention, reads) then need an explicit BEGIN (the documented pysqlite
        # recipe).  Deferred: a read must not take the write lock; writers hold the store's lock.
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                            pool_recycle=3600,
                            connect_args={"connect_timeout": max(1, int(connect_timeout)),
                                          "application_name": "genai-collector"})


WAL_AUTOCHECKPOINT_PAGES = 25_000  # ~100 MB of WAL if the checkpointer thread ever falls behind


def _sqlite_pragmas(synchronous: str, busy_timeout: float):
    def on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        if cur.execute("PRAGMA page_count").fetchone()[0] == 0:
            # Only possible before the first table: lets retention give space back to the OS.
            cur.execute("PRAGMA auto_vacuum = INCREMENTAL")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute(f"PRAGMA synchronous = {synchronous}")
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        # Checkpoints run in the background (_Checkpointer); this is only the safety net.
        cur.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        cur.execute("PRAGMA cache_size = -65536")
        cur.execute("PRAGMA temp_store = MEMORY")
        cur.close()
    return on_connect
