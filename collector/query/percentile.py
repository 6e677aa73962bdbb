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

__all__ = ["rank", "nearest_rank", "percentile_disc"]


def rank(p: float, n: int) -> int:
    """1-based rank of the ``p`` percentile among ``n`` sorted values (``n >= 1``)."""
    return min(n, max(1, math.ceil(p * n)))


def nearest_rank(sorted_values: Sequence[Any], p: float) -> Any:
    """The ``p`` percentile of already sorted values; ``None`` when there are none."""
    if not sorted_values:
        return None
    return sorted_values[rank(p, len(sorted_values)) - 1]


def percentile_disc(column: str, which: Sequence[float]) -> str:
    """A Postgres aggregate giving, per group, the array of the wanted percentiles of ``column``
    (NULL when a group has no value of it)."""
    return (f"percentile_disc(ARRAY[{', '.join(repr(float(p)) for p in which)}]) "
            f"WITHIN GROUP (ORDER BY {column})")
