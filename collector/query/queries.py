"""Read models for every query command, written once in SQLAlchemy Core for SQLite and Postgres.

Results are plain dicts whose keys are the documented, stable JSON field names (README, section
"Query CLI"); the renderers only format them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

import sqlalchemy as sa

from collector.model import STATUS_NAMES
from collector.query.filters import NS_PER_MS, Filters, genai_call, llm_call
from collector.query.percentile import rank as percentile_rank
from collector.query.store import Store
from exporters.storage.schema import sessions, spans, traces

__all__ = [
    "iso", "span_record", "list_traces", "trace_ids_with_prefix", "get_trace", "list_sessions",
    "get_session", "export_spans", "eval_candidates", "TRACE_SORTS", "SESSION_SORTS",
]


def iso(unix_nano: int | None) -> str | None:
    """Unix nanoseconds -> ISO 8601 UTC with microseconds and a ``Z`` (as OTLP/JSON readers expect)."""
    if unix_nano is None:
        return None
    seconds, nanos = divmod(int(unix_nano), 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"


def _json(value: Any) -> Any:
    """JSON columns come back as text from SQLite and as Python objects from Postgres JSONB."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


SPAN_COLUMNS = [
    spans.c.trace_id, spans.c.span_id, spans.c.parent_span_id, spans.c.name, spans.c.kind,
    spans.c.start_time_unix_nano, spans.c.duration_ms, spans.c.status_code,
    spans.c.status_message, spans.c.service_name, spans.c.provider, spans.c.operation,
    spans.c.request_model, spans.c.response_model, spans.c.model, spans.c.input_tokens,
    spans.c.output_tokens, spans.c.cache_read_tokens, spans.c.cache_write_tokens,
    spans.c.reasoning_tokens, spans.c.cost_usd, spans.c.ttft_ms,
    spans.c.output_tokens_per_second, spans.c.session_id, spans.c.user_id, spans.c.error_type,
    spans.c.system_instructions, spans.c.input_messages, spans.c.output_messages,
]


def span_record(row: Any) -> dict[str, Any]:
    """One span as the documented JSON object (field order is part of the contract)."""
    m = row._mapping
    return {
        "trace_id": m["trace_id"],
        "span_id": m["span_id"],
        "parent_span_id": m["parent_span_id"],
        "name": m["name"],
        "start_time": iso(m["start_time_unix_nano"]),
        "duration_ms": m["duration_ms"],
        "status": STATUS_NAMES.get(m["status_code"], "unset"),
        "status_message": m["status_message"] or None,
        "service": m["service_name"],
        "provider": m["provider"],
        "operation": m["operation"],
        "request_model": m["request_model"],
        "response_model": m["response_model"],
        "input_tokens": m["input_tokens"],
        "output_tokens": m["output_tokens"],
        "cache_read_tokens": m["cache_read_tokens"],
        "cache_write_tokens": m["cache_write_tokens"],
        "reasoning_tokens": m["reasoning_tokens"],
        "cost_usd": m["cost_usd"],
        "ttft_ms": m["ttft_ms"],
        "output_tokens_per_second": m["output_tokens_per_second"],
        "session_id": m["session_id"],
        "user_id": m["user_id"],
        "error_type": m["error_type"],
        "system_instructions": _json(m["system_instructions"]),
        "input_messages": _json(m["input_messages"]),
        "output_messages": _json(m["output_messages"]),
    }


# -------------------------------------------------------------------------------------------------
# traces

TRACE_SORTS = {
    "time": lambda t: t.c.start_time_unix_nano,
    "cost": lambda t: t.c.cost_usd,
    "latency": lambda t: t.c.end_time_unix_nano - t.c.start_time_unix_nano,
    "tokens": lambda t: t.c.input_tokens + t.c.output_tokens,
}


def _rollup_record(m: Any) -> dict[str, Any]:
    """The fields a trace row and a session row share (after their own id and names)."""
    start, end = m["start_time_unix_nano"], m["end_time_unix_nano"]
    return {
        "start_time": iso(start),
        "duration_ms": (end - start) / NS_PER_MS,
        "status": "error" if m["error_count"] else "ok",
        "span_count": m["span_count"],
        "error_count": m["error_count"],
        "turns": m["turns"],
        "input_tokens": m["input_tokens"],
        "output_tokens": m["output_tokens"],
        "cost_usd": m["cost_usd"],
    }


def _page(query: sa.Select, table: sa.Table, key: str, sort_expr: sa.ColumnElement,
          limit: int, offset: int) -> sa.Select:
    # the key breaks ties so that --offset pages never repeat or skip a row
    return query.order_by(sort_expr.desc(), table.c[key].desc()).limit(limit).offset(offset)


def list_traces(store: Store, f: Filters, sort: str, limit: int, offset: int) -> list[dict]:
    """A page of traces (newest / costliest / slowest / biggest first) with the models they used."""
    with store.connect() as conn:
        query = sa.select(traces).where(*f.rollup_clauses(traces, "trace_id", conn))
        query = _page(query, traces, "trace_id", TRACE_SORTS[sort](traces), limit, offset)
        rows = conn.execute(query).all()
        models = _models_of(conn, [r.trace_id for r in rows])
    return [{"trace_id": m["trace_id"], "name": m["root_name"], "service": m["service_name"],
             **_rollup_record(m), "session_id": m["session_id"],
             "models": models.get(m["trace_id"], []), "user_id": m["user_id"]}
            for m in (row._mapping for row in rows)]


def _models_of(conn: sa.Connection, trace_ids: Sequence[str]) -> dict[str, list[str]]:
    if not trace_ids:
        return {}
    query = (sa.select(spans.c.trace_id, spans.c.model).distinct()
             .where(spans.c.trace_id.in_(trace_ids), spans.c.model.is_not(None))
             .order_by(spans.c.trace_id, spans.c.model))
    out: dict[str, list[str]] = defaultdict(list)
    for trace_id, model in conn.execute(query):
        out[trace_id].append(model)
    return out


def trace_ids_with_prefix(store: Store, prefix: str) -> list[str]:
    """Up to two trace ids starting with ``prefix`` (lowercase hex): a primary-key range scan."""
    query = (sa.select(traces.c.trace_id)
             .where(traces.c.trace_id >= prefix, traces.c.trace_id <= prefix + "f" * (32 - len(prefix)))
             .order_by(traces.c.trace_id).limit(2))
    with store.connect() as conn:
        return list(conn.execute(query).scalars())


def get_trace(store: Store, trace_id: str) -> list[dict]:
    """Every span of one trace, in start order (the renderer builds the tree)."""
    query = (sa.select(*SPAN_COLUMNS).where(spans.c.trace_id == trace_id)
             .order_by(spans.c.start_time_unix_nano, spans.c.span_id))
    with store.connect() as conn:
        return [span_record(r) for r in conn.execute(query)]


# -------------------------------------------------------------------------------------------------
# sessions

SESSION_SORTS = {**TRACE_SORTS, "turns": lambda t: t.c.turns}


def list_sessions(store: Store, f: Filters, sort: str, limit: int, offset: int) -> list[dict]:
    with store.connect() as conn:
        query = sa.select(sessions).where(*f.rollup_clauses(sessions, "session_id", conn))
        query = _page(query, sessions, "session_id", SESSION_SORTS[sort](sessions), limit, offset)
        return [_session_record(r._mapping) for r in conn.execute(query)]


def _session_record(m: Any) -> dict[str, Any]:
    return {"session_id": m["session_id"], **_rollup_record(m), "user_id": m["user_id"]}


def get_session(store: Store, session_id: str) -> dict | None:
    """The session's rollup and its turns (LLM calls) in order; ``None`` when unknown."""
    with store.connect() as conn:
        row = conn.execute(sa.select(sessions).where(sessions.c.session_id == session_id)).first()
        if row is None:
            return None
        query = (sa.select(*SPAN_COLUMNS)
                 .where(spans.c.session_id == session_id, llm_call())
                 .order_by(spans.c.start_time_unix_nano, spans.c.span_id))
        turns = [span_record(r) for r in conn.execute(query)]
    return {"session": _session_record(row._mapping), "turns": turns}


# -------------------------------------------------------------------------------------------------
# export and eval candidates


def export_spans(store: Store, f: Filters, all_spans: bool, limit: int | None) -> Iterator[dict]:
    """Matching spans, oldest first, streamed (an export may be millions of rows)."""
    with store.connect() as conn:
        where = f.span_clauses(conn)
        if not all_spans:
            where.append(genai_call())
        query = (sa.select(*SPAN_COLUMNS).where(*where)
                 .order_by(spans.c.start_time_unix_nano, spans.c.span_id))
        if limit is not None:
            query = query.limit(limit)
        result = conn.execution_options(stream_results=True, yield_per=2000).execute(query)
        for row in result:
            yield span_record(row)


REFUSAL_PHRASES = (
    "I can't", "I cannot", "I can’t", "I'm unable", "I am unable", "I'm not able",
    "I don't know", "I do not know", "I don’t know", "I'm sorry, but", "As an AI",
)
"""Phrases in an assistant's answer that mark a refusal or a non-answer (case-insensitive)."""

FEEDBACK_KEYS = ("feedback", "user_feedback", "feedback.value", "gen_ai.feedback")
"""Attributes whose value says what the user thought of the answer."""

NEGATIVE_FEEDBACK = ("negative", "thumbs_down", "thumbsdown", "bad", "down", "-1", "0", "false")

FEEDBACK_SCORE_KEYS = ("feedback.score", "user_feedback.score", "gen_ai.feedback.score")
"""Numeric feedback attributes: a score below 0.5 (or negative) counts as negative."""


def _refusal() -> sa.ColumnElement:
    text = sa.func.lower(sa.cast(spans.c.output_messages, sa.Text))
    return sa.or_(*(text.contains(p.lower(), autoescape=True) for p in REFUSAL_PHRASES))


def _attribute(dialect: str, key: str, numeric: bool) -> sa.ColumnElement:
    """One span attribute as text, or as a number only when it IS a JSON number (a CAST of
    ``"good"`` would be 0.0 on SQLite and an error on Postgres)."""
    attrs = spans.c.attributes
    if dialect == "postgresql":
        name = sa.literal(key, sa.Text)  # typed: as a JSONB parameter it would match no operator
        text = attrs.op("->>", return_type=sa.Text)(name)
        if numeric:
            return sa.case((sa.func.jsonb_typeof(attrs.op("->")(name)) == "number",
                            sa.cast(text, sa.Float)))
        return text
    path = '$."' + key.replace('"', '""') + '"'
    if numeric:
        return sa.case((sa.func.json_type(attrs, path).in_(("integer", "real")),
                        sa.func.json_extract(attrs, path)))
    return sa.cast(sa.func.json_extract(attrs, path), sa.Text)


def _negative_feedback(dialect: str) -> sa.ColumnElement:
    clauses = [sa.func.lower(_attribute(dialect, k, False)).in_(NEGATIVE_FEEDBACK)
               for k in FEEDBACK_KEYS]
    clauses += [_attribute(dialect, k, True) < 0.5 for k in FEEDBACK_SCORE_KEYS]
    return sa.or_(*clauses)


def percentile_of(conn: sa.Connection, column: sa.ColumnElement, where: list, p: float) -> float | None:
    """One exact nearest-rank percentile with plain SQL on either dialect (count, then OFFSET)."""
    n = conn.execute(sa.select(sa.func.count(column)).where(*where)).scalar_one()
    if not n:
        return None
    rank = percentile_rank(p, n)
    query = (sa.select(column).where(*where, column.is_not(None)).order_by(column)
             .offset(rank - 1).limit(1))
    return conn.execute(query).scalar_one()


EVAL_REASONS = ("error", "slow", "expensive", "refusal", "negative_feedback")


def eval_candidates(store: Store, f: Filters, limit: int, slow_ms: float | None,
                    expensive_usd: float | None) -> dict[str, Any]:
    """GenAI calls worth turning into eval cases, most reasons first, then newest.

    Slow and expensive mean at or above the p95 of the filtered calls unless thresholds are given.
    """
    c = spans.c
    with store.connect() as conn:
        where = [genai_call(), *f.span_clauses(conn)]
        if slow_ms is None:
            slow_ms = percentile_of(conn, c.duration_ms, where, 0.95)
        if expensive_usd is None:
            expensive_usd = percentile_of(conn, c.cost_usd, where, 0.95)
        conditions = {
            "error": c.status_code == 2,
            "slow": c.duration_ms >= slow_ms if slow_ms is not None else sa.false(),
            "expensive": (sa.and_(c.cost_usd >= expensive_usd, c.cost_usd > 0)
                          if expensive_usd is not None else sa.false()),
            "refusal": _refusal(),
            "negative_feedback": _negative_feedback(store.dialect),
        }
        flags = [sa.case((cond, 1), else_=0).label(f"is_{name}") for name, cond in conditions.items()]
        score = sum((sa.case((cond, 1), else_=0) for cond in conditions.values()), sa.literal(0))
        query = (sa.select(*SPAN_COLUMNS, *flags).where(*where, sa.or_(*conditions.values()))
                 .order_by(score.desc(), c.start_time_unix_nano.desc(), c.span_id).limit(limit))
        candidates = []
        for row in conn.execute(query):
            record = span_record(row)
            record["reasons"] = [name for name in EVAL_REASONS if row._mapping[f"is_{name}"]]
            candidates.append(record)
    return {"thresholds": {"slow_ms": slow_ms, "expensive_usd": expensive_usd},
            "candidates": candidates}
