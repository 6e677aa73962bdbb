"""Exact percentiles, defined once: nearest rank, i.e. Postgres ``percentile_disc``.

The ``p`` percentile of ``n`` values is the value at 1-based rank ``ceil(p * n)`` of the sorted
non-NULL values.  It is always an observed value (no interpolation), so "p95 latency 2.31 s" means
some call really took 2.31 s, and the rank is computed with the same double arithmetic Postgres
uses, so SQLite and Postgres return the same bits.

Postgres has it built in (``percentile_disc(ARRAY[...]) WITHIN GROUP (ORDER BY x)``).  SQLite has
no ordered-set aggregates and its window functions sort the whole window once per metric (several
seconds on 500,000 rows here), so the query CLI registers :class:`SqlitePercentiles` as the
aggregate ``gc_percentiles`` on every SQLite connection it opens: the same
``GROUP BY`` query then runs on both stores.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import sqlalchemy as sa

__all__ = ["rank", "nearest_rank", "SqlitePercentiles", "register_sqlite", "percentile_columns",
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
    """SQLite aggregate ``gc_percentiles(fractions_json, x1, x2, ...)``: for each column ``xi`` the
    percentiles listed in ``fractions_json[i]``, as a JSON array of arrays.

    One aggregate for all the metrics of a query because SQLite calls into Python once per row
    per aggregate: three metrics in one call cost a third of three calls.
    """

    __slots__ = ("values", "fractions")

    def __init__(self) -> None:
        self.values: list[list[float]] | None = None
        self.fractions = "[]"

    def step(self, fractions: str, *values: Any) -> None:
        columns = self.values
        if columns is None:
            columns = self.values = [[] for _ in values]
            self.fractions = fractions
        for column, value in zip(columns, values):
            if value is not None:
                column.append(value)

    def finalize(self) -> str:
        out = []
        for column, which in zip(self.values or [], json.loads(self.fractions)):
            column.sort()
            out.append([nearest_rank(column, p) for p in which])
        return json.dumps(out)


def register_sqlite(dbapi_connection: Any) -> None:
    dbapi_connection.create_aggregate("gc_percentiles", -1, SqlitePercentiles)


Spec = tuple[sa.ColumnElement, Sequence[float]]
"""A column and the percentiles wanted of it."""


def percentile_columns(dialect: str, specs: Sequence[Spec]) -> list[sa.ColumnElement]:
    """Aggregates giving the wanted percentiles of each column per group (decode with
    :func:`decode`): ``percentile_disc`` per column on Postgres, one ``gc_percentiles`` on SQLite."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        # literal fractions: Postgres must see identical expressions in SELECT and GROUP BY
        return [sa.func.percentile_disc(postgresql.array(
                    [sa.literal_column(repr(float(p))) for p in which])).within_group(column)
                for column, which in specs]
    fractions = json.dumps([list(which) for _, which in specs])
    return [sa.func.gc_percentiles(fractions, *(column for column, _ in specs))]


def decode(values: Sequence[Any], specs: Sequence[Spec]) -> list[list]:
    """The result columns of :func:`percentile_columns` as one list of percentiles per spec
    (``None`` where a group has no value)."""
    if values and isinstance(values[0], str):  # SQLite: one JSON array of arrays
        lists = json.loads(values[0])
    else:                                       # Postgres: one array per column
        lists = list(values)
    lists += [None] * (len(specs) - len(lists))
    return [list(lst) if lst else [None] * len(which) for lst, (_, which) in zip(lists, specs)]
