"""``stats`` for a long-running reader (the web UI), from per-day parts kept while a day is unchanged.

The exact percentiles of ``stats`` need every value of the window: 0.5-0.9 s for 30 days of a
1M-span store, most of it handing 130k rows to Python.  A past day rarely changes, so a process
that answers the same analytics every few seconds keeps, per UTC day, that day's part of the
answer: per group its sums and the sorted runs of its values, per model its sorted costs, per user
its sums.  Each request then

- checks every whole day of the window against a fingerprint (count, sum of cost and duration,
  latest start of its GenAI calls: one ``GROUP BY`` over the covering index ``ix_spans_calls``), so
  late spans, retention deletes and a changed filter are seen, and rescans only the days that
  changed;
- scans the partial days at the window's ends (``--since 30d`` starts mid-day; today is open);
- merges the parts: sums add; percentiles come from the merged sorted runs, so they are the same
  exact nearest-rank values as :func:`collector.query.stats.stats` gives (sums may differ in the
  last bits: they are added in another order).

The one-shot CLI gains nothing from a cache and keeps :func:`stats`.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from collector.query.args import now_ns
from collector.query.filters import Filters, genai_call
from collector.query.stats import (
    COST_PERCENTILES, METRICS, NS_PER_DAY, _group_order, _group_record, _group_value, _grouped,
    _per_call_record, _ranks, _user_record, group_expression, sorted_by_key, stats,
)
from collector.query.store import Connection, Store
from exporters.storage.sqltext import Sql, all_of

__all__ = ["DayCache"]

VALUES = ("spans.status_code", "spans.input_tokens", "spans.output_tokens", "spans.cost_usd",
          *(column for column, _, _ in METRICS.values()))
"""What a day's scan reads of each call after its group key and model (all in ix_spans_calls)."""

USERS = ("SELECT spans.user_id, count(*), coalesce(sum(spans.cost_usd), 0.0), sum(spans.input_tokens), "
         "sum(spans.output_tokens) FROM spans WHERE {} GROUP BY spans.user_id HAVING count(spans.user_id) > 0")

FINGERPRINT = (f"SELECT spans.start_time_unix_nano / {NS_PER_DAY}, count(*), sum(spans.cost_usd), "
               "sum(spans.duration_ms), max(spans.start_time_unix_nano) FROM spans WHERE {} GROUP BY 1")


@dataclass
class _Group:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    runs: list[list] = field(default_factory=lambda: [[] for _ in METRICS])  # per metric: sorted runs

    def add(self, other: "_Group") -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost
        for mine, theirs in zip(self.runs, other.runs):
            mine.extend(theirs)

    def record(self, key: tuple, by: Sequence[str]) -> dict[str, Any]:
        pct = {metric: _ranks(runs, which) if runs else [None] * len(which)
               for (metric, (_, which, _)), runs in zip(METRICS.items(), self.runs)}
        return _group_record({k: _group_value(k, v) for k, v in zip(by, key)}, self.requests, self.errors,
                             self.input_tokens, self.output_tokens, self.cost, pct)


@dataclass
class _Part:
    """One time range's share of the answer."""

    groups: dict[tuple, _Group]
    models: dict[str, list]              # model -> [calls, sorted cost runs]
    users: dict[str, tuple]              # user -> (requests, cost, input tokens, output tokens)
    fingerprint: tuple | None = None
    records: list[dict] | None = None    # the groups' final records, when a group lies in one day


def _scan(conn: Connection, where: list[Sql], by: Sequence[str]) -> _Part:
    keys = [group_expression(k, conn.dialect) for k in by] + [Sql("spans.model")]
    rows = conn.execute(_grouped([*keys, *VALUES], where, 0)).fetchall()
    groups: dict[tuple, _Group] = {}
    models: dict[str, list] = {}
    for key, (calls, (status, tin, tout, costs, *metrics)) in sorted_by_key(rows, len(keys)).items():
        group = groups.setdefault(key[:-1], _Group())
        group.add(_Group(calls, status.count(2), sum(tin), sum(tout), sum(costs),
                         [[array("d", run)] if run else [] for run in metrics]))
        model = models.setdefault(key[-1], [0, []])
        model[0] += calls
        model[1].append(array("d", costs))
    users = {row[0]: tuple(row[1:]) for row in conn.execute(Sql.compose(USERS, all_of(where))).fetchall()}
    return _Part(groups, models, users)


def _range(column: str, lo: int | None, hi: int | None) -> list[Sql]:
    return ([Sql(f"{column} >= ?", lo)] if lo is not None else []) + (
        [Sql(f"{column} < ?", hi)] if hi is not None else [])


class DayCache:
    """Per-day parts of ``stats`` answers, for the store one process reads (least recently used
    parts dropped beyond ``max_parts``: a part is ~40 bytes per GenAI call of its day)."""

    def __init__(self, max_parts: int = 1000) -> None:
        self.max_parts = max_parts
        self._parts: OrderedDict[tuple, _Part] = OrderedDict()
        self._lock = threading.Lock()

    def stats(self, store: Store, f: Filters, by: Sequence[str], top: int) -> dict[str, Any]:
        """The answer :func:`collector.query.stats.stats` gives; an unbounded ``since`` is
        passed to it (no whole days to keep)."""
        if f.since is None:
            return stats(store, f, by, top)
        today = now_ns() // NS_PER_DAY
        first = -(-f.since // NS_PER_DAY)                                  # first whole day
        last = min(today, f.until // NS_PER_DAY) if f.until is not None else today  # days before it
        base = replace(f, since=None, until=None)
        with store.connect() as conn:
            where = [genai_call(), *base.span_clauses(conn)]
            if first >= last:  # no whole closed day in the window
                parts = [_scan(conn, where + _range("spans.start_time_unix_nano", f.since, f.until), by)]
            else:
                parts = [_scan(conn, where + _range("spans.start_time_unix_nano", f.since, first * NS_PER_DAY), by),
                         *self._days(conn, where, (tuple(by), base), first, last, by),
                         _scan(conn, where + _range("spans.start_time_unix_nano", last * NS_PER_DAY, f.until), by)]
        return _combine(parts, by, top)

    def _days(self, conn: Connection, where: list[Sql], key: tuple, first: int, last: int,
              by: Sequence[str]) -> list[_Part]:
        window = where + _range("spans.start_time_unix_nano", first * NS_PER_DAY, last * NS_PER_DAY)
        fingerprints = {int(row[0]): tuple(row[1:])
                        for row in conn.execute(Sql.compose(FINGERPRINT, all_of(window))).fetchall()}
        out = []
        for day, fingerprint in sorted(fingerprints.items()):
            with self._lock:
                part = self._parts.get((key, day))
                if part is not None:
                    self._parts.move_to_end((key, day))
            if part is None or part.fingerprint != fingerprint:
                part = _scan(conn, where + _range("spans.start_time_unix_nano", day * NS_PER_DAY,
                                                  (day + 1) * NS_PER_DAY), by)
                part.fingerprint = fingerprint
                with self._lock:
                    self._parts[(key, day)] = part
                    while len(self._parts) > self.max_parts:
                        self._parts.popitem(last=False)
            out.append(part)
        return out


def _combine(parts: list[_Part], by: Sequence[str], top: int) -> dict[str, Any]:
    if "day" in by or "hour" in by:  # every group lies in one part: its record is final there
        groups = []
        for part in parts:
            if part.records is None:
                part.records = [g.record(k, by) for k, g in part.groups.items()]
                part.groups = {}  # the runs are not needed again
            groups.extend(part.records)
    else:
        merged: dict[tuple, _Group] = {}
        for part in parts:
            for k, g in part.groups.items():
                merged.setdefault(k, _Group()).add(g)
        groups = [g.record(k, by) for k, g in merged.items()]
    models: dict[str, list] = {}
    users: dict[str, list] = {}
    for part in parts:
        for model, (calls, runs) in part.models.items():
            m = models.setdefault(model, [0, []])
            m[0] += calls
            m[1].extend(runs)
        for user, sums in part.users.items():
            u = users.setdefault(user, [0, 0.0, 0, 0])
            for i, value in enumerate(sums):
                u[i] += value or 0
    per_call = []
    for model, (calls, runs) in models.items():
        costs = sorted(v for run in runs for v in run)
        per_call.append(_per_call_record(model, calls, sum(costs), *_ranks([costs], COST_PERCENTILES)))
    top_users = [_user_record(user, *sums)
                 for user, sums in sorted(users.items(), key=lambda kv: (-kv[1][1], kv[0]))[:top]]
    groups.sort(key=_group_order(by))
    per_call.sort(key=lambda r: (-r["cost_usd"], r["model"]))
    return {"by": list(by), "groups": groups, "top_users": top_users, "cost_per_call": per_call}
