"""``stats``: volume, errors, tokens, cost and exact latency / TTFT / throughput percentiles per
group, the top users by spend and the cost per call by model.

Percentiles are exact on both stores, by one definition (nearest rank, Postgres
``percentile_disc``): see :mod:`collector.query.percentile`.  Both stores read the GenAI calls
from the covering index ``ix_spans_calls`` (time-ordered, every aggregated column in it), so a
``--since`` window never touches the wide span rows.  What differs is where the work is done:

- Postgres: ``percentile_disc`` in three ``GROUP BY`` queries (groups, cost per call by model, top
  users) that run at once, each on its own connection;
- SQLite has no ordered-set aggregates, and its Python aggregates cost a call per row (0.63 s for
  the groups of a 30-day window of 1M spans; window functions 0.6 s per metric).  One scan
  fetches the calls' keys and values instead and groups them in Python two ways, per (group,
  model) and per user, split between worker processes for a large window
  (:mod:`collector.query.scan`).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import sqlalchemy as sa

from collector.query import scan
from collector.query.filters import Filters, genai_call
from collector.query.percentile import nearest_rank, percentile_disc_columns
from collector.query.queries import iso
from collector.query.store import Store
from exporters.storage.schema import spans

__all__ = ["stats", "PERCENTILES"]

PERCENTILES = (0.5, 0.95, 0.99)
COST_PERCENTILES = (0.5, 0.95)
NS_PER_DAY = 86_400_000_000_000
NS_PER_HOUR = 3_600_000_000_000

METRICS = {  # metric -> (column, percentiles reported in the groups, unit suffix of the field)
    "latency": (spans.c.duration_ms, PERCENTILES, "_ms"),
    "ttft": (spans.c.ttft_ms, (0.5, 0.95), "_ms"),
    "output_tokens_per_second": (spans.c.output_tokens_per_second, (0.5,), ""),
}


def _group_columns() -> dict[str, sa.ColumnElement]:
    """``--by`` key -> SQL expression.  Days and hours are integer buckets of the UTC epoch: the
    same integer arithmetic on both dialects, no timezone or date-function differences."""
    start = spans.c.start_time_unix_nano
    return {
        "model": spans.c.model,
        "provider": spans.c.provider,
        "service": spans.c.service_name,
        "user": spans.c.user_id,
        "session": spans.c.session_id,
        # literal constants, not bound parameters: Postgres must see the SELECT and the GROUP BY
        # expressions as the same expression
        "day": start // sa.literal_column(str(NS_PER_DAY), sa.BigInteger),
        "hour": start // sa.literal_column(str(NS_PER_HOUR), sa.BigInteger),
    }


def _group_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == "day":
        return iso(int(value) * NS_PER_DAY)[:10]
    if key == "hour":
        return iso(int(value) * NS_PER_HOUR)[:13] + ":00Z"
    return value


def _group_record(group: dict, requests: int, errors: int, input_tokens: int, output_tokens: int,
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


def _per_call_record(model: str, requests: int, cost: float, p50: float | None,
                     p95: float | None) -> dict[str, Any]:
    return {"model": model, "requests": requests, "cost_usd": float(cost or 0.0),
            "cost_per_call_avg": float(cost or 0.0) / requests, "cost_per_call_p50": p50,
            "cost_per_call_p95": p95}


def _user_record(user: str, requests: int, cost: float, input_tokens: int,
                 output_tokens: int) -> dict[str, Any]:
    return {"user_id": user, "requests": requests, "cost_usd": float(cost or 0.0),
            "input_tokens": int(input_tokens or 0), "output_tokens": int(output_tokens or 0)}


# -- Postgres: percentile_disc ---------------------------------------------------------------------

def _groups(conn: sa.Connection, where: list, by: Sequence[str]) -> list[dict]:
    exprs = _group_columns()
    c = spans.c
    sums = [sa.func.count(), sa.func.sum(sa.case((c.status_code == 2, 1), else_=0)),
            sa.func.sum(c.input_tokens), sa.func.sum(c.output_tokens), sa.func.sum(c.cost_usd)]
    specs = [(col, which) for col, which, _ in METRICS.values()]
    query = (sa.select(*(exprs[k] for k in by), *sums, *percentile_disc_columns(specs))
             .where(*where).group_by(*(exprs[k] for k in by)))
    width = len(by)
    out = []
    for row in conn.execute(query):
        requests, errors, tin, tout, cost = row[width:width + 5]
        pct = {metric: _filled(values, which)
               for (metric, (_, which, _)), values in zip(METRICS.items(), row[width + 5:])}
        out.append(_group_record({k: _group_value(k, v) for k, v in zip(by, row[:width])},
                                 requests, errors, tin, tout, cost, pct))
    return out


def _cost_per_call(conn: sa.Connection, where: list) -> list[dict]:
    c = spans.c
    query = (sa.select(c.model, sa.func.count(), sa.func.sum(c.cost_usd),
                       *percentile_disc_columns([(c.cost_usd, COST_PERCENTILES)]))
             .where(*where).group_by(c.model))
    return [_per_call_record(row[0], row[1], row[2], *_filled(row[3], COST_PERCENTILES))
            for row in conn.execute(query)]


def _filled(values: Sequence[Any] | None, which: Sequence[float]) -> list:
    """percentile_disc's array, or NULLs when a group has no value of that metric."""
    return list(values) if values else [None] * len(which)


# -- SQLite: one scan, grouped in Python (collector.query.scan) -----------------------------------

def _sqlite_stats(conn: sa.Connection, where: list, by: Sequence[str],
                  top: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Groups, cost per call and top users from one scan: per (group, model) the sorted cost and
    metric values and the sums; per user the sums."""
    exprs = _group_columns()
    c = spans.c
    keys = [exprs[k] for k in by] + ([] if "model" in by else [c.model])
    k = len(keys)
    query = sa.select(*keys, c.user_id, c.status_code == 2, c.input_tokens, c.output_tokens, c.cost_usd,
                      *(col for col, _, _ in METRICS.values())).where(*where)
    cost = k + 4
    by_group_model = scan.Grouping(key=tuple(range(k)), sort=(cost, *range(cost + 1, cost + 1 + len(METRICS))),
                                   add=(k + 1, k + 2, k + 3, cost))
    by_user = scan.Grouping(key=(k,), add=(cost, k + 2, k + 3))
    buckets, users = _scan(conn, query, [by_group_model, by_user])
    width = len(by)
    i_model = list(by).index("model") if "model" in by else width
    groups: dict[tuple, list] = {}   # group key -> [calls, sums, per metric the sorted runs]
    models: dict[str, list] = {}     # model -> [calls, cost, sorted cost runs]
    for key, (calls, (costs, *metrics), sums) in buckets.items():
        g = groups.setdefault(key[:width], [0, [0, 0, 0, 0], [[] for _ in metrics]])
        g[0] += calls
        g[1] = [a + b for a, b in zip(g[1], sums)]
        for acc, run in zip(g[2], metrics):
            acc.append(run)
        m = models.setdefault(key[i_model], [0, 0.0, []])
        m[0] += calls
        m[1] += sums[3]
        m[2].append(costs)
    records = [_group_record({name: _group_value(name, v) for name, v in zip(by, key)}, calls, *sums,
                             {metric: _ranks(runs, which)
                              for (metric, (_, which, _)), runs in zip(METRICS.items(), metric_runs)})
               for key, (calls, sums, metric_runs) in groups.items()]
    per_call = [_per_call_record(model, calls, spend, *_ranks(runs, COST_PERCENTILES))
                for model, (calls, spend, runs) in models.items()]
    spenders = sorted(((user, calls, *sums) for (user,), (calls, _, sums) in users.items() if user is not None),
                      key=lambda u: (-u[2], u[0]))
    return records, per_call, [_user_record(*u) for u in spenders[:top]]


def _ranks(runs: list[list], which: Sequence[float]) -> list:
    """Percentiles of the values of several sorted runs (timsort merges runs, it does not sort
    them again)."""
    ordered = runs[0] if len(runs) == 1 else sorted(itertools.chain.from_iterable(runs))
    return [nearest_rank(ordered, p) for p in which]


def _scan(conn: sa.Connection, query: sa.Select, groupings: list[scan.Grouping]) -> list[dict]:
    """The groupings of ``query``'s rows: in this process for a small window, else split by time
    into equal slices, one worker process each."""
    c = spans.c
    rows = conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
    workers = scan.worker_count(rows)
    if workers == 1:
        # The DBAPI cursor directly: SQLAlchemy's per-row processing would double the fetch time.
        return scan.group_rows(conn.execute(query).cursor.fetchall(), groupings)
    offsets = [rows * i // workers for i in range(1, workers)]
    # A concurrent write may shift the offsets: a bound found twice or not at all only makes a
    # slice empty or wider, never loses a row (the slices still cover the whole window).
    bounds = sorted({bound for bound in (conn.execute(
        sa.select(c.start_time_unix_nano).where(query.whereclause).order_by(c.start_time_unix_nano)
        .offset(offset).limit(1)).scalar() for offset in offsets) if bound is not None})
    tasks = []
    for lo, hi in zip([None, *bounds], [*bounds, None]):
        part = query
        if lo is not None:
            part = part.where(c.start_time_unix_nano >= lo)
        if hi is not None:
            part = part.where(c.start_time_unix_nano < hi)
        compiled = part.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        tasks.append((str(compiled), [params[name] for name in compiled.positiontup]))
    return scan.scan(conn.engine.url.database, tasks, groupings)


def _top_users(conn: sa.Connection, where: list, top: int) -> list[dict]:
    c = spans.c
    spend = sa.func.coalesce(sa.func.sum(c.cost_usd), 0.0)
    query = (sa.select(c.user_id, sa.func.count(), spend, sa.func.sum(c.input_tokens),
                       sa.func.sum(c.output_tokens))
             .where(*where, c.user_id.is_not(None)).group_by(c.user_id)
             .order_by(spend.desc(), c.user_id).limit(top))
    return [_user_record(*row) for row in conn.execute(query)]


# -- the command ----------------------------------------------------------------------------------

def _group_order(by: Sequence[str]) -> Callable[[dict], tuple]:
    """Over time (``day`` / ``hour`` in ``--by``): key order, so a spike reads top to bottom;
    otherwise the busiest groups first."""
    def keys(g: dict) -> tuple:
        return tuple((g[k] is None, str(g[k])) for k in by)

    if "day" in by or "hour" in by:
        return keys
    return lambda g: (-g["requests"], keys(g))


def stats(store: Store, f: Filters, by: Sequence[str], top: int) -> dict[str, Any]:
    """Counts GenAI calls: spans with a model (chat, completion, embeddings ...)."""
    with store.connect() as conn:
        where = [genai_call(), *f.span_clauses(conn)]
        if store.dialect != "postgresql":
            groups, per_call, users = _sqlite_stats(conn, where, by, top)
    if store.dialect == "postgresql":
        # three queries at once, each on its own connection: the server works on them in parallel
        groups, per_call, users = _concurrently(store, [
            (_groups, (where, by)), (_cost_per_call, (where,)), (_top_users, (where, top))])
    groups.sort(key=_group_order(by))
    per_call.sort(key=lambda r: (-r["cost_usd"], r["model"]))
    return {"by": list(by), "groups": groups, "top_users": users, "cost_per_call": per_call}


def _concurrently(store: Store, jobs: Sequence[tuple[Callable, tuple]]) -> list[Any]:
    """Run ``fn(conn, *args)`` for every job at once, each on its own pooled connection."""
    from concurrent.futures import ThreadPoolExecutor

    def run(fn: Callable, args: tuple) -> Any:
        with store.connect() as conn:
            return fn(conn, *args)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run, fn, args) for fn, args in jobs]
        return [future.result() for future in futures]
