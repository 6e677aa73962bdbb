"""Erase one person's data: ``genai-collector delete --user`` and ``DELETE /api/v1/users/{id}``.

What goes, in one transaction:

- every trace holding a span of the user (optionally only in one session / started before a
  time): all its spans, not only the user's (a root or tool span of their request carries their
  content too), and its ``traces`` row, as retention deletes whole traces so the rollups stay exact;
- the rows of :data:`RELATED` tables that belong to those traces or sessions (log records,
  scores...), for each table the store has;
- the sessions those spans were in: the ``sessions`` row is recomputed from the spans left (the
  same rules as the write path, :func:`exporters.storage.rows.is_turn`) and deleted when none are;
- full-text entries go with their rows (SQLite's FTS triggers; Postgres' generated column).

Then the bytes: on SQLite the deleting connection runs with ``secure_delete`` (deleted cells and
freed pages are overwritten with zeros), the FTS index is optimized (its segments still held the
deleted words) and the file is given back to the OS and the WAL truncated, as retention does.
Postgres is vacuumed (dead rows become reusable space; see docs/delete-user.md for what that means).

The session-grouping state of ``genai_session`` lives elsewhere (its own SQLite file or database):
:func:`forget_in_session_state` erases the user there.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import sqlalchemy as sa

from exporters.storage.rows import is_turn
from exporters.storage.schema import sessions, spans, traces
from exporters.storage.search import FTS_PRESENT
from exporters.storage.store import Store

__all__ = ["Related", "RELATED", "Selection", "ErasureReport", "erase_user", "forget_in_session_state",
           "StateLocation", "state_locations", "audit_line"]

audit = logging.getLogger("genai_collector.audit")

CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class Related:
    """Rows of ``table`` whose ``column`` holds an erased trace id (``by="trace"``) or session id
    (``by="session"``); skipped when the store has no such table or column (yet)."""

    table: str
    column: str
    by: str


RELATED: tuple[Related, ...] = (
    Related("logs", "trace_id", "trace"),
    Related("scores", "trace_id", "trace"),
    Related("scores", "session_id", "session"),
)
"""Every table besides spans / traces / sessions that holds a person's data: one line each."""


@dataclass(frozen=True)
class Selection:
    user: str
    session: str | None = None
    before_ns: int | None = None


@dataclass
class ErasureReport:
    spans: int = 0
    traces: int = 0
    sessions_deleted: int = 0
    sessions_updated: int = 0
    full_text_entries: int = 0
    related: dict[str, int] = field(default_factory=dict)
    session_state_rows: int | None = None  # None: no genai_session state reached
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        related = "".join(f", {n} {t} rows" for t, n in sorted(self.related.items()))
        state = ("no session-grouping state reached" if self.session_state_rows is None
                 else f"{self.session_state_rows} session-grouping state rows")
        return (f"{self.spans} spans, {self.traces} traces, {self.sessions_deleted} sessions deleted "
                f"({self.sessions_updated} recomputed), {self.full_text_entries} full-text entries"
                f"{related}, {state}")


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield list(items[i:i + CHUNK])


def _selected_traces(conn: sa.Connection, sel: Selection) -> list[str]:
    where = [spans.c.user_id == sel.user]
    if sel.session is not None:
        where.append(spans.c.session_id == sel.session)
    if sel.before_ns is not None:
        where.append(spans.c.start_time_unix_nano < sel.before_ns)
    return sorted(conn.execute(sa.select(spans.c.trace_id).where(*where).distinct()).scalars())


def _sessions_of(conn: sa.Connection, trace_ids: list[str], sel: Selection) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(trace_ids):
        found.update(conn.execute(sa.select(spans.c.session_id).where(
            spans.c.trace_id.in_(chunk), spans.c.session_id.is_not(None)).distinct()).scalars())
    where = [sessions.c.user_id == sel.user]  # a user's session rows whose spans are already gone
    if sel.session is not None:
        where.append(sessions.c.session_id == sel.session)
    if sel.before_ns is not None:
        where.append(sessions.c.end_time_unix_nano < sel.before_ns)
    found.update(conn.execute(sa.select(sessions.c.session_id).where(*where)).scalars())
    return found


def _present(conn: sa.Connection) -> list[Related]:
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    return [r for r in RELATED if r.table in tables
            and r.column in {c["name"] for c in inspector.get_columns(r.table)}]


def _delete_related(conn: sa.Connection, related: Related, keys: list[str]) -> int:
    column = sa.column(related.column)
    table = sa.table(related.table, column)
    return sum(conn.execute(table.delete().where(column.in_(chunk))).rowcount for chunk in _chunks(keys))


_SESSION_FIELDS = (spans.c.start_time_unix_nano, spans.c.end_time_unix_nano, spans.c.status_code,
                   spans.c.operation, spans.c.model, spans.c.input_tokens, spans.c.output_tokens,
                   spans.c.cost_usd, spans.c.user_id)


def _session_rollup(conn: sa.Connection, session_id: str) -> dict[str, Any] | None:
    """The session's rollup from its stored spans (None when it has none), as the write path
    accumulates it: first user seen, time bounds, sums, turns by :func:`is_turn`."""
    rows = conn.execute(sa.select(*_SESSION_FIELDS).where(spans.c.session_id == session_id)
                        .order_by(spans.c.start_time_unix_nano)).all()
    if not rows:
        return None
    return {
        "user_id": next((r.user_id for r in rows if r.user_id is not None), None),
        "start_time_unix_nano": min(r.start_time_unix_nano for r in rows),
        "end_time_unix_nano": max(r.end_time_unix_nano for r in rows),
        "span_count": len(rows),
        "error_count": sum(1 for r in rows if r.status_code == 2),
        "turns": sum(1 for r in rows if is_turn(r.operation, r.model)),
        "input_tokens": sum(r.input_tokens or 0 for r in rows),
        "output_tokens": sum(r.output_tokens or 0 for r in rows),
        "cost_usd": float(sum(r.cost_usd or 0 for r in rows)),
    }


def _erase(conn: sa.Connection, sel: Selection, report: ErasureReport, fts: bool) -> None:
    """Delete, inside the caller's transaction (a dry run rolls it back: exact counts, no change)."""
    trace_ids = _selected_traces(conn, sel)
    session_ids = sorted(_sessions_of(conn, trace_ids, sel))
    for related in _present(conn):
        keys = trace_ids if related.by == "trace" else session_ids
        report.related[related.table] = report.related.get(related.table, 0) + _delete_related(conn, related, keys)
    for chunk in _chunks(trace_ids):
        report.spans += conn.execute(spans.delete().where(spans.c.trace_id.in_(chunk))).rowcount
        report.traces += conn.execute(traces.delete().where(traces.c.trace_id.in_(chunk))).rowcount
    if fts:
        report.full_text_entries = report.spans
    for session_id in session_ids:
        rollup = _session_rollup(conn, session_id)
        if rollup is None:
            report.sessions_deleted += conn.execute(
                sessions.delete().where(sessions.c.session_id == session_id)).rowcount
        else:
            report.sessions_updated += conn.execute(
                sessions.update().where(sessions.c.session_id == session_id).values(rollup)).rowcount


def erase_user(store: Store, sel: Selection, dry_run: bool = False) -> ErasureReport:
    """Delete (or, ``dry_run``, count) ``sel``'s data in ``store`` and scrub the freed bytes."""
    report = ErasureReport(dry_run=dry_run)
    store.start()
    sqlite = store.dialect.sqlite
    with store.translate_errors(), store.locked(), store.engine.connect() as conn:
        try:  # SQLAlchemy begins the transaction at the first statement
            if sqlite:
                conn.exec_driver_sql("PRAGMA secure_delete = ON")
            fts = bool(conn.exec_driver_sql(FTS_PRESENT[conn.dialect.name]).scalar())
            _erase(conn, sel, report, fts)
            if sqlite and fts and report.spans and not dry_run:
                # deleted words stay in the FTS segments until they are merged
                conn.exec_driver_sql("INSERT INTO spans_fts (spans_fts) VALUES ('optimize')")
            if not dry_run:
                conn.commit()
        finally:
            conn.rollback()  # a dry run, or a failure; nothing after a commit
            if sqlite:
                conn.exec_driver_sql("PRAGMA secure_delete = OFF")  # pooled connection: back to default
                conn.commit()
    if not dry_run:
        _scrub(store)
    return report


def _scrub(store: Store) -> None:
    """Freed pages back to the OS and the WAL folded in and truncated (SQLite); dead rows
    reclaimed for reuse (Postgres VACUUM, outside a transaction)."""
    if store.dialect.sqlite:
        store.sqlite_maintenance(vacuum=True)
        return
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        tables = set(sa.inspect(conn).get_table_names())
        for table in ["spans", "traces", "sessions", *sorted({r.table for r in RELATED} & tables)]:
            conn.exec_driver_sql(f"VACUUM {table}")


@dataclass(frozen=True)
class StateLocation:
    """Where a ``genai_session`` processor keeps its state: a SQLite ``path`` or a Postgres ``url``."""

    path: str | None = None
    url: str | None = None


def forget_in_session_state(locations: Sequence[StateLocation], sel: Selection, dry_run: bool = False) -> int | None:
    """Erase the user in every reachable session-grouping state; rows removed (None when there
    is none).  A SQLite state file that does not exist is not created."""
    import os

    from processors.genai_session import SessionState

    total = None
    for where in locations:
        if where.url is None and (where.path == ":memory:" or not os.path.exists(where.path or "")):
            continue
        state = SessionState(where.path, where.url)
        try:
            total = (total or 0) + state.forget_user(sel.user, sel.session, sel.before_ns, dry_run)
        finally:
            state.close()
    return total


def state_locations(processor_specs: Iterable[Any]) -> list[StateLocation]:
    """Where the ``genai_session`` processors among ``processor_specs`` (a config's
    ``processors:`` section) keep their state, resolved as the processor resolves it."""
    from processors.genai_session import DEFAULT_STATE_PATH

    out = []
    for spec in processor_specs:
        if spec.type == "genai_session":
            state = spec.config.state
            out.append(StateLocation(state.path or (None if state.url else DEFAULT_STATE_PATH), state.url))
    return out


def audit_line(report: ErasureReport, sel: Selection, who: str) -> None:
    """The audit record of an erasure: who asked, when, for whom, and how much went (a WARNING:
    it must survive a quiet log level; a CLI without logging set up prints it on stderr)."""
    from datetime import datetime, timezone

    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    what = f"user {sel.user!r}" + (f" session {sel.session!r}" if sel.session else "") + \
        (f" before {sel.before_ns}ns" if sel.before_ns is not None else "")
    audit.warning("%s of %s by %s at %s: %s", "dry run of erasure" if report.dry_run else "erasure", what,
                  who, when, report.summary())
