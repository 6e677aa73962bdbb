"""The SQL side of log records: join content records to their spans.

Both directions run inside the writer's transaction, a fixed number of statements per batch
(never one round trip per row on the hot path):

- a span batch: the GenAI calls missing a message column look up their content records (one
  ``SELECT`` on ``ix_logs_span`` for the batch) and are written with the transcript already in
  their row (:meth:`LogJoin.fill_span_rows`);
- a log batch: records are inserted (``ON CONFLICT (record_key) DO NOTHING``); when some carry
  content, the spans they belong to are read (one ``SELECT``), and those that are stored and can
  take content get their message columns rebuilt from all their records (one ``SELECT``, then one
  ``UPDATE`` over arrays on Postgres; SQLite, in process, runs one per span that changes) (:meth:`LogJoin.fill_stored_spans`).

Either way the result is :func:`exporters.storage.transcript.transcript` of the span's own content
and every stored record, so arrival order, separate requests, restarts and replays all converge.

Postgres runs writers concurrently: a span batch reading "no records yet" while a log batch reads
"no span yet" would lose the join.  Span batches that join take a shared transaction-level advisory
lock, log batches with content an exclusive one, before their first statement; span batches
never wait for each other.  SQLite has one writer at a time (the store's lock).
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson

from exporters.storage.logrows import LOG_COLUMNS
from exporters.storage.rows import SPAN_COLUMNS, RowBuilder, RowStats
from exporters.storage.schema import LOG_CONTENT_BITS
from exporters.storage.sqltext import json_column
from exporters.storage.transcript import MESSAGE_COLUMNS, ContentRecord, transcript

__all__ = ["LogJoin", "JOIN_LOCK_ID"]

JOIN_LOCK_ID = 0x67656E6A6F696E  # "genjoin": the Postgres advisory lock of the content join

_IDX = {name: i for i, name in enumerate(SPAN_COLUMNS)}
_I_MODEL, _I_OP, _I_MASK = _IDX["model"], _IDX["operation"], _IDX["content_from_logs"]
_I_MESSAGES = tuple((c, _IDX[c]) for c in MESSAGE_COLUMNS)
_I_KIND, _I_TRACE, _I_SPAN = (LOG_COLUMNS.index(c) for c in ("kind", "trace_id", "span_id"))


class LogJoin:
    """Dialect-specific statements of the log write path and the content join."""

    def __init__(self, sqlite: bool, rows: RowBuilder) -> None:
        self.sqlite = sqlite
        self.rows = rows
        # One parameter for the batch's trace ids: a JSON array (SQLite) or a text[] (Postgres).
        ids = "IN (SELECT value FROM json_each(?))" if sqlite else "= ANY(%s::text[])"
        self.select_content = ("SELECT trace_id, span_id, event_name, timestamp_unix_nano, id, body, content "
                               f"FROM logs WHERE trace_id {ids} AND trace_id IS NOT NULL AND kind = 'content'")
        self.select_spans = ("SELECT trace_id, span_id, content_from_logs, content_purged, "
                             + ", ".join(f"{c} IS NULL" for c in MESSAGE_COLUMNS)
                             + f" FROM spans WHERE trace_id {ids}")
        if sqlite:
            self.update_span = ("UPDATE spans SET " + ", ".join(f"{c} = COALESCE(?, {c})" for c in MESSAGE_COLUMNS)
                                + ", content_from_logs = ? WHERE trace_id = ? AND span_id = ?")
        else:  # one statement for the batch: an array per column (executemany is a round trip a row)
            self.update_span = (
                "UPDATE spans SET " + ", ".join(f"{c} = COALESCE(u.{c}, spans.{c})" for c in MESSAGE_COLUMNS)
                + ", content_from_logs = u.mask FROM unnest(%s::jsonb[], %s::jsonb[], %s::jsonb[], %s::smallint[], "
                "%s::text[], %s::text[]) AS u(" + ", ".join(MESSAGE_COLUMNS) + ", mask, trace_id, span_id) "
                "WHERE spans.trace_id = u.trace_id AND spans.span_id = u.span_id")

    def _ids(self, trace_ids: Iterable[str]) -> Any:
        ids = sorted(set(trace_ids))
        return orjson.dumps(ids).decode() if self.sqlite else ids

    def lock(self, cur, exclusive: bool) -> None:
        """Order this transaction's join against concurrent writers (Postgres only)."""
        if not self.sqlite:
            fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            cur.execute(f"SELECT {fn}(%s)", (JOIN_LOCK_ID,))

    def content_of(self, cur, keys: set[tuple[str, str]]) -> dict[tuple[str, str], list[ContentRecord]]:
        """The stored content records of the spans ``keys``."""
        cur.execute(self.select_content, (self._ids(k[0] for k in keys),))
        found: dict[tuple[str, str], list[ContentRecord]] = {}
        for trace_id, span_id, name, timestamp, rid, body, content in cur.fetchall():
            if (trace_id, span_id) in keys:
                found.setdefault((trace_id, span_id), []).append(
                    ContentRecord(name, timestamp, rid, json_column(body), json_column(content)))
        return found

    # -- a span batch ------------------------------------------------------------------------------

    @staticmethod
    def wants_content(row: tuple) -> bool:
        """A GenAI call missing a message column: its records may hold the transcript."""
        return (row[_I_MODEL] is not None or row[_I_OP] is not None) and any(row[i] is None for _c, i in _I_MESSAGES)

    def fill_span_rows(self, cur, rows: list[tuple]) -> list[tuple]:
        """``rows`` with the transcript of the calls whose content records are stored already
        (new tuples: the prepared rows are reused if the transaction is retried)."""
        keys = {(r[0], r[1]) for r in rows if self.wants_content(r)}
        if not keys:
            return rows
        self.lock(cur, exclusive=False)
        records = self.content_of(cur, keys)
        if not records:
            return rows
        stats = RowStats()
        out = []
        for row in rows:
            found = records.get((row[0], row[1]))
            if found:
                row = self._with_transcript(row, found, stats)
            out.append(row)
        return out

    def _with_transcript(self, row: tuple, records: list[ContentRecord], stats: RowStats) -> tuple:
        values = transcript(records, [c for c, i in _I_MESSAGES if row[i] is None])
        if not values:
            return row
        filled = list(row)
        mask = 0
        for column, value in values.items():
            filled[_IDX[column]] = self.rows.json(value, stats)
            mask |= LOG_CONTENT_BITS[column]
        filled[_I_MASK] = mask
        return tuple(filled)

    # -- a log batch -------------------------------------------------------------------------------

    @staticmethod
    def content_keys(rows: list[tuple]) -> set[tuple[str, str]]:
        return {(r[_I_TRACE], r[_I_SPAN]) for r in rows if r[_I_KIND] == "content" and r[_I_TRACE] is not None}

    def fill_stored_spans(self, cur, keys: set[tuple[str, str]]) -> int:
        """Rebuild the message columns of the stored spans ``keys`` that take content from
        records (a column the span carried itself stays); returns the spans updated."""
        cur.execute(self.select_spans, (self._ids(k[0] for k in keys),))
        fillable: dict[tuple[str, str], tuple[int, list[str]]] = {}
        for trace_id, span_id, mask, purged, *nulls in cur.fetchall():
            if (trace_id, span_id) not in keys or purged:
                continue  # content_ttl removed this span's content: a late record must not restore it
            columns = [c for c, is_null in zip(MESSAGE_COLUMNS, nulls) if is_null or mask & LOG_CONTENT_BITS[c]]
            if columns:
                fillable[(trace_id, span_id)] = (mask, columns)
        if not fillable:
            return 0
        records = self.content_of(cur, set(fillable))
        stats = RowStats()
        updates = []
        for key, (mask, columns) in fillable.items():
            values = transcript(records.get(key, ()), columns)
            if values:
                for column in values:
                    mask |= LOG_CONTENT_BITS[column]
                updates.append((*(self.rows.json(values.get(c), stats) for c in MESSAGE_COLUMNS), mask, *key))
        if updates and self.sqlite:
            cur.executemany(self.update_span, updates)
        elif updates:
            cur.execute(self.update_span, [list(c) for c in zip(*updates)])
        return len(updates)
