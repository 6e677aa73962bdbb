"""``genai_session``: group spans into conversations, by explicit id or by user activity.

Users debug conversations, not single calls.  Each trace gets one session:

* **explicit**: the first attribute of ``session_attributes`` that a span carries
  (``gen_ai.conversation.id``, ``session.id``, ``langfuse.session.id``,
  ``traceloop.association.properties.session_id`` by default);
* **inferred**: otherwise, if a span of the trace names a user (``user_attributes``), the trace
  joins that user's current session *within its service*: traces whose activity is separated by
  less than ``inactivity_timeout`` belong to one session.

Every span of a trace gets the trace's session (``gen_ai.conversation.id`` attribute,
``session.source`` = ``explicit`` | ``inferred``, and ``span.genai.session_id`` / ``user_id``); a span
that carries its own explicit id keeps it.

Why a state store: an inferred session is a fact about *history* (when did this user last act?),
and trace -> session must hold for spans arriving in later batches, after a restart, or at
another collector instance.  So the state lives in a small SQLite file (or Postgres database) named
by ``state``.  Each batch does its reads and writes in ONE transaction that is serialized across
processes (SQLite ``BEGIN IMMEDIATE``; a Postgres transaction-level advisory lock), which is what
makes two instances sharing a store agree: the second sees the first's session before deciding.

Session intervals are stored per (service, user) and merged when a late span bridges two: the
earlier session's id survives, the other is recorded in ``gc_session_aliases``, through which
trace mappings are read.  A new session's id is ``sha256(service, user, first activity ns)`` (32
hex), so it is reproducible; an existing session keeps its id when it grows in either direction.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from collector.component import ComponentContext, Factory, Processor
from collector.model import GenAI, Span, SpanBatch
from collector.sqlite_bulk import insert_rows
from config.schema import ConfigError, Duration, setting

__all__ = ["SessionConfig", "StateConfig", "SessionProcessor", "SessionState", "FACTORY", "session_id_for"]

SESSION_ATTRIBUTES = [
    "gen_ai.conversation.id", "session.id", "langfuse.session.id",
    "traceloop.association.properties.session_id",
]
USER_ATTRIBUTES = [
    "user.id", "enduser.id", "langfuse.user.id", "traceloop.association.properties.user_id",
]
# Keys whose presence marks a span as an LLM / agent call when genai_normalize has not run.
_GENAI_MARKERS = frozenset({
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model",
    "gen_ai.response.model", "llm.model_name", "llm.system", "llm.request.type",
    "openinference.span.kind",
})
MAX_ID_LENGTH = 1024
DEFAULT_STATE_PATH = "genai_sessions.db"
EXPLICIT, INFERRED = "explicit", "inferred"


@dataclass
class StateConfig:
    """Where session state survives restarts; exactly one of ``path`` / ``url``."""

    path: str | None = setting(None, doc="SQLite file (default genai_sessions.db unless url is set); "
                                         "':memory:' keeps state in this process only")
    url: str | None = setting(None, pattern=r"postgres(ql)?(\+psycopg)?://.+",
                              doc="Postgres URL, e.g. postgresql://user@host:5432/db")
    trace_ttl: Duration = setting(3600.0, doc="how long trace -> session mappings are kept")
    session_ttl: Duration = setting(7 * 86400.0, doc="how long idle session intervals are kept")

    def validate(self) -> list[str]:
        if self.path is not None and self.url is not None:
            raise ConfigError("", "set either path or url, not both")
        return []


@dataclass
class SessionConfig:
    session_attributes: list[str] = setting(default_factory=lambda: list(SESSION_ATTRIBUTES),
                                            doc="explicit session id attributes, in precedence")
    user_attributes: list[str] = setting(default_factory=lambda: list(USER_ATTRIBUTES),
                                         doc="user id attributes, in precedence")
    infer: bool = setting(True, doc="group spans without a session id by user activity")
    inactivity_timeout: Duration = setting(1800.0, doc="a gap this long or longer starts a new session")
    cache_size: int = setting(100000, min=1, doc="trace -> session mappings cached in memory")
    state: StateConfig = setting(default_factory=StateConfig, doc="where session state lives (shared by "
                                 "restarts and by instances using the same store)")

    def validate(self) -> list[str]:
        if self.inactivity_timeout <= 0:
            raise ConfigError("inactivity_timeout", "must be > 0")
        return []


def session_id_for(service: str, user: str, start_ns: int) -> str:
    """The id of an inferred session that starts with activity at ``start_ns``."""
    digest = hashlib.sha256(f"{service}\x00{user}\x00{start_ns}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# State store


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gc_session_traces (
        trace_id {blob} PRIMARY KEY, session_id TEXT NOT NULL, source TEXT NOT NULL,
        user_id TEXT, updated_ns BIGINT NOT NULL){without_rowid}""",
    # ascending insert times: appending to this index is cheap, and pruning needs it
    "CREATE INDEX IF NOT EXISTS gc_session_traces_updated ON gc_session_traces (updated_ns)",
    """CREATE TABLE IF NOT EXISTS gc_session_intervals (
        service TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
        start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL, updated_ns BIGINT NOT NULL,
        PRIMARY KEY (service, user_id, session_id)){without_rowid}""",
    "CREATE INDEX IF NOT EXISTS gc_session_intervals_key ON gc_session_intervals (service, user_id, start_ns)",
    """CREATE TABLE IF NOT EXISTS gc_session_aliases (
        old_id TEXT PRIMARY KEY, new_id TEXT NOT NULL, updated_ns BIGINT NOT NULL)""",
)
_CHUNK = 500  # bound parameters per IN (...) list
_PG_LOCK_KEY = 0x67635F73657373  # "gc_sess": one advisory lock serializes state transactions


class SessionState:
    """The durable state: trace mappings, session intervals per (service, user), aliases.

    One connection; callers hold ``transaction()`` around every read-modify-write so that other
    processes sharing the store see either all of a batch's changes or none, in order.
    """

    def __init__(self, path: str | None = None, url: str | None = None) -> None:
        self.postgres = url is not None
        try:
            self._connect(path, url)
        except Exception as exc:  # one clear line at startup, without the URL (it may hold a password)
            where = "the Postgres state database" if self.postgres else f"the state file {path!r}"
            raise ValueError(f"cannot open {where}: {type(exc).__name__}: {exc}") from exc

    def _connect(self, path: str | None, url: str | None) -> None:
        if url is not None:
            import psycopg  # heavy import: only when configured

            dsn = url.replace("postgresql+psycopg://", "postgresql://").replace("postgres+psycopg://", "postgresql://")
            self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
            blob, without_rowid = "BYTEA", ""
        else:
            import sqlite3

            if path != ":memory:" and os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA cache_size=-16384")  # 16 MiB: random-key inserts stay in memory
            blob, without_rowid = "BLOB", " WITHOUT ROWID"  # the primary key is the table: one B-tree
        with self.transaction():
            for statement in _SCHEMA:
                self._execute(statement.format(blob=blob, without_rowid=without_rowid))

    # -- plumbing ------------------------------------------------------------------------------

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    def _execute(self, statement: str, params: Iterable[Any] = ()) -> Any:
        return self.conn.execute(self._sql(statement), tuple(params))

    def _executemany(self, statement: str, rows: list[tuple]) -> None:
        if not rows:
            return
        if self.postgres:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(statement), rows)
        elif statement.startswith("INSERT"):
            # multi-row statements: executemany re-acquires the GIL after every row (sqlite_bulk)
            insert_rows(self.conn, statement, rows)
        else:
            self.conn.executemany(statement, rows)

    def transaction(self) -> "_Transaction":
        return _Transaction(self)

    def close(self) -> None:
        self.conn.close()

    # -- queries -------------------------------------------------------------------------------

    def traces(self, trace_ids: list[bytes]) -> dict[bytes, tuple[str, str, str | None]]:
        """trace id -> (session id, source, user) for the ids that are mapped."""
        out: dict[bytes, tuple[str, str, str | None]] = {}
        for i in range(0, len(trace_ids), _CHUNK):
            chunk = trace_ids[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._execute(
                "SELECT t.trace_id, COALESCE(a.new_id, t.session_id), t.source, t.user_id "
                "FROM gc_session_traces t LEFT JOIN gc_session_aliases a ON a.old_id = t.session_id "
                f"WHERE t.trace_id IN ({marks})",
                chunk).fetchall()
            for trace_id, session_id, source, user in rows:
                out[bytes(trace_id)] = (session_id, source, user)
        return out

    def add_traces(self, rows: list[tuple[bytes, str, str, str | None]], now_ns: int) -> None:
        self._executemany(
            "INSERT INTO gc_session_traces (trace_id, session_id, source, user_id, updated_ns) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(tid, sid, src, user, now_ns) for tid, sid, src, user in rows])

    def intervals(self, keys: list[tuple[str, str]], lo: int, hi: int) -> dict[tuple[str, str], list[tuple[str, int, int]]]:
        """Sessions of the (service, user) ``keys`` whose interval comes within [lo, hi]."""
        out: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
        for i in range(0, len(keys), _CHUNK // 2):
            chunk = keys[i:i + _CHUNK // 2]
            rows = ",".join("(?, ?)" for _ in chunk)
            params: list[Any] = [hi, lo]
            for key in chunk:
                params.extend(key)
            for service, user, sid, s, e in self._execute(
                    "SELECT service, user_id, session_id, start_ns, end_ns FROM gc_session_intervals "
                    f"WHERE start_ns <= ? AND end_ns >= ? AND (service, user_id) IN (VALUES {rows})",
                    params).fetchall():
                out.setdefault((service, user), []).append((sid, int(s), int(e)))
        return out

    def put_intervals(self, rows: list[tuple[str, str, str, int, int]], now_ns: int) -> None:
        self._executemany(
            "INSERT INTO gc_session_intervals (service, user_id, session_id, start_ns, end_ns, updated_ns) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service, user_id, session_id) DO UPDATE SET "
            "start_ns = excluded.start_ns, end_ns = excluded.end_ns, updated_ns = excluded.updated_ns",
            [row + (now_ns,) for row in rows])

    def merge(self, merges: list[tuple[str, str, str, str]], now_ns: int) -> None:
        """(service, user, old id, surviving id): drop the old interval and record the alias.

        Trace rows keep the old id (rewriting them would need an index on session ids that every
        insert pays for); ``traces`` resolves it through the alias table, kept flat here.
        """
        self._executemany("DELETE FROM gc_session_intervals WHERE service = ? AND user_id = ? AND session_id = ?",
                          [(svc, user, old) for svc, user, old, _ in merges])
        self._executemany("UPDATE gc_session_aliases SET new_id = ? WHERE new_id = ?",
                          [(new, old) for _, _, old, new in merges])
        self._executemany(
            "INSERT INTO gc_session_aliases (old_id, new_id, updated_ns) VALUES (?, ?, ?) "
            "ON CONFLICT (old_id) DO UPDATE SET new_id = excluded.new_id, updated_ns = excluded.updated_ns",
            [(old, new, now_ns) for _, _, old, new in merges])

    def prune(self, trace_before_ns: int, session_before_ns: int) -> None:
        self._execute("DELETE FROM gc_session_traces WHERE updated_ns < ?", (trace_before_ns,))
        self._execute("DELETE FROM gc_session_intervals WHERE updated_ns < ?", (session_before_ns,))
        self._execute("DELETE FROM gc_session_aliases WHERE updated_ns < ?", (session_before_ns,))


    def forget_user(self, user: str, session: str | None = None, before_ns: int | None = None,
                    dry_run: bool = False) -> int:
        """Erase what the state knows of ``user`` (optionally one session / rows last updated
        before ``before_ns``): trace mappings, activity intervals and the aliases of their
        sessions; rows removed (``dry_run``: counted, then rolled back).  For ``delete --user``:
        a forgotten person must not be regrouped into a session from their old activity."""
        where, params = "user_id = ?", [user]
        if session is not None:
            where, params = where + " AND session_id = ?", params + [session]
        if before_ns is not None:
            where, params = where + " AND updated_ns < ?", params + [before_ns]
        removed = 0
        try:
            with self.transaction():
                removed = self._forget(where, params)
                if dry_run:
                    raise _RolledBack
        except _RolledBack:
            pass
        return removed

    def _forget(self, where: str, params: list) -> int:
        """Delete the matching trace and interval rows and the aliases of their sessions."""
        tables = ("gc_session_traces", "gc_session_intervals")
        ids = sorted({row[0] for table in tables
                      for row in self._execute(f"SELECT session_id FROM {table} WHERE {where}", params)})
        removed = sum(self._execute(f"DELETE FROM {table} WHERE {where}", params).rowcount for table in tables)
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            removed += self._execute(f"DELETE FROM gc_session_aliases WHERE old_id IN ({marks}) "
                                     f"OR new_id IN ({marks})", chunk * 2).rowcount
        return removed


class _RolledBack(Exception):
    """Raised inside a state transaction to undo it (a dry run)."""


class _Transaction:
    """One serialized read-modify-write across every process sharing the store."""

    def __init__(self, state: SessionState) -> None:
        self.state = state

    def __enter__(self) -> SessionState:
        state = self.state
        if state.postgres:
            state.conn.execute("BEGIN")
            state.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        else:
            state.conn.execute("BEGIN IMMEDIATE")
        return state

    def __exit__(self, exc_type, exc, tb) -> None:
        self.state.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


# ---------------------------------------------------------------------------------------------
# The processor


class _Trace:
    """What one batch says about one trace."""

    __slots__ = ("session", "user", "service", "start", "end")

    def __init__(self) -> None:
        self.session: str | None = None
        self.user: str | None = None
        self.service = ""
        self.start = 0
        self.end = 0


def _encodable(text: str) -> bool:
    """False for lone surrogates (undecodable bytes smuggled through), which stores reject."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_id(attrs: dict[str, Any], keys: list[str]) -> Any:
    """The first present value among ``keys`` (validated by the caller)."""
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


_PRUNE_EVERY = 60.0  # seconds between pruning passes


class SessionProcessor(Processor):
    """See the module docstring.  The pipeline calls one instance from one worker thread."""

    def __init__(self, config: SessionConfig, ctx: ComponentContext, wall_ns=time.time_ns) -> None:
        self.config = config
        self.wall_ns = wall_ns
        self.timeout_ns = int(config.inactivity_timeout * 1e9)
        self._state_path = config.state.path or (None if config.state.url else DEFAULT_STATE_PATH)
        self.state = SessionState(self._state_path, config.state.url)
        self._state_broken = False
        # OrderedDict: evicting the oldest entry is O(1) (a dict slows down when its head is popped)
        self.cache: OrderedDict[bytes, tuple[str, str, str | None]] = OrderedDict()
        self.aliases: OrderedDict[str, str] = OrderedDict()
        self._id_keys = frozenset(config.session_attributes) | frozenset(config.user_attributes)
        self._next_prune = 0.0
        self.explicit_spans = ctx.counter("session_spans", "spans given a session", source=EXPLICIT)
        self.inferred_spans = ctx.counter("session_spans", "spans given a session", source=INFERRED)
        self.new_sessions = ctx.counter("session_inferred_sessions", "inferred sessions started")
        self.merged_sessions = ctx.counter("session_merged_sessions",
                                           "inferred sessions merged into an earlier one by a late span")
        self.invalid_ids = ctx.counter("session_invalid_ids",
                                       "session/user id values ignored (wrong type or too long)")
        self.state_errors = ctx.counter("session_state_errors",
                                        "batches annotated without the state store (store failed)")
        self.log = ctx.logger

    # -- reading ids ---------------------------------------------------------------------------

    def _valid(self, value: Any) -> str | None:
        """An id as text, or None (counted) for values no store could key on."""
        if value is None:
            return None
        if isinstance(value, str):
            if len(value) <= MAX_ID_LENGTH and "\x00" not in value and (value.isascii() or _encodable(value)):
                return value
        elif isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        self.invalid_ids.add(1)
        return None

    def _span_ids(self, span: Span) -> tuple[str | None, str | None]:
        """The span's own explicit session id and user id (raw attributes first, then canonical)."""
        attrs = span.attributes
        session = user = None
        if not attrs.keys().isdisjoint(self._id_keys):  # C-speed test; most spans carry no id
            session = self._valid(_first_id(attrs, self.config.session_attributes))
            user = self._valid(_first_id(attrs, self.config.user_attributes))
        genai = span.genai
        if genai is not None:
            session = session or genai.session_id
            user = user or genai.user_id
        return session, user

    # -- resolving traces ----------------------------------------------------------------------

    def _scan(self, spans: list[Span]) -> tuple[dict[bytes, _Trace], list[tuple[str | None, str | None]]]:
        """Each span's own ids, and per trace: its first session, first user, time range."""
        traces: dict[bytes, _Trace] = {}
        own: list[tuple[str | None, str | None]] = []
        no_ids = (None, None)
        id_keys = self._id_keys
        for span in spans:
            # the common case (no id attribute, no canonical fields) without a method call
            if span.genai is None and span.attributes.keys().isdisjoint(id_keys):
                ids = no_ids
            else:
                ids = self._span_ids(span)
            own.append(ids)
            info = traces.get(span.trace_id)
            if info is None:
                info = traces[span.trace_id] = _Trace()
            session, user = ids
            if session is not None and info.session is None:
                info.session = session
            if user is not None and info.user is None:
                info.user = user
                info.service = span.resource.service_name or ""
            start, end = span.start_time_unix_nano, span.end_time_unix_nano
            if start and (not info.start or start < info.start):
                info.start = start
            if end > info.end:
                info.end = end
        return traces, own

    def _resolve(self, traces: dict[bytes, _Trace]) -> None:
        """Map every trace not in the cache: from the store, else a new explicit or inferred session."""
        unknown = [tid for tid in traces if tid not in self.cache]
        if not unknown:
            return
        if self._state_broken:  # reconnect once per batch until the store answers again
            self._reopen()
        now_ns = self.wall_ns()
        with self.state.transaction() as state:
            found = state.traces(unknown)
            new: list[tuple[bytes, str, str, str | None]] = []
            activity: dict[tuple[str, str], list[tuple[int, int, bytes]]] = {}
            for tid in unknown:
                if tid in found:
                    continue
                info = traces[tid]
                if info.session is not None:
                    new.append((tid, info.session, EXPLICIT, info.user))
                elif info.user is not None and self.config.infer:
                    start = info.start or info.end or now_ns
                    activity.setdefault((info.service, info.user), []).append(
                        (start, max(start, info.end), tid))
            if activity:
                new.extend(self._infer(state, activity, now_ns))
            state.add_traces(new, now_ns)
            if now_ns / 1e9 >= self._next_prune:
                self._next_prune = now_ns / 1e9 + _PRUNE_EVERY
                state.prune(now_ns - int(self.config.state.trace_ttl * 1e9),
                            now_ns - int(self.config.state.session_ttl * 1e9))
        self._cache_many(found.items())
        self._cache_many((tid, (sid, src, user)) for tid, sid, src, user in new)

    def _infer(self, state: SessionState, activity: dict[tuple[str, str], list[tuple[int, int, bytes]]],
               now_ns: int) -> list[tuple[bytes, str, str, str | None]]:
        """Place new traces among their users' sessions: one read and one write for the batch."""
        timeout = self.timeout_ns
        lo = min(a[0] for acts in activity.values() for a in acts) - timeout
        hi = max(a[1] for acts in activity.values() for a in acts) + timeout
        existing = state.intervals(list(activity), lo, hi)
        upserts: list[tuple[str, str, str, int, int]] = []
        merges: list[tuple[str, str, str, str]] = []
        new: list[tuple[bytes, str, str, str | None]] = []
        for (service, user), acts in activity.items():
            for tid, sid in self._place(service, user, acts, existing.get((service, user), []), upserts, merges):
                new.append((tid, sid, INFERRED, user))
        if merges:
            state.merge(merges, now_ns)
            self.merged_sessions.add(len(merges))
            for _, _, old, survivor in merges:
                self._alias(old, survivor)
        state.put_intervals(upserts, now_ns)
        return new

    def _place(self, service: str, user: str, acts: list[tuple[int, int, bytes]],
               intervals: list[tuple[str, int, int]], upserts: list, merges: list) -> list[tuple[bytes, str]]:
        """Place one user's new traces ``acts`` (start, end, trace id) among ``intervals``.

        A sweep over existing intervals and new activities sorted by start: anything closer than
        the timeout to the running group joins it.  A group with no existing session gets a new
        id; a group spanning several keeps the earliest one's id and merges the rest into it.
        """
        timeout = self.timeout_ns
        if len(acts) == 1 and len(intervals) <= 1:  # the common case, without the sweep
            start, end, tid = acts[0]
            if intervals:
                sid, s, e = intervals[0]
                if start - e < timeout and s - end < timeout:
                    upserts.append((service, user, sid, min(s, start), max(e, end)))
                    return [(tid, sid)]
            sid = self._new_session(service, user, start)
            upserts.append((service, user, sid, start, end))
            return [(tid, sid)]
        items: list[tuple[int, int, str | None, bytes | None]] = [(s, e, sid, None) for sid, s, e in intervals]
        items.extend((s, e, None, tid) for s, e, tid in acts)
        items.sort(key=lambda item: (item[0], item[2] is None))
        groups: list[list[tuple[int, int, str | None, bytes | None]]] = []
        group_end = 0
        for item in items:
            if groups and item[0] - group_end < timeout:
                groups[-1].append(item)
                group_end = max(group_end, item[1])
            else:
                groups.append([item])
                group_end = item[1]
        assigned: list[tuple[bytes, str]] = []
        for group in groups:
            tids = [item[3] for item in group if item[3] is not None]
            if not tids:
                continue  # an untouched neighbour fetched by the window
            existing = [item[2] for item in group if item[2] is not None]
            if existing:
                survivor = existing[0]
                merges.extend((service, user, old, survivor) for old in existing[1:])
            else:
                survivor = self._new_session(service, user, group[0][0])
            upserts.append((service, user, survivor, group[0][0], max(item[1] for item in group)))
            assigned.extend((tid, survivor) for tid in tids)
        return assigned

    def _new_session(self, service: str, user: str, start: int) -> str:
        self.new_sessions.add(1)
        return session_id_for(service, user, start)

    def _reopen(self) -> None:
        try:
            self.state.close()
        except Exception:  # noqa: BLE001 - it is broken already; the new connection matters
            pass
        self.state = SessionState(self._state_path, self.config.state.url)
        self._state_broken = False

    def _alias(self, old: str, new: str) -> None:
        for key, value in self.aliases.items():
            if value == old:
                self.aliases[key] = new
        self.aliases[old] = new
        if len(self.aliases) > self.config.cache_size:
            self.aliases.popitem(last=False)

    def _cache_many(self, items: Iterable[tuple[bytes, tuple[str, str, str | None]]]) -> None:
        cache, limit = self.cache, self.config.cache_size
        for tid, mapping in items:
            cache[tid] = mapping
        while len(cache) > limit:  # FIFO: traces are short-lived, recency buys little
            cache.popitem(last=False)

    # -- writing -------------------------------------------------------------------------------

    def _annotate(self, spans: list[Span], traces: dict[bytes, _Trace],
                  own: list[tuple[str | None, str | None]]) -> None:
        cache, aliases = self.cache, self.aliases
        explicit = inferred = 0
        for span, (own_session, own_user) in zip(spans, own):
            mapping = cache.get(span.trace_id)
            session, user, source = own_session, own_user, EXPLICIT
            if session is None and mapping is not None:
                session, source = aliases.get(mapping[0], mapping[0]), mapping[1]
            if user is None:
                user = mapping[2] if mapping is not None and mapping[2] else traces[span.trace_id].user
            attrs = span.attributes
            if session is not None:
                attrs["gen_ai.conversation.id"] = session
                attrs["session.source"] = source
                if source == EXPLICIT:
                    explicit += 1
                else:
                    inferred += 1
            genai = span.genai
            if genai is None and (own_session is not None or own_user is not None or _is_genai(attrs)):
                genai = span.genai = GenAI()
            if genai is not None:
                if session is not None:
                    genai.session_id = session
                if user is not None:
                    genai.user_id = user
        self.explicit_spans.add(explicit)
        self.inferred_spans.add(inferred)

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not batch.spans:
            return batch
        traces, own = self._scan(batch.spans)
        try:
            self._resolve(traces)
        except Exception:  # a broken store must not lose the batch: annotate what we know
            self.state_errors.add(1)
            self._state_broken = True
            self.log.exception("session state store failed; spans keep only explicit ids")
        self._annotate(batch.spans, traces, own)
        return batch

    def shutdown(self) -> None:
        self.state.close()


def _is_genai(attrs: dict[str, Any]) -> bool:
    """Whether a span is an LLM / agent call, judged from raw attributes (normalize may not run)."""
    return not attrs.keys().isdisjoint(_GENAI_MARKERS)


def _create(config: SessionConfig, ctx: ComponentContext) -> SessionProcessor:
    return SessionProcessor(config, ctx)


FACTORY = Factory("genai_session", SessionConfig, _create,
                  doc="conversation ids: explicit, else inferred per user with an inactivity timeout",
                  example="""\
inactivity_timeout: 30m
state:
  path: /var/lib/genai-collector/sessions.db   # or url: postgresql://collector@db:5432/genai
""")
