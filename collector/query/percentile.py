"""Exact percentiles, defined once: nearest rank, i.e. Postgres ``percentile_disc``.

The ``p`` percentile of ``n`` values is the value at 1-based rank ``ceil(p * n)`` of the sorted
non-NULL values.  It is always an observed value (no interpolation), so "p95 latency 2.31 s" means
some call really took 2.31 s, and the rank is computed with the same double arithmetic Postgres
uses, so SQLite and Postgres return the same bits.

Postgres has it built in (``percentile_disc(ARRAY[...]) WITHIN GROUP (ORDER BY x)``).  SQLite has
no ordered-set aggregates, so on SQLite the query CLI sorts the values in Python and picks the
rank with :func:`nearest_rank` (see :mod:`collector.query.stats`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import sqlalchemy as sa

__all__ = ["rank", "nearest_rank", "percentile_disc_columns"]


def rank(p: float, n: int) -> int:
    """1-based rank of the ``p`` percentile among ``n`` sorted values (``n >= 1``)."""
    return min(n, max(1, math.ceil(p * n)))


def nearest_rank(sorted_values: Sequence[Any], p: float) -> Any:
    """The ``p`` percentile of already sorted values; ``None`` when there are none."""
    if not sorted_values:
        return None
    return sorted_values[rank(p, len(sorted_values)) - 1]


Spec = tuple[sa.ColumnElement, Sequence[float]]
"""A column and the percentiles wanted of it."""


def percentile_disc_columns(specs: Sequence[Spec]) -> list[sa.ColumnElement]:
    """Postgres aggregates giving, per group, an array of the wanted percentiles of each column
    (NULL when a group has no value of it)."""
    from sqlalchemy.dialects import postgresql

    # literal fractions: Postgres must see identical expressions in SELECT and GROUP BY
    return [sa.func.percentile_disc(postgresql.array(
                [sa.literal_column(repr(float(p))) for p in which])).within_group(column)
            for column, which in specs]
