"""The scan behind ``stats`` on SQLite: one pass over a window's GenAI calls that groups them in
Python several ways at once, with the window split by time between worker processes.

Why Python: SQLite has no ordered-set aggregates, so exact percentiles need every value sorted
outside it; and once the values are here, counts and sums per group cost less in Python (C-level
``sum`` over a column) than a second ``GROUP BY``, whose sort of 130k rows took longer than
fetching them.  Why processes: handing a value from SQLite to Python costs ~0.3 us with the GIL
held (a 30-day window of a 1M-span store is 130k calls x 11 values), so threads would queue on
one GIL; each worker process scans one time slice and returns its groups pickled, and the parent
merges them (counts and sums add; sorted runs merge, which timsort does in linear time).

A worker is ``python -I -S`` running only this module (the standard library: sqlite3, pickle), so
it starts in ~35 ms without SQLAlchemy; it opens the database read-only (``mode=ro``,
``query_only``).  Small windows are scanned in the calling process, where a worker would cost
more than it saves; a worker that fails is reported, never silently replaced.
"""

from __future__ import annotations

import operator
import os
import pickle
import sqlite3
import subprocess
import sys
from array import array
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

__all__ = ["Grouping", "Group", "ScanError", "group_rows", "merge", "scan", "worker_count",
           "PARALLEL_MIN_ROWS", "READER_PRAGMAS"]

PARALLEL_MIN_ROWS = 20_000
"""Below this many rows one in-process scan is faster than starting workers."""

MAX_WORKERS = 4
READER_PRAGMAS = (
    "PRAGMA query_only = 1",            # a reader must never write, whatever SQL runs
    "PRAGMA cache_size = -65536",       # 64 MiB: stats scan many pages once
    "PRAGMA mmap_size = 1073741824",
    "PRAGMA busy_timeout = 5000",       # the collector may be writing right now
)
"""Set on every SQLite connection the query CLI opens."""

_ROOT = str(Path(__file__).resolve().parent.parent.parent)  # the directory holding ``collector``
_is_value = partial(operator.is_not, None)


class ScanError(Exception):
    """A scan worker failed (its last line of stderr says why)."""


@dataclass(frozen=True)
class Grouping:
    """One way to group the scanned rows: by the columns ``key``; per group, the sorted non-NULL
    values of the columns ``sort`` and the sums (NULLs skipped, 0 when none) of ``add``."""

    key: tuple[int, ...]
    sort: tuple[int, ...] = ()
    add: tuple[int, ...] = ()


Group = tuple[int, list[list], list]
"""(rows, one sorted list per ``sort`` column, one sum per ``add`` column)."""


def worker_count(rows: int) -> int:
    """How many processes should scan ``rows`` rows: one per core, one when small."""
    return 1 if rows < PARALLEL_MIN_ROWS else max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def group_rows(rows: Sequence[tuple], groupings: Sequence[Grouping]) -> list[dict[tuple, Group]]:
    """Every grouping of ``rows``, in the order given."""
    return [_group(rows, g) for g in groupings]


def _group(rows: Sequence[tuple], g: Grouping) -> dict[tuple, Group]:
    key_of = operator.itemgetter(*g.key)  # a value for one key column, a tuple for several
    grouped: defaultdict[Any, list[tuple]] = defaultdict(list)
    for key, row in zip(map(key_of, rows), rows):  # the only per-row Python: ~0.15 us
        grouped[key].append(row)
    sort = [operator.itemgetter(i) for i in g.sort]
    add = [operator.itemgetter(i) for i in g.add]
    out = {}
    for key, members in grouped.items():
        out[key if len(g.key) > 1 else (key,)] = (
            len(members), [sorted(filter(_is_value, map(column, members))) for column in sort],
            [sum(filter(_is_value, map(column, members))) for column in add])
    return out


def merge(parts: Sequence[list[dict[tuple, Group]]]) -> list[dict[tuple, Group]]:
    """The groupings of a whole window from those of its slices."""
    if len(parts) == 1:
        return parts[0]
    merged: list[dict[tuple, Group]] = [{} for _ in parts[0]]
    for part in parts:
        for out, groups in zip(merged, part):
            for key, group in groups.items():
                have = out.get(key)
                out[key] = group if have is None else (
                    have[0] + group[0], [sorted(a + b) for a, b in zip(have[1], group[1])],
                    [a + b for a, b in zip(have[2], group[2])])
    return merged


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    for pragma in READER_PRAGMAS:
        conn.execute(pragma)
    return conn


def _scan_one(path: str, sql: str, params: Sequence[Any],
              groupings: Sequence[Grouping]) -> list[dict[tuple, Group]]:
    conn = _connect(path)
    try:
        return group_rows(conn.execute(sql, params).fetchall(), groupings)
    finally:
        conn.close()


def scan(path: str, tasks: Sequence[tuple[str, Sequence[Any]]],
         groupings: Sequence[Grouping]) -> list[dict[tuple, Group]]:
    """Run each ``(sql, params)`` of ``tasks`` (disjoint slices of one window) in a worker
    process of its own, group what each found, and merge."""
    workers = [subprocess.Popen(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path.insert(0, {_ROOT!r}); from collector.query.scan import _worker; _worker()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in tasks]
    try:
        for worker, (sql, params) in zip(workers, tasks):
            assert worker.stdin is not None
            worker.stdin.write(pickle.dumps((path, sql, list(params), list(groupings))))
            worker.stdin.close()
        parts = []
        for worker in workers:
            assert worker.stdout is not None and worker.stderr is not None
            out = worker.stdout.read()   # stderr is written only on failure, and little
            err = worker.stderr.read()
            if worker.wait() != 0:
                reason = err.decode(errors="replace").strip().splitlines()
                raise ScanError(f"scan worker failed: {reason[-1] if reason else f'exit code {worker.returncode}'}")
            parts.append([{key: (count, [run.tolist() for run in runs], sums)
                           for key, (count, runs, sums) in groups.items()}
                          for groups in pickle.loads(out)])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return merge(parts)


def _worker() -> None:
    """Worker entry point: a pickled (path, sql, params, groupings) on stdin, its groups out,
    the sorted runs as arrays of doubles (pickled as raw bytes: 10x faster to load than lists)."""
    path, sql, params, groupings = pickle.loads(sys.stdin.buffer.read())
    found = [{key: (count, [array("d", run) for run in runs], sums) for key, (count, runs, sums) in groups.items()}
             for groups in _scan_one(path, sql, params, groupings)]
    sys.stdout.buffer.write(pickle.dumps(found, pickle.HIGHEST_PROTOCOL))
