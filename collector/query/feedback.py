"""Feedback and scores: what a user, an API client or an evaluator thought of a call.

A score names a trace (always), optionally one span of it and a session; it has a ``name``
(``thumbs``, ``rating``, any evaluator's name), a numeric ``value`` and/or a ``label``, a comment,
its ``source`` (``user``, ``api``, ``eval``), an author and the time it was given.  Several per call.
It is keyed by trace id with no foreign key: a thumbs-down usually arrives after the call, but it
may also arrive before the collector has stored the trace, and it is attached when the trace is.

Every reader (``trace``, ``traces --feedback``, ``stats``, ``eval-candidates``, the HTTP API) gets
scores through this module: one validation of a new score, one definition of negative and
positive, one join of scores to the spans they are about.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Mapping

from collector.query.args import SCORE_SOURCES as SOURCES
from collector.query.store import Connection, has_table
from exporters.storage.sqltext import Sql, in_list, join

__all__ = [
    "FIELDS", "JSON_SCHEMA", "SOURCES", "parse_id", "NEGATIVE_LABELS", "POSITIVE_LABELS", "NEGATIVE_BELOW", "BadScore", "parse_score",
    "add_score", "delete_score", "trace_scores", "scores_present", "score_rows", "polarity", "about_span",
    "span_has", "rollup_has", "score_record",
]


NEGATIVE_LABELS = ("negative", "thumbs_down", "thumbsdown", "bad", "down", "-1", "0", "false")
"""Labels (any case) that make a score negative; also what a ``feedback`` span attribute says
when ``eval-candidates`` reads it."""
POSITIVE_LABELS = ("positive", "thumbs_up", "thumbsup", "good", "up", "1", "true")
NEGATIVE_BELOW = 0.5
"""Without a known label, a value below this is negative, at or above it positive: thumbs as 1 / 0
(or -1), and scores normalised to 0..1.  Send a label for other scales (a 1-5 rating)."""

MAX_TEXT = {"session_id": 256, "name": 128, "label": 256, "comment": 10_000, "author": 256}
FIELDS = ("trace_id", "span_id", "session_id", "name", "value", "label", "comment", "source", "author")
"""What a new score may carry (``POST /api/v1/feedback``'s JSON object)."""
JSON_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["trace_id", "name"],
    "properties": {
        "trace_id": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
        "span_id": {"type": "string", "pattern": "^[0-9a-fA-F]{16}$"},
        "session_id": {"type": "string", "maxLength": MAX_TEXT["session_id"]},
        "name": {"type": "string", "maxLength": MAX_TEXT["name"]},
        "value": {"type": "number", "description": "a value or a label (or both) is required"},
        "label": {"type": "string", "maxLength": MAX_TEXT["label"]},
        "comment": {"type": "string", "maxLength": MAX_TEXT["comment"]},
        "source": {"type": "string", "enum": list(SOURCES), "default": "api"},
        "author": {"type": "string", "maxLength": MAX_TEXT["author"]},
    },
}
"""The OpenAPI description of a new score (what :func:`parse_score` checks)."""
_HEX = {"trace_id": re.compile(r"^[0-9a-fA-F]{32}$"), "span_id": re.compile(r"^[0-9a-fA-F]{16}$")}


class BadScore(ValueError):
    """A field of a new score is wrong: ``field`` names it, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadScore(field, f"must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise BadScore(field, "contains a NUL character")
    if field in MAX_TEXT and len(value) > MAX_TEXT[field]:
        raise BadScore(field, f"longer than {MAX_TEXT[field]} characters")
    return value


def parse_id(field: str, value: Any) -> str:
    """A ``trace_id`` / ``span_id`` as stored (lowercase hex), or :class:`BadScore`."""
    if not isinstance(value, str) or not _HEX[field].match(value):
        width = 32 if field == "trace_id" else 16
        raise BadScore(field, f"must be {width} hex characters")
    if not value.strip("0"):
        raise BadScore(field, "must not be all zeros (an invalid id in OpenTelemetry)")
    return value.lower()


def _value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadScore("value", f"must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or abs(value) > 1e15:
        raise BadScore("value", "must be a finite number between -1e15 and 1e15")
    return float(value)


def parse_score(document: Any, default_source: str = "api") -> dict[str, Any]:
    """A new score's row from a JSON object (or CLI flags), checked field by field: unknown or
    missing fields, wrong types, bad ids, neither value nor label -> :class:`BadScore`."""
    if not isinstance(document, Mapping):
        raise BadScore("body", "must be a JSON object")
    for key in document:
        if key not in FIELDS:
            raise BadScore(str(key), f"unknown field (known: {', '.join(FIELDS)})")
    given = {k: v for k, v in document.items() if v is not None}
    if "trace_id" not in given:
        raise BadScore("trace_id", "is required")
    if not given.get("name"):
        raise BadScore("name", "is required (e.g. thumbs, rating)")
    row: dict[str, Any] = {"trace_id": parse_id("trace_id", given["trace_id"]),
                           "span_id": parse_id("span_id", given["span_id"]) if "span_id" in given else None}
    for field in ("session_id", "name", "label", "comment", "author"):
        row[field] = _text(field, given[field]) if field in given else None
    if not row["name"].strip() or not row["name"].isprintable():
        raise BadScore("name", "must be printable text")
    row["value"] = _value(given["value"]) if "value" in given else None
    if row["value"] is None and not row["label"]:
        raise BadScore("value", "give a value or a label (or both)")
    source = given.get("source", default_source)
    if source not in SOURCES:
        raise BadScore("source", f"{source!r} is not one of {', '.join(SOURCES)}")
    row["source"] = source
    row["time_unix_nano"] = time.time_ns()
    return row


# -- writing ---------------------------------------------------------------------------------------

_COLUMNS = (*FIELDS, "time_unix_nano")


def add_score(conn: Connection, row: Mapping[str, Any]) -> int:
    """Insert one score (from :func:`parse_score`) on a writer connection; its id."""
    columns = ", ".join(_COLUMNS)
    values = ", ".join("?" for _ in _COLUMNS)
    query = Sql(f"INSERT INTO scores ({columns}) VALUES ({values}) RETURNING id", *(row[c] for c in _COLUMNS))
    return int(conn.scalar(query))


def delete_score(conn: Connection, score_id: int) -> bool:
    """Remove one score; False when there is none with that id."""
    return conn.execute(Sql("DELETE FROM scores WHERE id = ?", score_id)).rowcount > 0


# -- reading ---------------------------------------------------------------------------------------


def scores_present(conn: Connection) -> bool:
    """Whether scores can be written: False on a store not yet migrated to revision 0006 (the
    collector migrates at start)."""
    return has_table(conn, "scores")


def score_record(m: Mapping[str, Any]) -> dict[str, Any]:
    """One score as the documented JSON object."""
    from collector.query.queries import iso

    return {"id": m["id"], "trace_id": m["trace_id"], "span_id": m["span_id"], "session_id": m["session_id"],
            "name": m["name"], "value": m["value"], "label": m["label"], "comment": m["comment"],
            "source": m["source"], "author": m["author"], "time": iso(m["time_unix_nano"])}


def _evaluations(dialect: str) -> Sql:
    """``gen_ai.evaluation.result`` log records (kept by the storage exporters in ``logs``) as
    scores with source ``eval``: the evaluator's name, score value and label, its explanation as
    the comment, the emitting service as the author; the id is the log record's id negated (it
    is removed with its log record, not by ``DELETE /api/v1/feedback``)."""
    from collector.query.filters import attribute  # filters reads this module's clauses
    from processors.genai_conventions import EVALUATION_FIELDS

    def text(field: str) -> Sql:
        return attribute(dialect, "logs.attributes", EVALUATION_FIELDS[field])

    return Sql.compose(
        "SELECT -logs.id AS id, logs.trace_id AS trace_id, logs.span_id AS span_id, "
        "CAST(NULL AS TEXT) AS session_id, coalesce({}, 'evaluation') AS name, {} AS value, {} AS label, "
        "{} AS comment, 'eval' AS source, logs.service_name AS author, logs.timestamp_unix_nano AS time_unix_nano "
        "FROM logs WHERE logs.kind = 'evaluation' AND logs.trace_id IS NOT NULL",
        text("name"), attribute(dialect, "logs.attributes", EVALUATION_FIELDS["score_value"], numeric=True),
        text("score_label"), text("explanation"))


def score_rows(conn: Connection) -> Sql | None:
    """Every score a reader sees, as a derived table named ``scores``: the stored ones and the
    evaluation results (:func:`_evaluations`); None when the store has neither table."""
    parts = []
    if has_table(conn, "scores"):
        parts.append(Sql(f"SELECT {', '.join(('id', *_COLUMNS))} FROM scores"))
    if has_table(conn, "logs"):
        parts.append(_evaluations(conn.dialect))
    if not parts:
        return None
    return Sql.compose("({}) AS scores", join(parts, " UNION ALL "))


def trace_scores(conn: Connection, trace_id: str) -> list[dict[str, Any]]:
    """The scores given to a trace (stored or not yet), evaluations included, oldest first."""
    rows = score_rows(conn)
    if rows is None:
        return []
    query = Sql.compose("SELECT * FROM {} WHERE scores.trace_id = {} ORDER BY scores.time_unix_nano, scores.id "
                        "LIMIT 10000", rows, Sql("?", trace_id))
    return [score_record(r) for r in conn.rows(query)]


def polarity(which: str) -> Sql:
    """A score (row ``scores``) that is ``negative`` or ``positive``: a known label decides,
    else the value (below :data:`NEGATIVE_BELOW` is negative)."""
    label = "lower(scores.label)"
    negative, positive = in_list(label, NEGATIVE_LABELS), in_list(label, POSITIVE_LABELS)
    if which == "negative":
        return Sql.compose("({} OR (scores.label IS NULL OR NOT {}) AND scores.value < {})",
                           negative, positive, Sql("?", NEGATIVE_BELOW))
    return Sql.compose("({} OR (scores.label IS NULL OR NOT {}) AND scores.value >= {})",
                       positive, negative, Sql("?", NEGATIVE_BELOW))


def about_span(span: str = "spans") -> Sql:
    """A score (row ``scores``) about span row ``span``: given to it, or to its whole trace."""
    return Sql(f"scores.trace_id = {span}.trace_id AND (scores.span_id IS NULL OR scores.span_id = {span}.span_id)")


NONE = Sql("1 = 0")


def _matching(rows: Sql, which: str, columns: str, condition: str = "1 = 1") -> Sql:
    """``SELECT columns`` of the ``which`` scores: a subquery that does not depend on the outer
    row, so both stores run it once (a correlated EXISTS would rebuild the union per span)."""
    return Sql.compose(f"SELECT {columns} FROM {{}} WHERE {{}} AND {condition}", rows, polarity(which))


def span_has(conn: Connection, which: str) -> Sql:
    """A span (row ``spans``) has a ``negative`` / ``positive`` score: about its whole trace, or
    about it."""
    rows = score_rows(conn)
    if rows is None:
        return NONE
    return Sql.compose("(spans.trace_id IN ({}) OR (spans.trace_id, spans.span_id) IN ({}))",
                       _matching(rows, which, "scores.trace_id", "scores.span_id IS NULL"),
                       _matching(rows, which, "scores.trace_id, scores.span_id", "scores.span_id IS NOT NULL"))


def rollup_has(conn: Connection, rollup: str, which: str) -> Sql:
    """A trace or session (row of rollup table ``traces`` / ``sessions``) has a ``negative`` /
    ``positive`` score: given to the trace, or to the session or to a trace of it."""
    rows = score_rows(conn)
    if rows is None:
        return NONE
    if rollup == "traces":
        return Sql.compose("traces.trace_id IN ({})", _matching(rows, which, "scores.trace_id"))
    return Sql.compose("(sessions.session_id IN ({}) OR sessions.session_id IN (SELECT spans.session_id FROM spans "
                       "WHERE spans.session_id IS NOT NULL AND spans.trace_id IN ({})))",
                       _matching(rows, which, "scores.session_id", "scores.session_id IS NOT NULL"),
                       _matching(rows, which, "scores.trace_id"))
