"""``stats``: volume, errors, tokens, cost and exact latency / TTFT / throughput percentiles per
group, the top users by spend and the cost per call by model.

Percentiles are exact on both stores, by one definition (nearest rank, Postgres
``percentile_disc``): see :mod:`collector.query.percentile`.  The same three ``GROUP BY`` queries
(groups, cost per call by model, top users) run on SQLite and Postgres; only the percentile
aggregate differs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import sqlalchemy as sa

from collector.query.filters import Filters, genai_call
from collector.query.percentile import decode, percentile_columns
from collector.query.queries import iso
from collector.query.store import Store
from exporters.storage.schema import spans

__all__ = ["stats", "PERCENTILES"]

PERCENTILES = (0.5, 0.95, 0.99)
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


# -- the queries ----------------------------------------------------------------------------------

def _groups(conn: sa.Connection, dialect: str, where: list, by: Sequence[str]) -> list[dict]:
    exprs = _group_columns()
    c = spans.c
    sums = [sa.func.count(), sa.func.sum(sa.case((c.status_code == 2, 1), else_=0)),
            sa.func.sum(c.input_tokens), sa.func.sum(c.output_tokens), sa.func.sum(c.cost_usd)]
    specs = [(col, which) for col, which, _ in METRICS.values()]
    query = (sa.select(*(exprs[k] for k in by), *sums, *percentile_columns(dialect, specs))
             .where(*where).group_by(*(exprs[k] for k in by)))
    width = len(by)
    out = []
    for row in conn.execute(query):
        requests, errors, tin, tout, cost = row[width:width + 5]
        pct = dict(zip(METRICS, decode(row[width + 5:], specs)))
        out.append(_group_record({k: _group_value(k, v) for k, v in zip(by, row[:width])},
                                 requests, errors, tin, tout, cost, pct))
    return out


def _cost_per_call(conn: sa.Connection, dialect: str, where: list) -> list[dict]:
    c = spans.c
    spec = [(c.cost_usd, (0.5, 0.95))]
    query = (sa.select(c.model, sa.func.count(), sa.func.sum(c.cost_usd),
                       *percentile_columns(dialect, spec))
             .where(*where).group_by(c.model))
    return [_per_call_record(row[0], row[1], row[2], *decode(row[3:], spec)[0])
            for row in conn.execute(query)]


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
    """Counts GenAI calls: spans with a model (chat, completion, embeddings ...).

    On Postgres the three GROUP BY queries run at once, each on its own connection, so the server
    works on them in parallel (5.8 s -> 3 s on the loaded bench machine).  On SQLite they run one
    after the other on one connection: in threads they fought over the GIL (the percentile
    aggregate is Python) and each connection warmed its own page cache, 1.0 s of CPU became 1.8 s.
    """
    with store.connect() as conn:
        where = [genai_call(), *f.span_clauses(conn)]
        jobs = [(_groups, (store.dialect, where, by)), (_cost_per_call, (store.dialect, where)),
                (_top_users, (where, top))]
        if store.dialect == "postgresql":
            groups, per_call, users = _concurrently(store, jobs)
        else:
            groups, per_call, users = (fn(conn, *args) for fn, args in jobs)
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
