"""The filters every listing shares, turned into SQL clauses (bound parameters only).

Two levels:

- span level (``export``, ``stats``, ``eval-candidates``): a span matches when it satisfies every
  filter itself;
- trace / session level (``traces``, ``sessions``): the rollup row carries time, duration, cost and
  error count; the filters about *what happened inside* (model, provider, service, user, session,
  text) match when ANY span of the trace / session matches them all (``EXISTS`` on ``spans``, which
  stops at the first hit and uses the ``(trace_id, ...)`` / ``(session_id, ...)`` indexes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.model import LLM_OPERATIONS
from collector.query import feedback
from collector.query.args import clamp_int64
from collector.query.store import Connection
from exporters.storage.search import FTS_PRESENT, search_clause
from exporters.storage.sqltext import Sql, any_of, in_list

__all__ = ["Filters", "llm_call", "genai_call", "NS_PER_MS", "attribute", "attribute_value", "ATTR_PREFIX"]

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Filters:
    """The user's filters; ``None`` means "not given"."""

    since: int | None = None        # unix ns, inclusive
    until: int | None = None        # unix ns, exclusive
    model: str | None = None
    provider: str | None = None
    service: str | None = None
    status: str | None = None       # "ok" | "error"
    session: str | None = None
    user: str | None = None
    min_cost: float | None = None
    min_latency_ms: float | None = None
    search: str | None = None
    attr: tuple[tuple[str, str], ...] | None = None  # (key, value): a span or resource attribute
    feedback: str | None = None     # "negative" | "positive": has such a score (collector.query.feedback)

    @classmethod
    def from_args(cls, args: Any) -> "Filters":
        given = {name: getattr(args, name, None) for name in cls.__dataclass_fields__}
        if given["attr"] is not None:  # argparse's append action gives a list
            given["attr"] = tuple(given["attr"])
        return cls(**given)

    # -- span level ------------------------------------------------------------------------------

    def span_clauses(self, conn: Connection) -> list[Sql]:
        """Every filter applied to a single span."""
        out = self._time("spans.start_time_unix_nano") + self._inner(conn)
        if self.status == "error":
            out.append(Sql("spans.status_code = 2"))
        elif self.status == "ok":
            out.append(Sql("spans.status_code != 2"))
        if self.min_cost is not None:
            out.append(Sql("spans.cost_usd >= ?", self.min_cost))
        if self.min_latency_ms is not None:
            out.append(Sql("spans.duration_ms >= ?", self.min_latency_ms))
        if self.feedback is not None:
            out.append(feedback.span_has(conn, self.feedback))
        return out

    # -- rollup level (traces / sessions tables) ---------------------------------------------------

    def rollup_clauses(self, rollup: str, key: str, conn: Connection) -> list[Sql]:
        """Filters on a rollup row (table ``traces`` or ``sessions``); ``key`` is the column
        joining it to ``spans`` (trace_id...)."""
        out = self._time(f"{rollup}.start_time_unix_nano")
        if self.status == "error":
            out.append(Sql(f"{rollup}.error_count > 0"))
        elif self.status == "ok":
            out.append(Sql(f"{rollup}.error_count = 0"))
        if self.min_cost is not None:
            out.append(Sql(f"{rollup}.cost_usd >= ?", self.min_cost))
        if self.min_latency_ms is not None:
            out.append(Sql(f"{rollup}.end_time_unix_nano - {rollup}.start_time_unix_nano >= ?",
                           clamp_int64(int(self.min_latency_ms * NS_PER_MS))))
        if self.feedback is not None:
            out.append(feedback.rollup_has(conn, rollup, self.feedback))
        inner = self._inner(conn)
        if inner:
            out.append(Sql.compose(f"EXISTS (SELECT 1 FROM spans WHERE spans.{key} = {rollup}.{key}"
                                   + " AND {}" * len(inner) + ")", *inner))
        return out

    # -- shared ------------------------------------------------------------------------------------

    def _time(self, column: str) -> list[Sql]:
        out = []
        if self.since is not None:
            out.append(Sql(f"{column} >= ?", self.since))
        if self.until is not None:
            out.append(Sql(f"{column} < ?", self.until))
        return out

    def _inner(self, conn: Connection) -> list[Sql]:
        """Filters about what a span is (not its time): model, provider, service, ids, text."""
        out: list[Sql] = []
        if self.model is not None:
            # users type the model they asked for; providers answer with a dated snapshot name
            out.append(Sql("(spans.model = ? OR spans.request_model = ?)", self.model, self.model))
        for column, value in (("provider", self.provider), ("service_name", self.service),
                              ("session_id", self.session), ("user_id", self.user)):
            if value is not None:
                out.append(Sql(f"spans.{column} = ?", value))
        for key, value in self.attr or ():
            out.append(Sql.compose("{} = {}", attribute_value(conn.dialect, key), Sql("?", value)))
        if self.search:
            # the storage's full-text index when the store has one, else a substring scan
            indexed = bool(conn.scalar(Sql(FTS_PRESENT[conn.dialect])))
            out.append(search_clause(conn.dialect, indexed, self.search))
        return out


def genai_call() -> Sql:
    """Spans that are GenAI calls with a model (LLM calls and embeddings): what ``stats`` counts."""
    return Sql("spans.model IS NOT NULL")


def llm_call() -> Sql:
    """A turn, as the rollups count it: a chat / completion call, or a model call with no operation."""
    return any_of([in_list("spans.operation", sorted(LLM_OPERATIONS)),
                   Sql("spans.operation IS NULL AND spans.model IS NOT NULL")])


ATTR_PREFIX = "attr:"
"""``--by attr:app.feature``: a grouping key naming a span or resource attribute."""


def attribute(dialect: str, column: str, key: str, numeric: bool = False) -> Sql:
    """Attribute ``key`` of the JSON column ``column`` (``spans.attributes``...) as text, or as a
    number only when it IS a JSON number (a CAST of ``"good"`` would be 0.0 on SQLite and an error
    on Postgres).  The key is a bound parameter, never SQL text.  As text, JSON booleans read
    ``true`` / ``false`` on both stores (SQLite's json_extract alone gives 1 / 0)."""
    if dialect == "postgresql":
        if numeric:
            return Sql(f"CASE WHEN jsonb_typeof({column} -> CAST(? AS TEXT)) = 'number' "
                       f"THEN CAST({column} ->> CAST(? AS TEXT) AS DOUBLE PRECISION) END", key, key)
        return Sql(f"{column} ->> CAST(? AS TEXT)", key)
    path = '$."' + key.replace('"', '""') + '"'
    if numeric:
        return Sql(f"CASE WHEN json_type({column}, ?) IN ('integer', 'real') "
                   f"THEN json_extract({column}, ?) END", path, path)
    return Sql(f"CASE json_type({column}, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
               f"ELSE CAST(json_extract({column}, ?) AS TEXT) END", path, path)


def attribute_value(dialect: str, key: str) -> Sql:
    """A span's attribute ``key`` as text, else its resource's (``tenant.id`` is usually set
    once per process, ``app.feature`` per call): what ``--attr`` and ``--by attr:KEY`` read."""
    return Sql.compose("coalesce({}, {})", attribute(dialect, "spans.attributes", key),
                       attribute(dialect, "spans.resource_attributes", key))
