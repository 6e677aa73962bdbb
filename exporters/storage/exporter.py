"""The storage exporter class both ``sqlite`` and ``postgres`` create."""

from __future__ import annotations

import threading

from collector.component import ComponentContext, Exporter, RetryableError
from collector.model import LOGS, Batch
from exporters.storage.config import StorageConfig
from exporters.storage.retention import Retention, RetentionReport
from exporters.storage.store import PreparedLogs, PreparedRows, Store

__all__ = ["StorageExporter"]


class StorageExporter(Exporter):
    """Writes each batch in one transaction; durable once ``export`` returns."""

    durable = True
    prepares = True

    def __init__(self, store: Store, config: StorageConfig, ctx: ComponentContext) -> None:
        self.store = store
        self.log = ctx.logger
        self._written = ctx.counter("storage_written_spans", "spans committed to the database")
        self._rejected = ctx.counter("storage_rejected_spans", "spans refused (ids not storable or a "
                                     "row the database rejected)")
        self._sanitized = ctx.counter("storage_sanitized_values", "values rewritten to be storable "
                                      "(invalid UTF-8, NUL, NaN/inf, unsupported types)")
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
        self._down = False
        self._down_lock = threading.Lock()
        self.retention = Retention(store, config.retention_policy(), on_report=self._count_retention)
        try:
            store.start()
        except RetryableError as exc:  # start anyway: export retries, the pipeline buffers
            self._mark_down(exc)
        self.retention.start()

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
            self._mark_down(exc)
            raise
        self._mark_up()
        (self._written_logs if logs else self._written).add(result.written)
        (self._rejected_logs if logs else self._rejected).add(result.rejected)
        self._sanitized.add(result.sanitized)
        self._truncated.add(result.truncated)
        for message in result.row_errors[:5]:
            self.log.warning("%s rejected by the database: %s", "log record" if logs else "row", message)

    def shutdown(self) -> None:
        self.retention.stop()
        self.store.close()

    def _mark_down(self, exc: Exception) -> None:
        """Log the outage once, not once per retry."""
        with self._down_lock:
            if not self._down:
                self._down = True
                self.log.warning("%s; retrying with backoff, holding new data upstream", exc)

    def _mark_up(self) -> None:
        if self._down:
            with self._down_lock:
                self._down = False
            self.log.info("database reachable again; resumed writing")

    def _count_retention(self, report: RetentionReport) -> None:
        self._purged.add(report.purged_spans)
        self._deleted.add(report.deleted_spans)
        self._deleted_traces.add(report.deleted_traces)
        self._deleted_logs.add(report.deleted_logs)
