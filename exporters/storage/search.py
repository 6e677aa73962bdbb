"""Full-text search over span content (``full_text_search: true``) and the query CLI's ``--search``.

SQLite: an FTS5 table ``spans_fts`` over ``input_messages``, ``output_messages`` and
``system_instructions``, an external-content index of ``spans`` kept current by triggers
(created with sqlite-utils' ``enable_fts``).  Postgres: a stored generated column
``content_tsv`` (``jsonb_to_tsvector`` over the *string values* of the same columns, so JSON keys
such as ``role`` are not indexed) with a GIN index.  Both use language-neutral tokenising (no
stemming): prompts come in every language.

A query matches spans containing every word of it.  Without the index :func:`search_condition`
falls back to a case-insensitive substring scan, which works but reads every row.
"""

from __future__ import annotations

import sqlalchemy as sa

from exporters.storage.schema import spans

__all__ = ["FTS_COLUMNS", "enable_full_text_search", "fts_enabled", "search_condition", "search_spans"]

FTS_COLUMNS = ("input_messages", "output_messages", "system_instructions")


def enable_full_text_search(engine: sa.Engine) -> None:
    """Create the index if missing (idempotent; the first run indexes existing rows)."""
    if engine.dialect.name == "sqlite":
        import sqlite_utils

        raw = engine.raw_connection()
        try:
            sqlite_utils.Database(raw.driver_connection)["spans"].enable_fts(
                FTS_COLUMNS, create_triggers=True, replace=True)
        finally:
            raw.close()
        return
    vector = " || ".join(
        f"jsonb_to_tsvector('simple', COALESCE({c}, 'null'::jsonb), '[\"string\"]')" for c in FTS_COLUMNS)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"ALTER TABLE spans ADD COLUMN IF NOT EXISTS content_tsv tsvector "
            f"GENERATED ALWAYS AS ({vector}) STORED")
        conn.exec_driver_sql(
            "CREATE INDEX IF NOT EXISTS ix_spans_content_tsv ON spans USING GIN (content_tsv)")


def fts_enabled(conn: sa.Connection) -> bool:
    """Whether the full-text index exists in this database."""
    inspector = sa.inspect(conn)
    if conn.dialect.name == "sqlite":
        return inspector.has_table("spans_fts")
    return any(c["name"] == "content_tsv" for c in inspector.get_columns("spans"))


def _fts5_query(text: str) -> str:
    """Every word as a quoted FTS5 string: user input can never be an FTS5 syntax error."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())


def search_condition(conn: sa.Connection, text: str) -> sa.ColumnElement[bool]:
    """A WHERE condition on :data:`spans` matching ``text`` in the content columns.

    Use it in any select on ``spans``:
    ``select(spans.c.trace_id).where(search_condition(conn, "refund policy"))``.
    """
    if not text.split():
        return sa.false()
    if fts_enabled(conn):
        if conn.dialect.name == "sqlite":
            matches = sa.text("SELECT rowid FROM spans_fts WHERE spans_fts MATCH :fts_query")
            return spans.c.id.in_(matches.bindparams(fts_query=_fts5_query(text)))
        return sa.text("spans.content_tsv @@ plainto_tsquery('simple'::regconfig, :fts_query)").bindparams(
            fts_query=text)
    words = [w.lower() for w in text.split()]
    column_text = [sa.func.lower(sa.cast(spans.c[c], sa.Text)) for c in FTS_COLUMNS]
    return sa.and_(*(sa.or_(*(col.contains(w, autoescape=True) for col in column_text)) for w in words))


def search_spans(conn: sa.Connection, text: str, limit: int = 50) -> list[sa.Row]:
    """Newest spans whose content matches ``text``: (trace_id, span_id, name, model, start)."""
    query = (sa.select(spans.c.trace_id, spans.c.span_id, spans.c.name, spans.c.model,
                       spans.c.start_time_unix_nano)
             .where(search_condition(conn, text))
             .order_by(spans.c.start_time_unix_nano.desc())
             .limit(limit))
    return list(conn.execute(query))
