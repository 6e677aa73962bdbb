"""Many-row INSERTs into SQLite as a few multi-row statements instead of ``executemany``.

``executemany`` steps the statement once per row, and Python's sqlite3 releases the GIL around
every step, so every row ends by re-acquiring the GIL.  While another thread runs Python (the
receivers decoding requests, the pipeline preparing its next batch) each re-acquisition can wait
up to the interpreter's switch interval (5 ms): measured here, 2,048-row inserts took 3-40x
longer beside one busy thread.  A multi-row ``INSERT ... VALUES (...), (...)`` is bound in Python
once (the GIL held, ~8 us per 40-column row) and then SQLite works on all its rows without the
GIL, so the write overlaps with the rest of the process instead of convoying with it.  Alone it
costs the same CPU as ``executemany``.

Rows are cut into chunks of fixed sizes (512, 64, 8, then single rows) so that only a handful of
distinct statements exist and sqlite3's statement cache prepares each one once.

NULLs are bound as a float NaN, which SQLite stores as NULL whatever the column (it has no NaN):
sqlite3 binds int, float, str and bytearray directly but sends every other value, ``None``
included, through its adapter protocol, which for ``None`` ends in an AttributeError created and
cleared inside the C code: ~1 us per NULL with the GIL held.  A span row has ~17 NULL columns on
average (a tool span has no tokens, no messages...), so that was ~17 us per span, more than
binding everything else; the substitution costs ~1.5 us per row.
"""

from __future__ import annotations

import sqlite3

__all__ = ["insert_rows", "multi_row_sql"]

CHUNKS = (512, 64, 8, 1)
_NULL = float("nan")  # binds as NULL without the adapter protocol (see above)

_SQL: dict[tuple[str, int], str] = {}


def multi_row_sql(sql: str, n: int) -> str:
    """A one-row ``INSERT ... VALUES (?, ...) [ON CONFLICT ...]`` with ``n`` rows of placeholders."""
    key = (sql, n)
    text = _SQL.get(key)
    if text is None:
        head, rest = sql.split(" VALUES ", 1)
        group = rest[:rest.index(")") + 1]
        if len(_SQL) > 256:  # only a few statements exist; guard against unbounded growth anyway
            _SQL.clear()
        text = _SQL[key] = f"{head} VALUES {', '.join([group] * n)}{rest[len(group):]}"
    return text


def _variable_limit(conn: sqlite3.Connection) -> int:
    try:
        return conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except (AttributeError, sqlite3.Error):  # not a plain sqlite3 connection
        return 999  # the historical default


def insert_rows(cur, sql: str, rows: list[tuple]) -> int:
    """Run the one-row INSERT ``sql`` (on a sqlite3 cursor or connection) for every row of
    ``rows`` (all of one width); returns the number of rows changed (inserted or updated)."""
    if not rows:
        return 0
    conn = cur.connection if isinstance(cur, sqlite3.Cursor) else cur
    width = len(rows[0])
    limit = _variable_limit(conn)
    changed = 0
    i, total = 0, len(rows)
    for n in CHUNKS:
        if n * width > limit:
            continue
        if n == 1:
            break
        if total - i >= n:
            text = multi_row_sql(sql, n)
            while total - i >= n:
                params = [_NULL if v is None else v for row in rows[i:i + n] for v in row]
                changed += cur.execute(text, params).rowcount
                i += n
    if i < total:
        changed += cur.executemany(sql, [tuple([_NULL if v is None else v for v in row])
                                         for row in rows[i:]]).rowcount
    return changed
