"""The GenAI storage schema, shared by SQLite and Postgres (SQLAlchemy Core).

This module is the contract between the storage exporters (writers) and the query CLI (reader).
Column names are stable; changes go through an Alembic migration in ``migrations/versions``.

Conventions
-----------
- ``trace_id`` / ``span_id`` / ``parent_span_id`` are lowercase hex strings (32 / 16 / 16 chars),
  as in OTLP/JSON; a root span has ``parent_span_id`` NULL.
- Times are integer unix nanoseconds (``*_unix_nano``, BIGINT); ``duration_ms`` is a float.
  Span times are the client's clock; ``received_unix_nano`` is the collector's clock when the
  span was received, and the only time retention uses (a client clock cannot keep or expire data).
- ``kind`` is the OTLP enum (0 unspecified, 1 internal, 2 server, 3 client, 4 producer,
  5 consumer); ``status_code`` is the OTLP enum (0 unset, 1 ok, 2 error).
- JSON columns are TEXT holding JSON on SQLite and JSONB on Postgres.  Attribute values keep
  their JSON types; ``bytes`` values are stored as base64 strings (as OTLP/JSON does); NaN and
  infinities become ``null`` (JSON has no such numbers); integers beyond 64 bits become strings.  Strings longer than the
  exporter's ``max_content_bytes`` are cut and end with ``…[truncated N bytes]``.
- GenAI columns come from ``span.genai`` (filled by the genai processors) and are NULL for spans
  that are not GenAI operations.
- ``content_*`` columns (``input_messages``, ``output_messages``, ``system_instructions``,
  ``content_attributes``, ``events``) hold prompt / response text; ``content_ttl`` sets them to
  NULL after a while and flips ``content_purged`` to 1.
- ``content_attributes`` are the span attributes that carry prompt/response text in any dialect
  (``gen_ai.input.messages``, ``gen_ai.prompt.*``, ``llm.input_messages.*``, ``input.value``,
  ``langfuse.observation.input``, ``ai.prompt`` ..., as :mod:`processors.genai_content` defines
  content); all other attributes are in ``attributes``.

Log records (``logs``, revision 0005) keep every OTLP LogRecord field; ``kind`` says what the
collector made of it: ``content`` (a GenAI event carrying messages, merged into its span's message
columns - see :mod:`exporters.storage.transcript`), ``evaluation`` (``gen_ai.evaluation.result``,
kept against its span) or ``log``.  ``record_key`` is a digest of the record as sent, so a replayed
record (client retry, journal replay) is stored once.

Rollups (kept current on every write, so listing never scans spans):

- ``traces``: one row per trace_id.
- ``sessions``: one row per GenAI session id (``spans.session_id``).
  ``turns`` counts LLM calls (spans whose operation is chat / text_completion /
  generate_content, or a GenAI span with a model but no operation).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = [
    "metadata", "spans", "traces", "sessions", "logs", "scores", "LOG_CONTENT_BITS", "LOG_CONTENT_COLUMNS", "JSONText",
    "CONTENT_COLUMNS", "VERSION_TABLE", "CALL_INDEX_COLUMNS",
]

VERSION_TABLE = "genai_collector_schema_version"
"""Alembic's version table, named so it cannot clash with another app's ``alembic_version``."""

JSONText = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
"""JSON stored as TEXT on SQLite (json_extract works on it) and JSONB on Postgres."""

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""BIGINT everywhere; plain INTEGER on SQLite so ``id`` is the rowid alias (autoincrement)."""

CALL_INDEX_COLUMNS: tuple[str, ...] = (
    "start_time_unix_nano", "model", "request_model", "provider", "service_name", "user_id", "status_code",
    "input_tokens", "output_tokens", "cost_usd", "duration_ms", "ttft_ms", "output_tokens_per_second",
)
"""Columns of ``ix_spans_calls`` (GenAI calls: ``model IS NOT NULL``), led by time: every column a
``stats`` query groups by (but ``session``) or aggregates, so it is answered from the index alone.
It replaced the ``(model, start)`` index of revision 0001, with which every call a ``stats``
query counted was a lookup of its wide ``spans`` row (see docs/performance.md, Query CLI)."""

metadata = sa.MetaData()

spans = sa.Table(
    "spans", metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True,
              comment="surrogate key; insertion order (retention and FTS use it)"),
    sa.Column("trace_id", sa.String(32), nullable=False, comment="lowercase hex"),
    sa.Column("span_id", sa.String(16), nullable=False, comment="lowercase hex"),
    sa.Column("parent_span_id", sa.String(16), comment="lowercase hex, NULL for a root span"),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False, comment="OTLP SpanKind enum"),
    sa.Column("start_time_unix_nano", sa.BigInteger, nullable=False),
    sa.Column("end_time_unix_nano", sa.BigInteger, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("status_code", sa.SmallInteger, nullable=False, comment="0 unset, 1 ok, 2 error"),
    sa.Column("status_message", sa.Text),
    sa.Column("service_name", sa.Text, comment="resource attribute service.name"),
    sa.Column("scope_name", sa.Text),
    sa.Column("scope_version", sa.Text),
    sa.Column("trace_state", sa.Text),
    sa.Column("flags", sa.BigInteger),
    # canonical GenAI columns (collector.model.GenAI); NULL for non-GenAI spans
    sa.Column("provider", sa.Text),
    sa.Column("operation", sa.Text),
    sa.Column("request_model", sa.Text),
    sa.Column("response_model", sa.Text),
    sa.Column("model", sa.Text, comment="response_model, else request_model (indexed)"),
    sa.Column("input_tokens", sa.BigInteger),
    sa.Column("output_tokens", sa.BigInteger),
    sa.Column("cache_read_tokens", sa.BigInteger, comment="slice of input_tokens"),
    sa.Column("cache_write_tokens", sa.BigInteger, comment="slice of input_tokens"),
    sa.Column("reasoning_tokens", sa.BigInteger, comment="slice of output_tokens"),
    sa.Column("cost_usd", sa.Float),
    sa.Column("ttft_ms", sa.Float),
    sa.Column("output_tokens_per_second", sa.Float),
    sa.Column("session_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("error_type", sa.Text),
    # content (nulled by content_ttl)
    sa.Column("input_messages", JSONText),
    sa.Column("output_messages", JSONText),
    sa.Column("system_instructions", JSONText),
    sa.Column("content_attributes", JSONText),
    sa.Column("events", JSONText, comment="[{name, time_unix_nano, attributes}]"),
    sa.Column("content_purged", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("content_from_logs", sa.SmallInteger, nullable=False, server_default="0",
              comment="bits of the message columns filled from log records (see LOG_CONTENT_BITS)"),
    # everything else, as JSON
    sa.Column("attributes", JSONText, comment="span attributes except content_attributes"),
    sa.Column("resource_attributes", JSONText),
    sa.Column("links", JSONText, comment="[{trace_id, span_id, trace_state, attributes}]"),
    sa.Column("dropped_counts", JSONText,
              comment='{"attributes": n, "events": n, "links": n} when any is non-zero'),
    sa.Column("received_unix_nano", sa.BigInteger, nullable=False, server_default="0",
              comment="collector clock when the span was received (retention counts from it)"),
    # The unique key doubles as the trace index (trace_id prefix).  Few indexes on purpose: each
    # costs insert speed, and keys on random hex ids cost the most.
    sa.Index("ix_spans_key", "trace_id", "span_id", unique=True),
    sa.Index("ix_spans_start", "start_time_unix_nano"),
    # Partial indexes: most spans are not LLM calls and not errors, so they cost nothing there.
    # A query ``session_id = ?`` / ``status_code = 2`` implies the condition and uses them.
    *(sa.Index(f"ix_spans_{c}", c, "start_time_unix_nano", sqlite_where=sa.text(f"{c} IS NOT NULL"),
               postgresql_where=sa.text(f"{c} IS NOT NULL")) for c in ("session_id", "user_id")),
    # GenAI calls by time, covering what analytics reads (``stats``, ``--model`` filters): a scan
    # of the last 30 days reads this narrow index, never the wide rows (see CALL_INDEX_COLUMNS).
    sa.Index("ix_spans_calls", *CALL_INDEX_COLUMNS, sqlite_where=sa.text("model IS NOT NULL"),
             postgresql_where=sa.text("model IS NOT NULL")),
    sa.Index("ix_spans_error", "start_time_unix_nano", sqlite_where=sa.text("status_code = 2"),
             postgresql_where=sa.text("status_code = 2")),
    # content_ttl walks it; receipt times only grow, so inserts append at its right edge.
    sa.Index("ix_spans_received", "received_unix_nano"),
)

CONTENT_COLUMNS: tuple[str, ...] = (
    "input_messages", "output_messages", "system_instructions", "content_attributes", "events",
)

traces = sa.Table(
    "traces", metadata,
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("root_name", sa.Text, comment="name of the span without parent, once seen"),
    sa.Column("service_name", sa.Text, comment="service of the root span, else the first seen"),
    sa.Column("session_id", sa.Text, comment="first session id seen in the trace"),
    sa.Column("user_id", sa.Text, comment="first user id seen in the trace"),
    sa.Column("start_time_unix_nano", sa.BigInteger, nullable=False, comment="min span start"),
    sa.Column("end_time_unix_nano", sa.BigInteger, nullable=False, comment="max span end"),
    sa.Column("span_count", sa.BigInteger, nullable=False),
    sa.Column("error_count", sa.BigInteger, nullable=False, comment="spans with status ERROR"),
    sa.Column("turns", sa.BigInteger, nullable=False, comment="LLM calls"),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("received_unix_nano", sa.BigInteger, nullable=False, server_default="0",
              comment="latest receipt time of its spans (ttl and max_size_mb count from it)"),
    sa.Index("ix_traces_start", "start_time_unix_nano"),
    sa.Index("ix_traces_received", "received_unix_nano"),
    sa.Index("ix_traces_end", "end_time_unix_nano"),
    sa.Index("ix_traces_session", "session_id"),
    sa.Index("ix_traces_user", "user_id"),
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, comment="first user id seen in the session"),
    sa.Column("start_time_unix_nano", sa.BigInteger, nullable=False, comment="min span start"),
    sa.Column("end_time_unix_nano", sa.BigInteger, nullable=False, comment="max span end"),
    sa.Column("span_count", sa.BigInteger, nullable=False),
    sa.Column("error_count", sa.BigInteger, nullable=False),
    sa.Column("turns", sa.BigInteger, nullable=False, comment="LLM calls"),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("received_unix_nano", sa.BigInteger, nullable=False, server_default="0",
              comment="latest receipt time of its spans (ttl counts from it)"),
    sa.Index("ix_sessions_start", "start_time_unix_nano"),
    sa.Index("ix_sessions_received", "received_unix_nano"),
    sa.Index("ix_sessions_end", "end_time_unix_nano"),
    sa.Index("ix_sessions_user", "user_id"),
)

LOG_CONTENT_BITS: dict[str, int] = {"input_messages": 1, "output_messages": 2, "system_instructions": 4}
"""``spans.content_from_logs`` bit per message column: set when the column's value was built from
the span's log records (so a later record may rebuild it), clear when the span carried it itself."""

logs = sa.Table(
    "logs", metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True, comment="insertion order"),
    sa.Column("record_key", sa.String(32), nullable=False,
              comment="digest of the record as sent: a replay of it is not stored twice"),
    sa.Column("timestamp_unix_nano", sa.BigInteger, nullable=False,
              comment="time_unix_nano, else observed_time_unix_nano, else when it was stored"),
    sa.Column("received_unix_nano", sa.BigInteger, nullable=False,
              comment="when the collector first stored it: retention counts from it (client clocks lie)"),
    sa.Column("time_unix_nano", sa.BigInteger, comment="as sent; NULL when the sender left it 0"),
    sa.Column("observed_time_unix_nano", sa.BigInteger, comment="as sent; NULL when 0"),
    sa.Column("severity_number", sa.SmallInteger, nullable=False, comment="OTLP SeverityNumber (0-24)"),
    sa.Column("severity_text", sa.Text),
    sa.Column("event_name", sa.Text, comment="LogRecord event_name, else the event.name attribute"),
    sa.Column("kind", sa.String(16), nullable=False, comment="content | evaluation | log"),
    sa.Column("trace_id", sa.String(32), comment="lowercase hex; NULL when the record has none"),
    sa.Column("span_id", sa.String(16), comment="lowercase hex; NULL when the record has none"),
    sa.Column("flags", sa.BigInteger),
    sa.Column("service_name", sa.Text, comment="resource attribute service.name"),
    sa.Column("scope_name", sa.Text),
    sa.Column("scope_version", sa.Text),
    # content (nulled by content_ttl)
    sa.Column("body", JSONText, comment="AnyValue as JSON; nulled by content_ttl for content records"),
    sa.Column("content", JSONText, comment="attributes carrying prompt/response text (as on spans)"),
    sa.Column("content_purged", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("attributes", JSONText, comment="attributes except content"),
    sa.Column("resource_attributes", JSONText),
    sa.Column("dropped_attributes_count", sa.BigInteger),
    sa.Index("ux_logs_key", "record_key", unique=True),
    sa.Index("ix_logs_received", "received_unix_nano"),
    # A trace's records (``trace ID``) and a span's records (the transcript join, evaluations).
    sa.Index("ix_logs_span", "trace_id", "span_id", sqlite_where=sa.text("trace_id IS NOT NULL"),
             postgresql_where=sa.text("trace_id IS NOT NULL")),
)

LOG_CONTENT_COLUMNS: tuple[str, ...] = ("content",)
"""``logs`` columns content_ttl nulls for every record (``body`` too for ``kind = 'content'``)."""

scores = sa.Table(
    "scores", metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(32), nullable=False,
              comment="lowercase hex; no foreign key: a score may arrive before its trace"),
    sa.Column("span_id", sa.String(16), comment="lowercase hex; NULL: the score is about the whole trace"),
    sa.Column("session_id", sa.Text),
    sa.Column("name", sa.Text, nullable=False, comment="thumbs, rating, or any evaluator's name"),
    sa.Column("value", sa.Float, comment="numeric score (thumbs: 1 up, 0 down)"),
    sa.Column("label", sa.Text, comment="e.g. positive, negative, correct"),
    sa.Column("comment", sa.Text),
    sa.Column("source", sa.String(16), nullable=False, comment="user | api | eval"),
    sa.Column("author", sa.Text),
    sa.Column("time_unix_nano", sa.BigInteger, nullable=False, comment="when the score was given"),
    sa.Index("ix_scores_trace", "trace_id", "span_id"),
    sa.Index("ix_scores_time", "time_unix_nano"),
)
"""Feedback and scores (docs/feedback.md): several per call, keyed by trace id, so that a thumbs-down
sent before its trace is stored is attached as soon as the trace is."""
