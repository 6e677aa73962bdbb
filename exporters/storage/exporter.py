"""The storage exporter class both ``sqlite`` and ``postgres`` create."""

from __future__ import annotations

import threading
import time

from collector.component import READY, ComponentContext, Exporter, Health, RetryableError
from collector.model import LOGS, Batch
from exporters.storage.config import StorageConfig
from exporters.storage.retention import Retention, RetentionReport
from exporters.storage.store import PreparedLogs, PreparedRows, Store

__all__ = ["StorageExporter"]

PROBE_INITIAL, PROBE_MAX = 0.25, 2.0      # seconds between probes of a database that is down
LOG_AGAIN_INITIAL, LOG_AGAIN_MAX = 30.0, 600.0  # an outage is logged again after 30 s, 60 s, ... 10 min


class StorageExporter(Exporter):
    """Writes each batch in one transaction; durable once ``export`` returns.

    Readiness (``reports_health``): a write or start that fails because the database cannot
    be used (unreachable, missing, read-only, disk full: every :class:`RetryableError`) makes the
    exporter not ready with that reason; the pipelines then refuse new data at once with
    UNAVAILABLE / 503, and a probe thread writes a no-op to the database until it answers, which
    makes it ready again (after a failed batch write, the pipeline's retry of that batch, every
    5 s at most, must succeed instead).  The outage is logged when it starts, again with backoff
    while it lasts, and when it ends.
    """

    durable = True
    prepares = True
    reports_health = True

    def __init__(self, store: Store, config: StorageConfig, ctx: ComponentContext) -> None:
        self.store = store
        self.log = ctx.logger
        self._written = ctx.counter("storage_written_spans", "spans committed to the database")
        self._rejected = ctx.counter("storage_rejected_spans", "spans refused (ids not storable or a "
                                     "row the database rejected)")
        self._sanitized = ctx.counter("storage_sanitized_values", "values rewritten to be storable "
                                      "(invalid UTF-8, NUL, NaN/inf, unsupported types, clamped costs)")
        self._truncated = ctx.counter("storage_truncated_values", "values cut at max_content_bytes")
        self._unavailable = ctx.counter("storage_unavailable_errors", "exports refused because the "
                                        "database was unreachable or locked (retried)")
        self._written_logs = ctx.counter("storage_written_log_records", "log records committed to the database "
                                         "(a replayed record is stored once)")
        self._rejected_logs = ctx.counter("storage_rejected_log_records", "log records refused (a row the "
                                          "database rejected)")
        self._purged = ctx.counter("storage_retention_purged_spans", "spans whose content content_ttl removed")
        self._deleted = ctx.counter("storage_retention_deleted_spans", "spans deleted by ttl or max_size_mb")
        self._deleted_traces = ctx.counter("storage_retention_deleted_traces", "traces deleted by retention")
        self._deleted_logs = ctx.counter("storage_retention_deleted_log_records", "log records deleted by ttl "
                                         "or max_size_mb")
        self._health = READY
        self._health_lock = threading.Lock()
        self._down = threading.Event()  # set while not ready: wakes the probe thread
        self._down_since = 0.0
        self._write_failing = False  # a batch write failed and has not succeeded since
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        ctx.gauge("storage_ready", "1 when the database takes writes, 0 while it is unavailable",
                  lambda: 1 if self._health.ready else 0)
        self.retention = Retention(store, config.retention_policy(), on_report=self._count_retention)
        try:
            store.probe()  # migrates, then proves the database takes writes (read-only file?)
        except RetryableError as exc:  # start anyway: not ready until the database answers
            self._mark_down(exc)
        self.retention.start()

    def health(self) -> Health:
        return self._health

    def export(self, batch: Batch) -> None:
        self.export_prepared(self.prepare(batch))

    # The pipeline's two-stage protocol: rows are built in its process stage (``prepare``) while
    # the previous batch is committed, then written here (``export_prepared``).  One instance may
    # serve a traces and a logs pipeline: each prepared object knows its signal by its type.

    def prepare(self, batch: Batch) -> PreparedRows | PreparedLogs:
        if batch.signal == LOGS:
            return self.store.prepare_logs(batch.items)
        return self.store.prepare(batch.items)

    @staticmethod
    def merge_prepared(parts: list) -> PreparedRows | PreparedLogs:
        return type(parts[0]).merge(parts)

    def export_prepared(self, prepared: PreparedRows | PreparedLogs) -> None:
        logs = isinstance(prepared, PreparedLogs)
        try:
            if logs:
                result = self.store.write_logs_prepared(prepared)
            else:
                result = self.store.write_prepared(prepared)
        except RetryableError as exc:
            self._unavailable.add(prepared.records if logs else prepared.spans)
            self._write_failing = True
            self._mark_down(exc)
            raise
        self._write_failing = False
        self._mark_up()
        (self._written_logs if logs else self._written).add(result.written)
        (self._rejected_logs if logs else self._rejected).add(result.rejected)
        self._sanitized.add(result.sanitized)
        self._truncated.add(result.truncated)
        for message in result.row_errors[:5]:
            self.log.warning("%s rejected by the database: %s", "log record" if logs else "row", message)

    def shutdown(self) -> None:
        self._stop.set()
        self._down.set()  # wake the probe thread so it sees the stop
        if self._prober is not None:
            self._prober.join(timeout=10)
        self.retention.stop()
        self.store.close()

    # -- readiness ---------------------------------------------------------------------------------

    def _mark_down(self, exc: Exception) -> None:
        """Not ready with ``exc`` as the reason; the first time, log it and start probing."""
        reason = str(exc)
        with self._health_lock:
            was_ready = self._health.ready
            self._health = Health(False, reason, retry_after=PROBE_MAX)
            if not was_ready:
                return
            self._down_since = time.monotonic()
            self.log.warning("not ready: %s; refusing new data until the database answers", reason)
            self._down.set()
            if self._prober is None:
                self._prober = threading.Thread(target=self._probe, name="storage-probe", daemon=True)
                self._prober.start()

    def _mark_up(self) -> None:
        if self._health.ready:
            return
        with self._health_lock:
            if self._health.ready:
                return
            self._health = READY
            self._down.clear()
            self.log.info("ready: the database answers again after %.1fs; resumed writing",
                          time.monotonic() - self._down_since)

    def _probe(self) -> None:
        """While not ready: write a no-op to the database, more slowly as the outage lasts; log
        the outage again after 30 s, 60 s, 120 s ... (at most every 10 min), not at each try."""
        while self._down.wait() and not self._stop.is_set():
            self._probe_until_ready()

    def _probe_until_ready(self) -> None:
        delay, log_again = PROBE_INITIAL, LOG_AGAIN_INITIAL
        while not self._health.ready and not self._stop.wait(delay):
            try:
                self.store.probe()
            except RetryableError as exc:
                self._mark_down(exc)
                down_for = time.monotonic() - self._down_since
                if down_for >= log_again:
                    self.log.warning("still not ready after %.0fs: %s", down_for, exc)
                    log_again = min(log_again * 2, down_for + LOG_AGAIN_MAX)
                delay = min(delay * 2, PROBE_MAX)
            except Exception:  # noqa: BLE001 - a bug in the probe must not end it silently
                self.log.exception("readiness probe failed")
                delay = PROBE_MAX
            else:
                # A no-op write can pass where a batch still fails (a full disk takes one
                # page, not a batch): then the pipeline's retry of that batch decides.
                if not self._write_failing:
                    self._mark_up()

    def _count_retention(self, report: RetentionReport) -> None:
        self._purged.add(report.purged_spans)
        self._deleted.add(report.deleted_spans)
        self._deleted_traces.add(report.deleted_traces)
        self._deleted_logs.add(report.deleted_logs)
