"""The scan behind ``stats`` on SQLite: a window's GenAI calls as sorted values per group, with the
window split by time between worker processes.

Why processes: SQLite has no ordered-set aggregates, so exact percentiles need every value in
Python, and handing a value from SQLite to Python costs ~0.3 us with the GIL held (a 30-day
window of a 1M-span store is 130k calls x 6 values).  Threads would queue on one GIL; each worker
process scans one time slice, sorts its slice's values and returns them pickled, and the parent
merges the sorted runs (``sorted`` over concatenated runs is a linear merge in timsort).

A worker is ``python -I -S`` running only this module (the standard library: sqlite3, pickle), so
it starts in ~25 ms without SQLAlchemy; it opens the database read-only (``mode=ro``,
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
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["Buckets", "ScanError", "bucket_values", "merge", "scan", "worker_count",
           "PARALLEL_MIN_ROWS", "READER_PRAGMAS"]

Buckets = dict[tuple, tuple[int, list[list]]]
"""Key columns of a row -> (its number of rows, the sorted non-NULL values of each value column)."""

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

_is_value = partial(operator.is_not, None)


class ScanError(Exception):
    """A scan worker failed (its last line of stderr says why)."""
_ROOT = str(Path(__file__).resolve().parent.parent.parent)  # the directory holding ``collector``


def worker_count(rows: int) -> int:
    """How many processes should scan ``rows`` rows: one per core, one when small."""
    return 1 if rows < PARALLEL_MIN_ROWS else max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def bucket_values(rows: Iterable[tuple], nkeys: int) -> Buckets:
    """Group rows by their first ``nkeys`` columns; sort each group's other columns."""
    grouped: dict[tuple, list[tuple]] = {}
    for row in rows:
        key = row[:nkeys]
        group = grouped.get(key)
        if group is None:
            grouped[key] = [row]
        else:
            group.append(row)
    return {key: (len(group), [sorted(filter(_is_value, column)) for column in list(zip(*group))[nkeys:]])
            for key, group in grouped.items()}


def merge(parts: Sequence[Buckets]) -> Buckets:
    """One :data:`Buckets` from several (slices of one window): counts add, sorted runs merge."""
    if len(parts) == 1:
        return parts[0]
    out: dict[tuple, tuple[int, list[list]]] = {}
    for part in parts:
        for key, (count, columns) in part.items():
            have = out.get(key)
            out[key] = (count, columns) if have is None else (
                have[0] + count, [sorted(a + b) for a, b in zip(have[1], columns)])
    return out


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    for pragma in READER_PRAGMAS:
        conn.execute(pragma)
    return conn


def _scan_one(path: str, sql: str, params: Sequence[Any], nkeys: int) -> Buckets:
    conn = _connect(path)
    try:
        return bucket_values(conn.execute(sql, params).fetchall(), nkeys)
    finally:
        conn.close()


def scan(path: str, tasks: Sequence[tuple[str, Sequence[Any]]], nkeys: int) -> Buckets:
    """Run each ``(sql, params)`` of ``tasks`` (disjoint slices of one window) in a worker
    process of its own and merge what they found."""
    workers = [subprocess.Popen(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path.insert(0, {_ROOT!r}); from collector.query.scan import _worker; _worker()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in tasks]
    try:
        for worker, (sql, params) in zip(workers, tasks):
            assert worker.stdin is not None
            worker.stdin.write(pickle.dumps((path, sql, list(params), nkeys)))
            worker.stdin.close()
        parts = []
        for worker in workers:
            assert worker.stdout is not None and worker.stderr is not None
            out = worker.stdout.read()   # stderr is written only on failure, and little
            err = worker.stderr.read()
            if worker.wait() != 0:
                reason = err.decode(errors="replace").strip().splitlines()
                raise ScanError(f"scan worker failed: {reason[-1] if reason else f'exit code {worker.returncode}'}")
            parts.append(pickle.loads(out))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return merge(parts)


def _worker() -> None:
    """Worker entry point: a pickled (path, sql, params, nkeys) on stdin, pickled Buckets out."""
    path, sql, params, nkeys = pickle.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(pickle.dumps(_scan_one(path, sql, params, nkeys), pickle.HIGHEST_PROTOCOL))
