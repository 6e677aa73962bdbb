"""Full-text search over span content (``full_text_search: true``) and the query CLI's ``--search``.

SQLite: an FTS5 table ``spans_fts`` over ``input_messages``, ``output_messages`` and
``system_instructions``, an external-content index of ``spans`` (new rows are indexed by the
write path, one statement per batch; updates and deletes by triggers).  Postgres: a stored
generated column ``content_tsv`` (``jsonb_to_tsvector`` over the *string values* of the same columns, so JSON keys
such as ``role`` are not indexed) with a GIN index.  Both use language-neutral tokenising (no
stemming): prompts come in every language.

A query matches spans containing every word of it.  Without the index :func:`search_clause`
falls back to a case-insensitive substring scan, which works but reads every row.

The search is SQL text (:class:`~exporters.storage.sqltext.Sql`), not SQLAlchemy: the query CLI
runs it through the DBAPI driver without importing SQLAlchemy (see that module).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from exporters.storage.sqltext import Sql, all_of, any_of

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["FTS_COLUMNS", "FTS_INDEX_NEW_ROWS", "FTS_PRESENT", "SQLITE_LOWER", "register_sqlite_lower", "set_full_text_search",
           "fts_enabled", "search_clause", "search_spans", "like_contains"]

FTS_COLUMNS = ("input_messages", "output_messages", "system_instructions")


_FTS5_TABLE = ("CREATE VIRTUAL TABLE IF NOT EXISTS spans_fts USING fts5({cols}, content='spans', "
               "content_rowid='id', detail=none, columnsize=0)")
# Deletes and updates (retention, replays) keep the index current through triggers; inserts are
# indexed by the write path in one statement per batch (FTS_INDEX_NEW_ROWS).
_FTS5_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS spans_fts_ad AFTER DELETE ON spans BEGIN "
    "INSERT INTO spans_fts (spans_fts, rowid, {cols}) VALUES ('delete', old.id, {old}); END",
    "CREATE TRIGGER IF NOT EXISTS spans_fts_au AFTER UPDATE OF {cols} ON spans BEGIN "
    "INSERT INTO spans_fts (spans_fts, rowid, {cols}) VALUES ('delete', old.id, {old}); "
    "INSERT INTO spans_fts (rowid, {cols}) VALUES (new.id, {new}); END",
)
_COLS = ", ".join(FTS_COLUMNS)
FTS_INDEX_NEW_ROWS = f"INSERT INTO spans_fts (rowid, {_COLS}) SELECT id, {_COLS} FROM spans WHERE id >= ?"
_PG_VECTOR = " || ".join(
    f"jsonb_to_tsvector('simple', COALESCE({c}, 'null'::jsonb), '[\"string\"]')" for c in FTS_COLUMNS)


def set_full_text_search(engine: sa.Engine, enabled: bool) -> None:
    """Create the index when enabled and missing (indexing existing rows), drop it when disabled
    and present: the config decides, and a stale index that misses new rows is worse than none.

    SQLite: the external-content FTS5 layout sqlite-utils' ``enable_fts`` creates, with
    ``detail=none, columnsize=0`` added (no positions, no per-row sizes: cheaper to maintain;
    searches are word lists, never phrases, so nothing is lost).
    """
    with engine.begin() as conn:
        present = fts_enabled(conn)
        if enabled == present:
            return
        if engine.dialect.name == "sqlite":
            _sqlite_fts(conn, enabled)
        elif enabled:
            conn.exec_driver_sql(f"ALTER TABLE spans ADD COLUMN IF NOT EXISTS content_tsv tsvector "
                                 f"GENERATED ALWAYS AS ({_PG_VECTOR}) STORED")
            conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_spans_content_tsv ON spans USING GIN (content_tsv)")
        else:
            conn.exec_driver_sql("ALTER TABLE spans DROP COLUMN IF EXISTS content_tsv")


def _sqlite_fts(conn: sa.Connection, enabled: bool) -> None:
    if not enabled:
        for statement in ("DROP TRIGGER IF EXISTS spans_fts_ad", "DROP TRIGGER IF EXISTS spans_fts_au",
                          "DROP TABLE IF EXISTS spans_fts"):
            conn.exec_driver_sql(statement)
        return
    conn.exec_driver_sql(_FTS5_TABLE.format(cols=_COLS))
    for trigger in _FTS5_TRIGGERS:
        conn.exec_driver_sql(trigger.format(cols=_COLS, new=", ".join(f"new.{c}" for c in FTS_COLUMNS),
                                            old=", ".join(f"old.{c}" for c in FTS_COLUMNS)))
    conn.exec_driver_sql("INSERT INTO spans_fts (spans_fts) VALUES ('rebuild')")


FTS_PRESENT = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'spans_fts'",
    "postgresql": "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
                  "AND table_name = 'spans' AND column_name = 'content_tsv'",
}
"""Dialect -> a query counting the full-text index (1 when present, else 0)."""


def fts_enabled(conn: sa.Connection) -> bool:
    """Whether the full-text index exists in this database."""
    return bool(conn.exec_driver_sql(FTS_PRESENT[conn.dialect.name]).scalar())


_WORD = re.compile(r"[^\W_]+")


def _fts5_query(text: str) -> str:
    """Every word as a quoted FTS5 token, split the way the unicode61 tokenizer splits ("e-mail"
    -> "e" "mail"): user input can never be FTS5 syntax, and no token list becomes a phrase."""
    return " ".join(f'"{word}"' for word in _WORD.findall(text))


def like_contains(column_text: str, value: str) -> Sql:
    """``column_text`` contains ``value`` literally (``%`` and ``_`` in it match only themselves)."""
    escaped = value.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return Sql(f"{column_text} LIKE ? ESCAPE '/'", f"%{escaped}%")


SQLITE_LOWER = "gc_lower"
"""The SQL name of :func:`sqlite_lower`: register it with :func:`register_sqlite_lower`."""


def sqlite_lower(value: object) -> object:
    """A Unicode-aware ``lower()`` for SQLite (its own folds ASCII only); NULL and numbers pass."""
    return value.lower() if isinstance(value, str) else value


def register_sqlite_lower(dbapi_connection) -> None:
    """Make :data:`SQLITE_LOWER` callable on a sqlite3 connection that searches."""
    dbapi_connection.create_function(SQLITE_LOWER, 1, sqlite_lower, deterministic=True)


_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
"""Characters JSON text writes escaped: a word holding one is not in the text as typed."""


def _string_values_contain(dialect: str, column: str, word: str) -> Sql:
    """Some string *value* in the JSON of ``column`` contains ``word`` (case-insensitive): the
    keys (``role``, ``parts``, ``content``...) are structure, not what anyone said.  The JSON
    text as a whole is tried first (one call per row), the values only where it contains the word
    (walking the JSON tree of every row doubled the time of a scan)."""
    word = word.lower()
    if dialect == "postgresql":
        lower = "lower"
        values = Sql.compose(f"EXISTS (SELECT 1 FROM jsonb_path_query(spans.{column}, 'strict $.**') AS v(j) "
                             "WHERE jsonb_typeof(v.j) = 'string' AND {})",
                             like_contains("lower(jsonb_build_array(v.j) ->> 0)", word))
    else:
        lower = SQLITE_LOWER
        values = Sql.compose(f"EXISTS (SELECT 1 FROM json_tree(spans.{column}) AS v WHERE v.type = 'text' AND {{}})",
                             like_contains(f"{SQLITE_LOWER}(v.atom)", word))
    if _JSON_ESCAPED.search(word):
        return values
    return Sql.compose("{} AND {}", like_contains(f"{lower}(CAST(spans.{column} AS TEXT))", word), values)


def search_clause(dialect: str, indexed: bool, text: str) -> Sql:
    """A WHERE condition on ``spans`` matching ``text`` in the string values of the content
    columns, through the full-text index when the store has one (``indexed``:
    :data:`FTS_PRESENT`).  On SQLite it needs :func:`register_sqlite_lower`."""
    if not text.split():
        return Sql("1 = 0")
    values = all_of(any_of(_string_values_contain(dialect, c, word) for c in FTS_COLUMNS)
                    for word in text.split())
    if indexed:
        if dialect == "sqlite":
            if not _WORD.search(text):
                return Sql("1 = 0")
            # FTS5 indexes the JSON text, keys included: it finds the candidates, the values decide
            matches = Sql("spans.id IN (SELECT rowid FROM spans_fts WHERE spans_fts MATCH ?)", _fts5_query(text))
            return Sql.compose("{} AND {}", matches, values)
        return Sql("spans.content_tsv @@ plainto_tsquery('simple'::regconfig, ?)", text)
    return values


def search_spans(conn: sa.Connection, text: str, limit: int = 50) -> list[sa.Row]:
    """Newest spans whose content matches ``text``: (trace_id, span_id, name, model, start)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        register_sqlite_lower(conn.connection.driver_connection)
    query = Sql.compose("SELECT trace_id, span_id, name, model, start_time_unix_nano FROM spans "
                        "WHERE {} ORDER BY start_time_unix_nano DESC LIMIT {}",
                        search_clause(dialect, fts_enabled(conn), text), Sql("?", limit))
    return list(conn.exec_driver_sql(query.render(dialect), query.params))
