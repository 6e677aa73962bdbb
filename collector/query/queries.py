"""Read models for every query command, written once in SQL both SQLite and Postgres run.

Results are plain dicts whose keys are the documented, stable JSON field names (docs/querying.md,
"JSON fields"); the renderers only format them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

from collector.model import STATUS_NAMES
from collector.query import feedback
from collector.query.filters import NS_PER_MS, Filters, attribute, genai_call, llm_call
from collector.query.percentile import rank as percentile_rank
from collector.query.store import Connection, Store, has_table
from exporters.storage.search import like_contains
from exporters.storage.sqltext import Sql, all_of, any_of, in_list, join, json_column
from processors.genai_conventions import EVALUATION_FIELDS

__all__ = [
    "iso", "span_record", "list_traces", "trace_ids_with_prefix", "get_trace", "get_trace_logs", "list_sessions",
    "session_ids_with_prefix", "get_session", "BadId", "find_trace", "resolve_trace_id", "find_session", "list_calls",
    "CALL_SORTS", "trace_detail", "export_spans", "eval_candidates", "TRACE_SORTS", "SESSION_SORTS",
]


def iso(unix_nano: int | None) -> str | None:
    """Unix nanoseconds -> ISO 8601 UTC with microseconds and a ``Z`` (as OTLP/JSON readers expect)."""
    if unix_nano is None:
        return None
    seconds, nanos = divmod(int(unix_nano), 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"


SPAN_COLUMNS = ", ".join(f"spans.{c}" for c in (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_unix_nano", "duration_ms",
    "status_code", "status_message", "service_name", "provider", "operation", "request_model",
    "response_model", "model", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "cost_usd", "ttft_ms", "output_tokens_per_second",
    "session_id", "user_id", "error_type", "system_instructions", "input_messages", "output_messages",
))
"""What :func:`span_record` reads, as a select list."""
SPAN_ORDER = "spans.start_time_unix_nano, spans.span_id"


def span_record(m: Mapping[str, Any]) -> dict[str, Any]:
    """One span as the documented JSON object (field order is part of the contract)."""
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
        "system_instructions": json_column(m["system_instructions"]),
        "input_messages": json_column(m["input_messages"]),
        "output_messages": json_column(m["output_messages"]),
    }


# -------------------------------------------------------------------------------------------------
# traces

TRACE_SORTS = {
    "time": "{t}.start_time_unix_nano",
    "cost": "{t}.cost_usd",
    "latency": "{t}.end_time_unix_nano - {t}.start_time_unix_nano",
    "tokens": "{t}.input_tokens + {t}.output_tokens",
}
"""--sort -> the expression ordering a rollup table ``{t}`` (descending)."""


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


def _page(rollup: str, key: str, sort: str, where: list[Sql], limit: int, offset: int) -> Sql:
    """A page of a rollup table; the key breaks ties so that --offset pages never repeat or skip a row."""
    return Sql.compose(f"SELECT {rollup}.* FROM {rollup} WHERE {{}} "
                       f"ORDER BY {sort.format(t=rollup)} DESC, {rollup}.{key} DESC LIMIT {{}} OFFSET {{}}",
                       all_of(where), Sql("?", limit), Sql("?", offset))


def list_traces(store: Store, f: Filters, sort: str, limit: int, offset: int) -> list[dict]:
    """A page of traces (newest / costliest / slowest / biggest first) with the models they used."""
    with store.connect() as conn:
        where = f.rollup_clauses("traces", "trace_id", conn)
        rows = conn.rows(_page("traces", "trace_id", TRACE_SORTS[sort], where, limit, offset))
        models = _models_of(conn, [r["trace_id"] for r in rows])
    return [{"trace_id": m["trace_id"], "name": m["root_name"], "service": m["service_name"],
             **_rollup_record(m), "session_id": m["session_id"],
             "models": models.get(m["trace_id"], []), "user_id": m["user_id"]}
            for m in rows]


def _models_of(conn: Connection, trace_ids: Sequence[str]) -> dict[str, list[str]]:
    if not trace_ids:
        return {}
    query = Sql.compose("SELECT DISTINCT spans.trace_id, spans.model FROM spans "
                        "WHERE {} AND spans.model IS NOT NULL ORDER BY spans.trace_id, spans.model",
                        in_list("spans.trace_id", trace_ids))
    out: dict[str, list[str]] = defaultdict(list)
    for trace_id, model in conn.execute(query).fetchall():
        out[trace_id].append(model)
    return out


def trace_ids_with_prefix(store: Store, prefix: str) -> list[str]:
    """Up to two trace ids starting with ``prefix`` (lowercase hex): a primary-key range scan."""
    query = Sql("SELECT trace_id FROM traces WHERE trace_id >= ? AND trace_id <= ? ORDER BY trace_id LIMIT 2",
                prefix, prefix + "f" * (32 - len(prefix)))
    with store.connect() as conn:
        return [row[0] for row in conn.execute(query).fetchall()]


def _spans_where(where: list[Sql]) -> Sql:
    return Sql.compose(f"SELECT {SPAN_COLUMNS} FROM spans WHERE {{}} ORDER BY {SPAN_ORDER}", all_of(where))


def get_trace(store: Store, trace_id: str) -> list[dict]:
    """Every span of one trace, in start order (the renderer builds the tree)."""
    with store.connect() as conn:
        return [span_record(r) for r in conn.rows(_spans_where([Sql("spans.trace_id = ?", trace_id)]))]


DETAIL_COLUMNS = ("kind", "attributes", "content_attributes", "resource_attributes", "events", "links")
"""What a trace's page shows of each span besides :func:`span_record`: the raw OTLP data."""

def trace_detail(store: Store, trace_id: str) -> dict | None:
    """One trace for the web UI and the HTTP API: every span as :func:`span_record` plus its raw
    attributes, resource, events and links, the log records of the trace (``logs`` is empty
    on a store without a logs table) and its feedback (``scores``); ``None`` when unknown."""
    query = Sql(f"SELECT {SPAN_COLUMNS}, {', '.join('spans.' + c for c in DETAIL_COLUMNS)} "
                f"FROM spans WHERE spans.trace_id = ? ORDER BY {SPAN_ORDER}", trace_id)
    with store.connect() as conn:
        rows = conn.rows(query)
        if not rows:
            return None
        logs = _trace_logs(conn, trace_id)
        scores = feedback.trace_scores(conn, trace_id)
    spans = [{**span_record(r), "kind": r["kind"],
              **{c: json_column(r[c]) for c in DETAIL_COLUMNS if c != "kind"}} for r in rows]
    return {"trace_id": trace_id, "spans": spans, "logs": logs, "scores": scores}


def _trace_logs(conn: Connection, trace_id: str) -> list[dict]:
    """The trace's log records, every column as stored (JSON columns decoded), oldest first."""
    if not has_table(conn, "logs"):  # a store last written by a collector without logs
        return []
    rows = conn.rows(Sql("SELECT * FROM logs WHERE trace_id = ? ORDER BY timestamp_unix_nano, id LIMIT 10000",
                         trace_id))
    return [{k: json_column(v) if k != "trace_id" else v for k, v in r.items()} for r in rows]


def _evaluation_record(r: dict[str, Any]) -> dict[str, Any]:
    """A ``gen_ai.evaluation.result`` record as the documented JSON object."""
    attributes = r["attributes"] or {}
    fields = {name: attributes.get(key) for name, key in EVALUATION_FIELDS.items()}
    score = fields["score_value"]
    fields["score_value"] = score if isinstance(score, (int, float)) and not isinstance(score, bool) else None
    return {"span_id": r["span_id"], **fields, "time": iso(r["timestamp_unix_nano"])}


def get_trace_logs(store: Store, trace_id: str) -> dict[str, list[dict]]:
    """The log records of one trace in time order, as ``trace ID`` shows them: ``evaluations``
    (``gen_ai.evaluation.result``) and ``logs`` (every other record, GenAI content records
    included with ``kind: content``)."""
    with store.connect() as conn:
        records = _trace_logs(conn, trace_id)
    return {
        "logs": [{"span_id": r["span_id"], "time": iso(r["timestamp_unix_nano"]),
                  "severity_number": r["severity_number"], "severity": r["severity_text"],
                  "event_name": r["event_name"], "kind": r["kind"], "body": r["body"],
                  "attributes": r["attributes"] or {}} for r in records if r["kind"] != "evaluation"],
        "evaluations": [_evaluation_record(r) for r in records if r["kind"] == "evaluation"],
    }


CALL_SORTS = {
    "time": "spans.start_time_unix_nano DESC",
    "cost": "spans.cost_usd DESC NULLS LAST",
    "latency": "spans.duration_ms DESC NULLS LAST",
    "tokens": "coalesce(spans.input_tokens, 0) + coalesce(spans.output_tokens, 0) DESC",
    "ttft": "spans.ttft_ms DESC NULLS LAST",
}
"""Calls listing ``sort`` -> ORDER BY (largest / newest first; the same NULL order on both stores)."""


def list_calls(store: Store, f: Filters, sort: str, limit: int, offset: int) -> list[dict]:
    """A page of GenAI calls (spans with a model) as :func:`span_record`, newest first by
    default: the calls table of the web UI (``export`` gives the same records oldest first)."""
    with store.connect() as conn:
        where = [genai_call(), *f.span_clauses(conn)]
        query = Sql.compose(f"SELECT {SPAN_COLUMNS} FROM spans WHERE {{}} ORDER BY {CALL_SORTS[sort]}, "
                            f"spans.span_id DESC LIMIT {{}} OFFSET {{}}", all_of(where), Sql("?", limit),
                            Sql("?", offset))
        return [span_record(r) for r in conn.rows(query)]


class BadId(ValueError):
    """A trace / session id that is malformed, or a prefix that names more than one."""


_TRACE_ID = re.compile(r"^[0-9a-fA-F]{6,32}$")


def resolve_trace_id(store: Store, text: str) -> str | None:
    """A full trace id, or a unique prefix of at least 6 hex digits (listings show 8) -> the
    stored id, ``None`` when none matches; :class:`BadId` when malformed or ambiguous."""
    if not _TRACE_ID.match(text):
        raise BadId(f"{text!r} is not a trace id (32 hex characters, or a unique prefix of at least 6)")
    matches = trace_ids_with_prefix(store, text.lower())
    if len(matches) > 1:
        raise BadId(f"trace id prefix {text} is ambiguous ({', '.join(matches)}...)")
    return matches[0] if matches else None


def find_trace(store: Store, text: str) -> tuple[str, list[dict]]:
    """The id :func:`resolve_trace_id` finds and its spans (none when unknown)."""
    trace_id = resolve_trace_id(store, text)
    return (trace_id, get_trace(store, trace_id)) if trace_id else (text.lower(), [])


# -------------------------------------------------------------------------------------------------
# sessions

SESSION_SORTS = {**TRACE_SORTS, "turns": "{t}.turns"}


def list_sessions(store: Store, f: Filters, sort: str, limit: int, offset: int) -> list[dict]:
    with store.connect() as conn:
        where = f.rollup_clauses("sessions", "session_id", conn)
        return [_session_record(m) for m in conn.rows(_page("sessions", "session_id", SESSION_SORTS[sort],
                                                            where, limit, offset))]


def _session_record(m: Any) -> dict[str, Any]:
    return {"session_id": m["session_id"], **_rollup_record(m), "user_id": m["user_id"]}


def session_ids_with_prefix(store: Store, prefix: str) -> list[str]:
    """Up to two session ids starting with ``prefix`` (exactly, in any collation)."""
    query = Sql("SELECT session_id FROM sessions WHERE substr(session_id, 1, ?) = ? ORDER BY session_id LIMIT 2",
                len(prefix), prefix)
    with store.connect() as conn:
        return [row[0] for row in conn.execute(query).fetchall()]


def get_session(store: Store, session_id: str) -> dict | None:
    """The session's rollup and its turns (LLM calls) in order; ``None`` when unknown."""
    with store.connect() as conn:
        found = conn.rows(Sql("SELECT * FROM sessions WHERE session_id = ?", session_id))
        if not found:
            return None
        turns = [span_record(r) for r in conn.rows(_spans_where([Sql("spans.session_id = ?", session_id),
                                                                 llm_call()]))]
    return {"session": _session_record(found[0]), "turns": turns}


def find_session(store: Store, text: str) -> dict | None:
    """A session by id, or by a unique prefix (tables cut long ids, maybe copied with their "…");
    ``None`` when unknown, :class:`BadId` when the prefix is ambiguous."""
    found = get_session(store, text)
    if found is None:
        prefix = text.removesuffix("\u2026")
        matches = session_ids_with_prefix(store, prefix) if prefix else []
        if len(matches) > 1:
            raise BadId(f"session id prefix {prefix!r} is ambiguous ({', '.join(matches)}...)")
        found = get_session(store, matches[0]) if matches else None
    return found


# -------------------------------------------------------------------------------------------------
# export and eval candidates


def export_spans(store: Store, f: Filters, all_spans: bool, limit: int | None) -> Iterator[dict]:
    """Matching spans, oldest first, streamed (an export may be millions of rows)."""
    with store.connect() as conn:
        where = f.span_clauses(conn)
        if not all_spans:
            where.append(genai_call())
        query = _spans_where(where)
        if limit is not None:
            query = Sql.compose("{} LIMIT {}", query, Sql("?", limit))
        for row in conn.stream(query):
            yield span_record(row)


REFUSAL_PHRASES = (
    "I can't", "I cannot", "I can’t", "I'm unable", "I am unable", "I'm not able",
    "I don't know", "I do not know", "I don’t know", "I'm sorry, but", "As an AI",
)
"""Phrases in an assistant's answer that mark a refusal or a non-answer (case-insensitive)."""

FEEDBACK_KEYS = ("feedback", "user_feedback", "feedback.value", "gen_ai.feedback")
"""Attributes whose value says what the user thought of the answer."""

FEEDBACK_SCORE_KEYS = ("feedback.score", "user_feedback.score", "gen_ai.feedback.score")
"""Numeric feedback attributes: a score below 0.5 (or negative) counts as negative."""


def _refusal() -> Sql:
    text = "lower(CAST(spans.output_messages AS TEXT))"
    return any_of(like_contains(text, p.lower()) for p in REFUSAL_PHRASES)


def _negative_feedback(conn: Connection) -> Sql:
    """Negative feedback on the span itself (attributes), or sent later as a score."""
    dialect = conn.dialect
    clauses = [in_list(Sql.compose("lower({})", attribute(dialect, "spans.attributes", k)), feedback.NEGATIVE_LABELS)
               for k in FEEDBACK_KEYS]
    clauses += [Sql.compose("{} < {}", attribute(dialect, "spans.attributes", k, numeric=True),
                            Sql("?", feedback.NEGATIVE_BELOW))
                for k in FEEDBACK_SCORE_KEYS]
    clauses.append(feedback.span_has(conn, "negative"))
    return any_of(clauses)


def percentile_of(conn: Connection, column: str, where: list[Sql], p: float) -> float | None:
    """One exact nearest-rank percentile with plain SQL on either dialect (count, then OFFSET)."""
    n = conn.scalar(Sql.compose(f"SELECT count({column}) FROM spans WHERE {{}}", all_of(where)))
    if not n:
        return None
    return conn.scalar(Sql.compose(f"SELECT {column} FROM spans WHERE {{}} AND {column} IS NOT NULL "
                                   f"ORDER BY {column} LIMIT 1 OFFSET {{}}",
                                   all_of(where), Sql("?", percentile_rank(p, n) - 1)))


EVAL_REASONS = ("error", "slow", "expensive", "refusal", "negative_feedback")


def _outlier(conn: Connection, column: str, where: list[Sql], given: float | None) -> tuple[float | None, Sql]:
    """(threshold, condition) for "slow" / "expensive".  A given threshold: ``>= it``.  By default
    the p95, and above the median too, so that equal values (one model, one price) are no outliers."""
    if given is not None:
        return given, Sql(f"{column} >= ?", given)
    p95 = percentile_of(conn, column, where, 0.95)
    if p95 is None:
        return None, Sql("1 = 0")
    median = percentile_of(conn, column, where, 0.5)
    return p95, Sql(f"{column} >= ? AND {column} > ?", p95, median)


def eval_candidates(store: Store, f: Filters, limit: int, slow_ms: float | None,
                    expensive_usd: float | None) -> dict[str, Any]:
    """GenAI calls worth turning into eval cases, most reasons first, then newest.

    Slow and expensive mean at or above the given thresholds; by default, at or above the p95 of
    the filtered calls *and* above their median: outliers, so that when most calls cost the same
    (one model, similar prompts) they are not all flagged as expensive.
    """
    with store.connect() as conn:
        where = [genai_call(), *f.span_clauses(conn)]
        slow_ms, slow = _outlier(conn, "spans.duration_ms", where, slow_ms)
        expensive_usd, expensive = _outlier(conn, "spans.cost_usd", where, expensive_usd)
        conditions = {
            "error": Sql("spans.status_code = 2"),
            "slow": slow,
            "expensive": all_of([expensive, Sql("spans.cost_usd > 0")]),
            "refusal": _refusal(),
            "negative_feedback": _negative_feedback(conn),
        }
        flags = [Sql.compose("CASE WHEN {} THEN 1 ELSE 0 END", cond) for cond in conditions.values()]
        query = Sql.compose(
            f"SELECT {SPAN_COLUMNS}, "
            + ", ".join(f"{{}} AS is_{name}" for name in conditions)
            + " FROM spans WHERE {} AND {} ORDER BY {} DESC, spans.start_time_unix_nano DESC, spans.span_id "
              "LIMIT {}",
            *flags, all_of(where), any_of(conditions.values()), join(flags, " + "), Sql("?", limit))
        candidates = []
        for row in conn.rows(query):
            record = span_record(row)
            record["reasons"] = [name for name in EVAL_REASONS if row[f"is_{name}"]]
            candidates.append(record)
    return {"thresholds": {"slow_ms": slow_ms, "expensive_usd": expensive_usd},
            "candidates": candidates}
