"""The filters every listing shares, turned into SQLAlchemy Core clauses (bound parameters only).

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

import sqlalchemy as sa

from exporters.storage.schema import LLM_OPERATIONS, spans
from exporters.storage.search import search_condition

__all__ = ["Filters", "llm_call", "genai_call", "NS_PER_MS"]

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

    @classmethod
    def from_args(cls, args: Any) -> "Filters":
        return cls(**{name: getattr(args, name, None) for name in cls.__dataclass_fields__})

    # -- span level ------------------------------------------------------------------------------

    def span_clauses(self, conn: sa.Connection) -> list[sa.ColumnElement]:
        """Every filter applied to a single span."""
        c = spans.c
        out = self._time(c.start_time_unix_nano) + self._inner(conn)
        if self.status == "error":
            out.append(c.status_code == 2)
        elif self.status == "ok":
            out.append(c.status_code != 2)
        if self.min_cost is not None:
            out.append(c.cost_usd >= self.min_cost)
        if self.min_latency_ms is not None:
            out.append(c.duration_ms >= self.min_latency_ms)
        return out

    # -- rollup level (traces / sessions tables) ---------------------------------------------------

    def rollup_clauses(self, rollup: sa.Table, key: str, conn: sa.Connection) -> list[sa.ColumnElement]:
        """Filters on a rollup row; ``key`` is the column joining it to ``spans`` (trace_id...)."""
        r = rollup.c
        out = self._time(r.start_time_unix_nano)
        if self.status == "error":
            out.append(r.error_count > 0)
        elif self.status == "ok":
            out.append(r.error_count == 0)
        if self.min_cost is not None:
            out.append(r.cost_usd >= self.min_cost)
        if self.min_latency_ms is not None:
            out.append(r.end_time_unix_nano - r.start_time_unix_nano
                       >= sa.bindparam("min_latency_ns", int(self.min_latency_ms * NS_PER_MS)))
        inner = self._inner(conn)
        if inner:
            out.append(sa.exists().where(spans.c[key] == r[key], *inner))
        return out

    # -- shared ------------------------------------------------------------------------------------

    def _time(self, column: sa.ColumnElement) -> list[sa.ColumnElement]:
        out = []
        if self.since is not None:
            out.append(column >= self.since)
        if self.until is not None:
            out.append(column < self.until)
        return out

    def _inner(self, conn: sa.Connection) -> list[sa.ColumnElement]:
        """Filters about what a span is (not its time): model, provider, service, ids, text."""
        c = spans.c
        out: list[sa.ColumnElement] = []
        if self.model is not None:
            # users type the model they asked for; providers answer with a dated snapshot name
            out.append(sa.or_(c.model == self.model, c.request_model == self.model))
        for column, value in ((c.provider, self.provider), (c.service_name, self.service),
                              (c.session_id, self.session), (c.user_id, self.user)):
            if value is not None:
                out.append(column == value)
        if self.search:
            # the storage's full-text index when the store has one, else a substring scan
            out.append(search_condition(conn, self.search))
        return out


def genai_call() -> sa.ColumnElement:
    """Spans that are GenAI calls with a model (LLM calls and embeddings): what ``stats`` counts."""
    return spans.c.model.is_not(None)


def llm_call() -> sa.ColumnElement:
    """A turn, as the rollups count it: a chat / completion call, or a model call with no operation."""
    c = spans.c
    return sa.or_(c.operation.in_(sorted(LLM_OPERATIONS)),
                  sa.and_(c.operation.is_(None), c.model.is_not(None)))
