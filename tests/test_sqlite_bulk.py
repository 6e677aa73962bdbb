"""collector.sqlite_bulk: multi-row INSERTs give the same rows, NULLs and counts as executemany."""

from __future__ import annotations

import sqlite3

import pytest

from collector.sqlite_bulk import insert_rows

SQL = "INSERT INTO t (k, s, i, r, x) VALUES (?, ?, ?, ?, ?) ON CONFLICT (k) DO NOTHING"


def _table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, s TEXT, i INTEGER, r REAL, x)")
    return conn


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 511, 512, 513, 1100])
def test_every_row_is_inserted_with_its_values_and_nulls(n):
    rows = [(k, None if k % 3 == 0 else f"s{k}", None if k % 4 == 0 else k * 10,
             None if k % 5 == 0 else k / 7, None if k % 2 else "nan") for k in range(n)]
    conn = _table()
    assert insert_rows(conn.cursor(), SQL, rows) == n
    stored = conn.execute("SELECT k, s, i, r, x FROM t ORDER BY k").fetchall()
    assert stored == rows
    types = conn.execute("SELECT typeof(s), typeof(i), typeof(r), typeof(x) FROM t ORDER BY k").fetchall()
    for row, kinds in zip(rows, types):
        assert [v is None for v in row[1:]] == [kind == "null" for kind in kinds]


def test_conflicts_are_not_counted_and_upserts_are():
    conn = _table()
    insert_rows(conn, SQL, [(k, "a", 1, 1.0, None) for k in range(600)])
    assert insert_rows(conn, SQL, [(k, "b", 2, 2.0, None) for k in range(550, 700)]) == 100
    upsert = SQL.replace("DO NOTHING", "DO UPDATE SET s = excluded.s, i = COALESCE(excluded.i, t.i)")
    assert insert_rows(conn, upsert, [(k, "c", None, 3.0, None) for k in range(0, 520)]) == 520
    assert conn.execute("SELECT s, i FROM t WHERE k = 5").fetchone() == ("c", 1)
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 700


def test_a_low_variable_limit_falls_back_to_smaller_statements():
    conn = _table()
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)  # 10 rows of 5 at most
    rows = [(k, "s", k, 0.5, None) for k in range(100)]
    assert insert_rows(conn.cursor(), SQL, rows) == 100
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 100
