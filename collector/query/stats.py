"""``stats``: volume, errors, tokens, cost and exact latency / TTFT / throughput percentiles per
group, the top users by spend and the cost per call by model.

Percentiles are exact on both stores, by one definition (nearest rank, Postgres
``percentile_disc``): see :mod:`collector.query.percentile`.  Both stores read the GenAI calls
from the covering index ``ix_spans_calls`` (time-ordered, every aggregated column in it), so a
``--since`` window never touches the wide span rows.  Three queries run at once, each on its own
connection:

- Postgres: groups, cost per call by model and top users, ``GROUP BY`` queries with
  ``percentile_disc``; the server works on them in parallel;
- SQLite has no ordered-set aggregates, and an aggregate written in Python costs a call per row
  (0.63 s for the groups of a 30-day window of 1M spans; window functions 0.6 s per metric).  So
  the sums and the top users are plain ``GROUP BY`` queries, which SQLite runs in C in threads
  that release the GIL, while one scan fetches the values and sorts each group's in Python.
  (Worker processes scanning time slices were tried: on this project's 2-vCPU machine two
  processes ran only 1.4x as fast as one and cold interpreters fetched 30% slower, so the split
  scan was no faster than these threads, alternating runs of both, and is not worth a process.)
"""

from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from functools import partial
from typing import Any, Callable, Sequence

from collector.query import feedback
from collector.query.filters import ATTR_PREFIX, Filters, attribute_value, genai_call
from collector.query.percentile import nearest_rank, percentile_disc
from collector.query.queries import iso
from collector.query.store import Connection, Store
from exporters.storage.sqltext import Sql, all_of, join

__all__ = ["stats", "add_feedback", "PERCENTILES", "group_expression", "grouped", "group_record", "group_value", "group_order",
           "per_call_record", "user_record", "sorted_by_key"]
"""The record builders are shared with :mod:`collector.query.daystats`, which answers ``stats``
from kept days: one definition of every field."""

PERCENTILES = (0.5, 0.95, 0.99)
COST_PERCENTILES = (0.5, 0.95)
NS_PER_DAY = 86_400_000_000_000
NS_PER_HOUR = 3_600_000_000_000

METRICS = {  # metric -> (column, percentiles reported in the groups, unit suffix of the field)
    "latency": ("spans.duration_ms", PERCENTILES, "_ms"),
    "ttft": ("spans.ttft_ms", (0.5, 0.95), "_ms"),
    "output_tokens_per_second": ("spans.output_tokens_per_second", (0.5,), ""),
}

GROUP_COLUMNS = {
    "model": "spans.model",
    "provider": "spans.provider",
    "service": "spans.service_name",
    "user": "spans.user_id",
    "session": "spans.session_id",
    # Days and hours are integer buckets of the UTC epoch: the same integer division on both
    # dialects, no timezone or date-function differences.  Literal constants, not bound
    # parameters: Postgres must see the SELECT and the GROUP BY expressions as the same.
    "day": f"spans.start_time_unix_nano / {NS_PER_DAY}",
    "hour": f"spans.start_time_unix_nano / {NS_PER_HOUR}",
}
"""``--by`` key -> SQL expression (``attr:KEY`` keys: :func:`group_expression`)."""


def group_expression(key: str, dialect: str) -> Sql:
    """The SQL a grouping key reads: a column, a time bucket, or a span/resource attribute."""
    if key.startswith(ATTR_PREFIX):
        return attribute_value(dialect, key[len(ATTR_PREFIX):])
    return Sql(GROUP_COLUMNS[key])


def group_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == "day":
        return iso(int(value) * NS_PER_DAY)[:10]
    if key == "hour":
        return iso(int(value) * NS_PER_HOUR)[:13] + ":00Z"
    return value


def group_record(group: dict, requests: int, errors: int, input_tokens: int, output_tokens: int,
                  cost: float, pct: dict[str, Sequence[float | None]]) -> dict[str, Any]:
    """One row of ``groups`` (documented field names)."""
    record = {**group, "requests": requests, "errors": errors,
              "error_rate": errors / requests if requests else 0.0,
              "input_tokens": int(input_tokens or 0), "output_tokens": int(output_tokens or 0),
              "cost_usd": float(cost or 0.0)}
    for metric, (_, which, unit) in METRICS.items():
        for p, value in zip(which, pct[metric]):
            record[f"{metric}_p{int(p * 100)}{unit}"] = value
    return record


def per_call_record(model: str, requests: int, cost: float, p50: float | None,
                     p95: float | None) -> dict[str, Any]:
    return {"model": model, "requests": requests, "cost_usd": float(cost or 0.0),
            "cost_per_call_avg": float(cost or 0.0) / requests, "cost_per_call_p50": p50,
            "cost_per_call_p95": p95}


def user_record(user: str, requests: int, cost: float, input_tokens: int,
                 output_tokens: int) -> dict[str, Any]:
    return {"user_id": user, "requests": requests, "cost_usd": float(cost or 0.0),
            "input_tokens": int(input_tokens or 0), "output_tokens": int(output_tokens or 0)}


# -- Postgres: percentile_disc ---------------------------------------------------------------------

SUMS = ("count(*), sum(CASE WHEN spans.status_code = 2 THEN 1 ELSE 0 END), sum(spans.input_tokens), "
        "sum(spans.output_tokens), sum(spans.cost_usd)")
"""Per group: requests, errors, input tokens, output tokens, cost (what group_record takes)."""


def grouped(select: Sequence[Sql | str], where: list[Sql], nkeys: int) -> Sql:
    """``SELECT select FROM spans WHERE ... GROUP BY`` the first ``nkeys`` columns, by position:
    a key holding bound parameters (``attr:KEY``) is then one expression to Postgres, which
    would see ``$1`` in the SELECT and ``$5`` in the GROUP BY as two."""
    group_by = f" GROUP BY {', '.join(str(i) for i in range(1, nkeys + 1))}" if nkeys else ""
    return Sql.compose("SELECT {} FROM spans WHERE {}" + group_by, join(select, ", "), all_of(where))


def _groups(conn: Connection, where: list[Sql], by: Sequence[str]) -> list[dict]:
    keys = [group_expression(k, conn.dialect) for k in by]
    percentiles = [percentile_disc(col, which) for col, which, _ in METRICS.values()]
    query = grouped([*keys, SUMS, *percentiles], where, len(keys))
    width = len(by)
    out = []
    for row in conn.execute(query).fetchall():
        requests, errors, tin, tout, cost = row[width:width + 5]
        pct = {metric: _filled(values, which)
               for (metric, (_, which, _)), values in zip(METRICS.items(), row[width + 5:])}
        out.append(group_record({k: group_value(k, v) for k, v in zip(by, row[:width])},
                                 requests, errors, tin, tout, cost, pct))
    return out


def _cost_per_call(conn: Connection, where: list[Sql]) -> list[dict]:
    query = grouped([f"spans.model, count(*), sum(spans.cost_usd), "
                      f"{percentile_disc('spans.cost_usd', COST_PERCENTILES)}"], where, 1)
    return [per_call_record(row[0], row[1], row[2], *_filled(row[3], COST_PERCENTILES))
            for row in conn.execute(query).fetchall()]


def _filled(values: Sequence[Any] | None, which: Sequence[float]) -> list:
    """percentile_disc's array, or NULLs when a group has no value of that metric."""
    return list(values) if values else [None] * len(which)


# -- SQLite: sums in SQL, percentiles from one scan grouped in Python -----------------------------

_is_value = partial(operator.is_not, None)


def _sqlite_stats(store: Store, where: list[Sql], by: Sequence[str],
                  top: int) -> tuple[list[dict], list[dict], list[dict]]:
    """The plain sums and the top users are GROUP BYs that SQLite runs in C, in threads that
    release the GIL, while this thread sorts each group's values in Python."""
    (pct, per_call), sums, users = _concurrently(store, [
        (_value_scan, (where, by)), (_group_sums, (where, by)), (_top_users, (where, top))])
    # The queries read the store one after the other: a group that only appeared in between
    # (the collector writing) has no percentiles yet.
    missing = {metric: [None] * len(which) for metric, (_, which, _) in METRICS.items()}
    groups = [group_record({k: group_value(k, v) for k, v in zip(by, key)}, *totals, pct.get(key, missing))
              for key, totals in sums.items()]
    return groups, per_call, users


def _group_sums(conn: Connection, where: list[Sql], by: Sequence[str]) -> dict[tuple, tuple]:
    """Group key -> the :data:`SUMS`."""
    keys = [group_expression(k, conn.dialect) for k in by]
    width = len(by)
    return {tuple(row[:width]): tuple(row[width:])
            for row in conn.execute(grouped([*keys, SUMS], where, width)).fetchall()}


def _value_scan(conn: Connection, where: list[Sql],
                by: Sequence[str]) -> tuple[dict[tuple, dict[str, list]], list[dict]]:
    """Percentiles per group and the cost per call by model, from the sorted values of every
    (group, model) bucket of one scan."""
    keys = [group_expression(k, conn.dialect) for k in by] + ([] if "model" in by else [Sql("spans.model")])
    values = ["spans.cost_usd", *(col for col, _, _ in METRICS.values())]
    buckets = sorted_by_key(conn.execute(grouped([*keys, *values], where, 0)).fetchall(), len(keys))
    width = len(by)
    i_model = list(by).index("model") if "model" in by else width
    runs: dict[tuple, list[list]] = {}   # group key -> per metric, the sorted runs of its buckets
    models: dict[str, list] = {}         # model -> [calls, sorted cost runs]
    for key, (calls, (costs, *metrics)) in buckets.items():
        for acc, run in zip(runs.setdefault(key[:width], [[] for _ in metrics]), metrics):
            acc.append(run)
        m = models.setdefault(key[i_model], [0, []])
        m[0] += calls
        m[1].append(costs)
    pct = {key: {metric: _ranks(metric_runs, which)
                 for (metric, (_, which, _)), metric_runs in zip(METRICS.items(), lists)}
           for key, lists in runs.items()}
    per_call = []
    for model, (calls, cost_runs) in models.items():
        costs = _merged(cost_runs)
        per_call.append(per_call_record(model, calls, sum(costs), *_ranks([costs], COST_PERCENTILES)))
    return pct, per_call


def sorted_by_key(rows: Sequence[tuple], nkeys: int) -> dict[tuple, tuple[int, list[list]]]:
    """Rows grouped by their first ``nkeys`` columns: key -> (rows, the sorted non-NULL values
    of each other column)."""
    key_of = operator.itemgetter(*range(nkeys))  # a value for one key column, a tuple for several
    grouped: defaultdict[Any, list[tuple]] = defaultdict(list)
    for key, row in zip(map(key_of, rows), rows):  # the only per-row Python: ~0.15 us
        grouped[key].append(row)
    return {key if nkeys > 1 else (key,): (len(members), [sorted(filter(_is_value, column))
                                                          for column in list(zip(*members))[nkeys:]])
            for key, members in grouped.items()}


def _merged(runs: list[list]) -> list:
    """One sorted list from sorted runs (timsort merges runs, it does not sort them again)."""
    return runs[0] if len(runs) == 1 else sorted(itertools.chain.from_iterable(runs))


def _ranks(runs: list[list], which: Sequence[float]) -> list:
    ordered = _merged(runs)
    return [nearest_rank(ordered, p) for p in which]


def _top_users(conn: Connection, where: list[Sql], top: int) -> list[dict]:
    # NULL users dropped in HAVING, not WHERE: a WHERE term would let SQLite pick the partial
    # user index (it delivers the GROUP BY order) and read every wide row (0.29 s -> 0.16 s).
    query = Sql.compose("SELECT spans.user_id, count(*), coalesce(sum(spans.cost_usd), 0.0) AS spend, "
                        "sum(spans.input_tokens), sum(spans.output_tokens) FROM spans WHERE {} "
                        "GROUP BY spans.user_id HAVING count(spans.user_id) > 0 "
                        "ORDER BY spend DESC, spans.user_id LIMIT {}", all_of(where), Sql("?", top))
    return [user_record(*row) for row in conn.execute(query).fetchall()]


# -- the command ----------------------------------------------------------------------------------

def group_order(by: Sequence[str]) -> Callable[[dict], tuple]:
    """Over time (``day`` / ``hour`` in ``--by``): key order, so a spike reads top to bottom;
    otherwise the busiest groups first."""
    def keys(g: dict) -> tuple:
        return tuple((g[k] is None, str(g[k])) for k in by)

    if "day" in by or "hour" in by:
        return keys
    return lambda g: (-g["requests"], keys(g))


def add_feedback(store: Store, f: Filters, by: Sequence[str], groups: list[dict]) -> None:
    """Give each group its ``feedback_count`` (scores about its calls, each counted once even
    when it is about a whole trace of several calls) and ``feedback_mean`` (of their values).

    Never kept by :mod:`collector.query.daystats`: feedback comes after the call, so a closed
    day's count changes.  The join is driven by ``scores`` (far fewer rows than calls)."""
    with store.connect() as conn:
        found: dict[tuple, tuple] = {}
        rows = feedback.score_rows(conn)
        if rows is not None:
            keys = [group_expression(k, conn.dialect) for k in by]
            names = ", ".join(f"g{i}" for i in range(len(by)))
            inner = Sql.compose("SELECT DISTINCT " + "".join(f"{{}} AS g{i}, " for i in range(len(by)))
                                + "scores.id AS score_id, scores.value AS score_value "
                                "FROM {} CROSS JOIN spans WHERE {} AND {}",
                                *keys, rows, feedback.about_span(), all_of([genai_call(), *f.span_clauses(conn)]))
            query = Sql.compose(f"SELECT {names}, count(*), avg(score_value) FROM ({{}}) AS scored "
                                f"GROUP BY {names}", inner)
            found = {tuple(group_value(k, v) for k, v in zip(by, row[:len(by)])): row[len(by):]
                     for row in conn.execute(query).fetchall()}
    for i, group in enumerate(groups):  # new dicts: daystats may keep the old ones
        count, mean = found.get(tuple(group[k] for k in by), (0, None))
        groups[i] = {**group, "feedback_count": count, "feedback_mean": float(mean) if mean is not None else None}


def stats(store: Store, f: Filters, by: Sequence[str], top: int) -> dict[str, Any]:
    """Counts GenAI calls: spans with a model (chat, completion, embeddings ...)."""
    with store.connect() as conn:
        where = [genai_call(), *f.span_clauses(conn)]
    if store.dialect == "postgresql":
        # three queries at once, each on its own connection: the server works on them in parallel
        groups, per_call, users = _concurrently(store, [
            (_groups, (where, by)), (_cost_per_call, (where,)), (_top_users, (where, top))])
    else:
        groups, per_call, users = _sqlite_stats(store, where, by, top)
    add_feedback(store, f, by, groups)
    groups.sort(key=group_order(by))
    per_call.sort(key=lambda r: (-r["cost_usd"], r["model"]))
    return {"by": list(by), "groups": groups, "top_users": users, "cost_per_call": per_call}


def _concurrently(store: Store, jobs: Sequence[tuple[Callable, tuple]]) -> list[Any]:
    """Run ``fn(conn, *args)`` for every job at once, each on its own pooled connection.

    When a job fails or the caller stops waiting (Ctrl-C), the statements still running are
    interrupted: the pool's exit would otherwise wait for every query to finish (7.6 s for
    ``--by session`` over the whole of a 1M-span SQLite store)."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    running: list[Connection] = []

    def run(fn: Callable, args: tuple) -> Any:
        with store.connect() as conn:
            running.append(conn)
            try:
                return fn(conn, *args)
            finally:
                running.remove(conn)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run, fn, args) for fn, args in jobs]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    raise future.exception()
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            for conn in list(running):
                conn.interrupt()
            raise
