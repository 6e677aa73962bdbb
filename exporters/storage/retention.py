"""Retention: ``content_ttl``, ``ttl`` and ``max_size_mb``, enforced by one background thread.

Each rule works in chunks of short transactions so the writer is never blocked for long.  Every
age is counted on the collector's clock from when the data was received (``received_unix_nano``),
never from the span times a client sent: a span stamped 1971 is not deleted at once, one stamped
2090 does not live forever.

- ``content_ttl``: content columns of spans received before now - content_ttl are set to
  NULL (``content_purged`` = 1) and content keys (:mod:`processors.genai_content`) are removed
  from ``attributes``; the rest of the span (model, timings, tokens, cost) stays.  Log records
  received before that lose their content attributes, and GenAI content records their body too.
  Scores (feedback) given before that lose their comment: what a person wrote about a call.
- ``ttl``: whole traces whose last span was received before now - ttl are deleted (spans and the
  ``traces`` row, its log records and scores), sessions whose last span is that old, and log
  records and scores that old.  Deleting by trace keeps the rollups exact: a trace is never half
  deleted.
- ``max_size_mb``: when the data outgrows the cap, the traces received first are deleted (with
  their log records and scores) until the estimate is 10 % under it, and the same share of the
  oldest log records.  SQLite then
  returns the pages to the OS (incremental vacuum);
  Postgres reuses the space after autovacuum, so its size is estimated from the live-row share.

Removed means gone from the SQLite file's bytes: ``secure_delete`` zeroes freed space, the
full-text index is merged, the WAL checkpointed and truncated (see :meth:`Retention._after_removal`
and docs/privacy-defaults.md, which also says what VACUUM does on Postgres).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import orjson
import sqlalchemy as sa

from exporters.storage.config import RetentionPolicy
from exporters.storage.schema import (CONTENT_COLUMNS, LOG_CONTENT_COLUMNS, JSONText, logs, scores, sessions, spans,
                                      traces)
from exporters.storage.search import fts_enabled
from exporters.storage.store import Store
from processors.genai_content import strip_attributes

__all__ = ["RetentionPolicy", "Retention", "RetentionReport"]

log = logging.getLogger("genai_collector.storage.retention")

CHUNK = 2000  # rows per transaction: short enough to keep write latency low


@dataclass
class RetentionReport:
    purged_spans: int = 0     # spans whose content was nulled
    deleted_spans: int = 0
    deleted_traces: int = 0
    deleted_sessions: int = 0
    purged_logs: int = 0      # log records whose content was nulled
    deleted_logs: int = 0
    purged_scores: int = 0    # scores whose comment was nulled
    deleted_scores: int = 0

    def removed(self) -> bool:
        """Whether anything stored was removed (content nulled or rows deleted)."""
        return bool(self.purged_spans or self.deleted_spans or self.purged_logs or self.deleted_logs
                    or self.purged_scores or self.deleted_scores)


class Retention:
    """Applies a :class:`RetentionPolicy` to a :class:`Store`, now (``run_once``) or periodically."""

    def __init__(self, store: Store, policy: RetentionPolicy, *,
                 clock: Callable[[], float] = time.time,
                 on_report: Callable[[RetentionReport], None] | None = None) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.on_report = on_report
        self._content_watermark = 0  # spans older than this were purged by an earlier run
        self._log_content_watermark = 0  # log records received before this were purged
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self.policy.active and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="storage-retention", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.policy.interval):
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - keep trying next interval (db may be down)
                log.warning("retention check failed, will retry: %s", exc)

    # -- one pass --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A write transaction under the store's lock.  On SQLite with ``secure_delete``: what
        retention deletes or nulls is overwritten with zeros in the file, not left in free space
        where any reader of the file (a backup, a copied disk) would still find it.  Only here:
        on the ingest path it would cost ~8 % CPU (rollup upserts free space too) for no privacy."""
        with self.store.locked(), self.store.engine.begin() as conn:
            if self.store.dialect.sqlite:
                conn.exec_driver_sql("PRAGMA secure_delete = ON")
            try:
                yield conn
            finally:
                if self.store.dialect.sqlite:
                    conn.exec_driver_sql("PRAGMA secure_delete = OFF")

    def run_once(self) -> RetentionReport:
        report = RetentionReport()
        now_ns = int(self.clock() * 1e9)
        if self.policy.content_ttl:
            self._purge_content(now_ns - int(self.policy.content_ttl * 1e9), report)
        if self.policy.ttl:
            self._expire(now_ns - int(self.policy.ttl * 1e9), report)
        if self.policy.max_size_bytes:
            self._cap_size(report)
        self._after_removal(report)
        if self.on_report is not None:
            self.on_report(report)
        if report.removed() or report.deleted_sessions:
            log.info("retention: purged content of %d spans, %d log records and %d scores; deleted %d spans, "
                     "%d traces, %d sessions, %d log records, %d scores", report.purged_spans, report.purged_logs,
                     report.purged_scores, report.deleted_spans, report.deleted_traces, report.deleted_sessions,
                     report.deleted_logs, report.deleted_scores)
        return report

    def _purge_content(self, cutoff_ns: int, report: RetentionReport) -> None:
        """Remove the content of spans received before the cutoff, chunk by chunk: the content
        columns are nulled, and any content key still in ``attributes`` (rows written before a
        dialect's key joined :mod:`processors.genai_content`) is taken out of it too."""
        # sa.null(): a Python None would become the JSON value null in a JSONB column.
        nulls = {c: sa.null() for c in CONTENT_COLUMNS} | {"content_purged": 1}
        while True:
            select = (sa.select(spans.c.id, spans.c.attributes)
                      .where(spans.c.received_unix_nano >= self._content_watermark,
                             spans.c.received_unix_nano < cutoff_ns, spans.c.content_purged == 0)
                      .limit(CHUNK))
            with self._transaction() as conn:
                rows = conn.execute(select).all()
                if rows:
                    conn.execute(spans.update().where(spans.c.id.in_([r.id for r in rows])).values(nulls))
                    encode = _dumps if self.store.dialect.sqlite else dict  # TEXT there, JSONB on Postgres
                    scrubbed = [{"row_id": r.id, "clean": encode(a)} for r in rows
                                if (a := _without_content(r.attributes)) is not None]
                    if scrubbed:
                        conn.execute(spans.update().where(spans.c.id == sa.bindparam("row_id"))
                                     .values(attributes=sa.bindparam("clean", type_=JSONText)), scrubbed)
            report.purged_spans += len(rows)
            if len(rows) < CHUNK:
                break
        self._content_watermark = cutoff_ns
        self._purge_log_content(cutoff_ns, report)
        self._purge_score_comments(cutoff_ns, report)

    def _purge_log_content(self, cutoff_ns: int, report: RetentionReport) -> None:
        """Null the content of log records received before the cutoff (the collector's clock:
        a client's wrong clock cannot keep content longer); receipt times only grow, so records
        received before the last run's cutoff are done."""
        nulls = {c: sa.null() for c in LOG_CONTENT_COLUMNS} | {
            "body": sa.case((logs.c.kind == "content", sa.null()), else_=logs.c.body), "content_purged": 1}
        ids = (sa.select(logs.c.id).where(logs.c.received_unix_nano >= self._log_content_watermark,
                                          logs.c.received_unix_nano < cutoff_ns, logs.c.content_purged == 0)
               .limit(CHUNK).scalar_subquery())
        while self._in_chunk(logs.update().where(logs.c.id.in_(ids)).values(nulls), report, "purged_logs") == CHUNK:
            pass
        self._log_content_watermark = cutoff_ns

    def _purge_score_comments(self, cutoff_ns: int, report: RetentionReport) -> None:
        """Null the comments of scores given before the cutoff (``time_unix_nano`` is the
        collector's clock when the score was received); name, value, label and author stay, so
        feedback still counts in ``stats`` and ``eval-candidates``."""
        ids = (sa.select(scores.c.id).where(scores.c.time_unix_nano < cutoff_ns, scores.c.comment.is_not(None))
               .limit(CHUNK).scalar_subquery())
        while self._in_chunk(scores.update().where(scores.c.id.in_(ids)).values(comment=sa.null()), report,
                             "purged_scores") == CHUNK:
            pass

    def _in_chunk(self, statement: sa.Executable, report: RetentionReport, field: str) -> int:
        """Run one chunk's UPDATE or DELETE in its own transaction; adds its row count to ``field``."""
        with self._transaction() as conn:
            count = conn.execute(statement).rowcount
        setattr(report, field, getattr(report, field) + count)
        return count

    def _expire(self, cutoff_ns: int, report: RetentionReport) -> None:
        """Delete traces (and their spans) last received before the cutoff, then old sessions."""
        expired = sa.select(traces.c.trace_id).where(traces.c.received_unix_nano < cutoff_ns)
        while self._delete_traces(expired.limit(CHUNK), report) == CHUNK:
            pass
        with self._transaction() as conn:
            report.deleted_sessions += conn.execute(
                sessions.delete().where(sessions.c.received_unix_nano < cutoff_ns)).rowcount
        old_logs = sa.select(logs.c.id).where(logs.c.received_unix_nano < cutoff_ns)
        while self._delete_logs(old_logs.limit(CHUNK), report) == CHUNK:
            pass
        old_scores = sa.select(scores.c.id).where(scores.c.time_unix_nano < cutoff_ns).limit(CHUNK).scalar_subquery()
        while self._in_chunk(scores.delete().where(scores.c.id.in_(old_scores)), report, "deleted_scores") == CHUNK:
            pass

    def _delete_logs(self, select_ids: sa.Select, report: RetentionReport) -> int:
        return self._in_chunk(logs.delete().where(logs.c.id.in_(select_ids.scalar_subquery())), report, "deleted_logs")

    def _delete_traces(self, select_ids: sa.Select, report: RetentionReport) -> int:
        with self._transaction() as conn:
            ids = list(conn.execute(select_ids).scalars())
            if ids:
                report.deleted_spans += conn.execute(spans.delete().where(spans.c.trace_id.in_(ids))).rowcount
                report.deleted_logs += conn.execute(logs.delete().where(logs.c.trace_id.in_(ids))).rowcount
                report.deleted_scores += conn.execute(scores.delete().where(scores.c.trace_id.in_(ids))).rowcount
                conn.execute(traces.delete().where(traces.c.trace_id.in_(ids)))
        report.deleted_traces += len(ids)
        return len(ids)

    def _cap_size(self, report: RetentionReport) -> None:
        cap = self.policy.max_size_bytes
        for _round in range(3):  # the share is an estimate (tables and indexes have a fixed part)
            size = self.store_size()
            if size <= cap or not self._drop_oldest_share((size - 0.9 * cap) / size, size, report):
                break
        with self._transaction() as conn:
            first = sa.select(sa.func.min(traces.c.received_unix_nano)).scalar_subquery()
            report.deleted_sessions += conn.execute(
                sessions.delete().where(sa.or_(first.is_(None), sessions.c.received_unix_nano < first))).rowcount

    def _drop_oldest_share(self, share: float, size: int, report: RetentionReport) -> int:
        """Delete the oldest ``share`` of traces and of log records; returns how many went."""
        with self.store.engine.connect() as conn:
            trace_count = conn.execute(sa.select(sa.func.count()).select_from(traces)).scalar_one()
            log_count = conn.execute(sa.select(sa.func.count()).select_from(logs)).scalar_one()
        log.warning("retention: database holds ~%d MB, above max_size_mb=%d; deleting the %d oldest traces "
                    "and %d oldest log records", size // 2**20, self.policy.max_size_bytes // 2**20,
                    math.ceil(trace_count * share), math.ceil(log_count * share))
        # Spans received together go by their own times: deleting them in the order they were
        # written frees whole pages (SQLite gives those back to the OS).
        first_received = sa.select(traces.c.trace_id).order_by(traces.c.received_unix_nano,
                                                               traces.c.start_time_unix_nano)
        deleted = self._delete_oldest(first_received, math.ceil(trace_count * share), self._delete_traces, report)
        return deleted + self._delete_oldest(sa.select(logs.c.id).order_by(logs.c.received_unix_nano),
                                             math.ceil(log_count * share), self._delete_logs, report)

    @staticmethod
    def _delete_oldest(oldest: sa.Select, count: int, delete, report: RetentionReport) -> int:
        done = 0
        while done < count:
            deleted = delete(oldest.limit(min(CHUNK, count - done)), report)
            if not deleted:
                break
            done += deleted
        return done

    def _after_removal(self, report: RetentionReport) -> None:
        """Make removed content leave the SQLite file's bytes: secure_delete (on in retention's
        transactions) zeroed the freed cells and pages; the full-text index still holds the words
        of purged rows in its older segments until they are merged ('optimize'), and the WAL
        still holds page images from before the purge until a checkpoint truncates it."""
        if not self.store.dialect.sqlite or not report.removed():
            return
        with self._transaction() as conn:
            if fts_enabled(conn):
                conn.exec_driver_sql("INSERT INTO spans_fts (spans_fts) VALUES ('optimize')")
        self.store.sqlite_maintenance(vacuum=True)

    def store_size(self) -> int:
        """Bytes of live data (what ``max_size_mb`` caps)."""
        with self.store.engine.connect() as conn:
            if self.store.dialect.sqlite:
                page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
                return (pages - free) * page_size
            row = conn.exec_driver_sql(
                "SELECT COALESCE(SUM(pg_total_relation_size(relid) * CASE WHEN n_live_tup + n_dead_tup = 0 "
                "THEN 1.0 ELSE n_live_tup::float8 / (n_live_tup + n_dead_tup) END), 0) "
                "FROM pg_stat_user_tables WHERE relname IN ('spans', 'traces', 'sessions', 'logs') "
                "AND schemaname = current_schema()").scalar_one()
            return int(row)


def _without_content(attributes: str | dict | None) -> dict | None:
    """``attributes`` (JSON text on SQLite, a dict from JSONB) without content keys, or None when
    it holds none."""
    if not attributes:
        return None
    parsed = orjson.loads(attributes) if isinstance(attributes, str) else dict(attributes)
    return parsed if isinstance(parsed, dict) and strip_attributes(parsed) else None


def _dumps(value: dict) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
