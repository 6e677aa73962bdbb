"""Exact percentiles, defined once: nearest rank, i.e. Postgres ``percentile_disc``.

The ``p`` percentile of ``n`` values is the value at 1-based rank ``ceil(p * n)`` of the sorted
non-NULL values.  It is always an observed value (no interpolation), so "p95 latency 2.31 s" means
some call really took 2.31 s, and the rank is computed with the same double arithmetic Postgres
uses, so SQLite and Postgres return the same bits.

Postgres has it built in (``percentile_disc(ARRAY[...]) WITHIN GROUP (ORDER BY x)``).  SQLite has
no ordered-set aggregates and its window functions sort the whole window once per metric (several
seconds on 500,000 rows here), so the query CLI registers :class:`SqlitePercentiles` as the
aggregate ``gc_percentiles(x, '[0.5, 0.95]')`` on every SQLite connection it opens: the same
``GROUP BY`` query then runs on both stores.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import sqlalchemy as sa

__all__ = ["rank", "nearest_rank", "SqlitePercentiles", "register_sqlite", "percentiles_expr",
           "decode"]


def rank(p: float, n: int) -> int:
    """1-based rank of the ``p`` percentile among ``n`` sorted values (``n >= 1``)."""
    return min(n, max(1, math.ceil(p * n)))


def nearest_rank(sorted_values: Sequence[Any], p: float) -> Any:
    """The ``p`` percentile of already sorted values; ``None`` when there are none."""
    if not sorted_values:
        return None
    return sorted_values[rank(p, len(sorted_values)) - 1]


class SqlitePercentiles:
    """SQLite aggregate ``gc_percentiles(value, fractions_json)`` -> JSON array of percentiles."""

    __slots__ = ("values", "fractions")

    def __init__(self) -> None:
        self.values: list[float] = []
        self.fractions = "[]"

    def step(self, value: Any, fractions: str) -> None:
        if value is not None:
            self.values.append(value)
        self.fractions = fractions

    def finalize(self) -> str | None:
        if not self.values:
            return None
        self.values.sort()
        return json.dumps([nearest_rank(self.values, p) for p in json.loads(self.fractions)])


def register_sqlite(dbapi_connection: Any) -> None:
    dbapi_connection.create_aggregate("gc_percentiles", 2, SqlitePercentiles)


def percentiles_expr(dialect: str, column: sa.ColumnElement, which: Sequence[float]) -> sa.ColumnElement:
    """An aggregate giving the ``which`` percentiles of ``column`` per group, on either dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        # literal fractions: Postgres must see identical expressions in SELECT and GROUP BY
        fractions = postgresql.array([sa.literal_column(repr(float(p))) for p in which])
        return sa.func.percentile_disc(fractions).within_group(column)
    return sa.func.gc_percentiles(column, json.dumps(list(which)))


def decode(value: Any, count: int) -> list:
    """The aggregate's result as a list of ``count`` values (``None`` for an empty group)."""
    if value is None:
        return [None] * count
    return json.loads(value) if isinstance(value, str) else list(value)
