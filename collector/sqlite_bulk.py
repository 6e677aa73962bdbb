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
"""

from __future__ import annotations

import sqlite3
from itertools import chain

__all__ = ["insert_rows", "multi_row_sql"]

CHUNKS = (512, 64, 8, 1)

_SQL: dict[tuple[str, int], str] = {}
_LIMITS: dict[int, int] = {}


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
    limit = _LIMITS.get(id(conn))
    if limit is None:
        try:
            limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except (AttributeError, sqlite3.Error):
            limit = 999  # the historical default
        if len(_LIMITS) > 256:
            _LIMITS.clear()
        _LIMITS[id(conn)] = limit
    return limit


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
                changed += cur.execute(text, list(chain.from_iterable(rows[i:i + n]))).rowcount
                i += n
    if i < total:
        changed += cur.executemany(sql, rows[i:]).rowcount
    return changed
