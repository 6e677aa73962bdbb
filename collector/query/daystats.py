"""``stats`` for a long-running reader (the web UI), from per-day parts kept while a day is unchanged.

The exact percentiles of ``stats`` need every value of the window: 0.5-0.9 s for 30 days of a
1M-span store, most of it handing 130k rows to Python.  A past day rarely changes, so a process
that answers the same analytics every few seconds keeps, per UTC day, that day's part of the
answer: per group its sums and the sorted runs of its values, per model its sorted costs, per user
its sums.  Each request then

- checks every whole day of the window against a fingerprint (the count and total cost of its
  GenAI calls, from the covering index ``ix_spans_calls``), so late spans and retention deletes
  are seen, and rescans only the days that changed (the merge of the whole days is kept too, and
  reused while none changed);
- scans the partial days at the window's ends (``--since 30d`` starts mid-day; today is open);
- merges the parts: sums add; percentiles come from the merged sorted runs, so they are the same
  exact nearest-rank values as :func:`collector.query.stats.stats` gives (sums may differ in the
  last bits: they are added in another order).

The one-shot CLI gains nothing from a cache and keeps :func:`stats`.
"""

from __future__ import annotations

import itertools
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from collector.query.args import now_ns
from collector.query.filters import Filters, genai_call
from collector.query.percentile import rank as percentile_rank
from collector.query.stats import (
    COST_PERCENTILES, METRICS, NS_PER_DAY, add_feedback, group_order, group_record, group_value, grouped,
    per_call_record, user_record, group_expression, sorted_by_key, stats,
)
from collector.query.store import Connection, Store
from exporters.storage.sqltext import Sql, all_of

__all__ = ["DayCache"]

VALUES = ("spans.status_code", "spans.input_tokens", "spans.output_tokens", "spans.cost_usd",
          *(column for column, _, _ in METRICS.values()))
"""What a day's scan reads of each call after its group key and model (all in ix_spans_calls)."""

USERS = ("SELECT spans.user_id, count(*), coalesce(sum(spans.cost_usd), 0.0), sum(spans.input_tokens), "
         "sum(spans.output_tokens) FROM spans WHERE {} GROUP BY spans.user_id HAVING count(spans.user_id) > 0")

FINGERPRINT = "SELECT count(*), sum(spans.cost_usd) FROM spans WHERE {}"
"""A day's GenAI calls in brief, asked per day: a range of the covering index ``ix_spans_calls``
read in order (one ``GROUP BY`` by day over the window sorts it first: 4x slower)."""


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
        pct = {metric: _ranks_of_runs(runs, which) for (metric, (_, which, _)), runs in zip(METRICS.items(), self.runs)}
        return group_record({k: group_value(k, v) for k, v in zip(by, key)}, self.requests, self.errors,
                             self.input_tokens, self.output_tokens, self.cost, pct)


@dataclass
class _Part:
    """One time range's share of the answer."""

    groups: dict[tuple, _Group]
    models: dict[str, list]              # model -> [calls, cost sum, sorted cost runs]
    users: dict[str, tuple]              # user -> (requests, cost, input tokens, output tokens)
    fingerprint: tuple | None = None
    records: list[dict] | None = None    # the groups' final records, when a group lies in one day


def _scan(conn: Connection, where: list[Sql], by: Sequence[str]) -> _Part:
    keys = [group_expression(k, conn.dialect) for k in by] + [Sql("spans.model")]
    rows = conn.execute(grouped([*keys, *VALUES], where, 0)).fetchall()
    groups: dict[tuple, _Group] = {}
    models: dict[str, list] = {}
    for key, (calls, (status, tin, tout, costs, *metrics)) in sorted_by_key(rows, len(keys)).items():
        group = groups.setdefault(key[:-1], _Group())
        group.add(_Group(calls, status.count(2), sum(tin), sum(tout), sum(costs),
                         [[array("d", run)] if run else [] for run in metrics]))
        model = models.setdefault(key[-1], [0, 0.0, []])
        model[0] += calls
        model[1] += sum(costs)
        model[2].append(array("d", costs))
    users = {row[0]: tuple(row[1:]) for row in conn.execute(Sql.compose(USERS, all_of(where))).fetchall()}
    return _Part(groups, models, users)


def _range(column: str, lo: int | None, hi: int | None) -> list[Sql]:
    return ([Sql(f"{column} >= ?", lo)] if lo is not None else []) + (
        [Sql(f"{column} < ?", hi)] if hi is not None else [])


class DayCache:
    """Per-day parts of ``stats`` answers, for the store one process reads (least recently used
    parts dropped beyond ``max_parts``), and per question the merge of its whole days, reused
    while none of them changed: a request then merges two small partial days into it."""

    def __init__(self, max_parts: int = 1000) -> None:
        self.max_parts = max_parts
        self._parts: OrderedDict[tuple, _Part] = OrderedDict()
        self._merged: OrderedDict[tuple, tuple[tuple, _Part]] = OrderedDict()
        self._lock = threading.Lock()

    def stats(self, store: Store, f: Filters, by: Sequence[str], top: int) -> dict[str, Any]:
        """The answer :func:`collector.query.stats.stats` gives; an unbounded ``since`` is
        passed to it (no whole days to keep)."""
        if f.since is None or f.feedback is not None:
            # feedback arrives after the calls it is about: a closed day's answer can change
            return stats(store, f, by, top)
        today = now_ns() // NS_PER_DAY
        first = -(-f.since // NS_PER_DAY)                                  # first whole day
        last = min(today, f.until // NS_PER_DAY) if f.until is not None else today  # days before it
        base = replace(f, since=None, until=None)
        column = "spans.start_time_unix_nano"
        with store.connect() as conn:
            where = [genai_call(), *base.span_clauses(conn)]
            if first >= last:  # no whole closed day in the window
                parts = [_scan(conn, where + _range(column, f.since, f.until), by)]
            else:
                parts = [_scan(conn, where + _range(column, f.since, first * NS_PER_DAY), by),
                         self._whole_days(conn, where, (tuple(by), base), first, last, by),
                         _scan(conn, where + _range(column, last * NS_PER_DAY, f.until), by)]
        answer = _answer(_merge(parts, by), by, top)
        add_feedback(store, f, by, answer["groups"])
        return answer

    def _whole_days(self, conn: Connection, where: list[Sql], key: tuple, first: int, last: int,
                    by: Sequence[str]) -> _Part:
        """The merged parts of the days ``first`` .. ``last - 1``, each checked and rescanned
        if it changed; the merge itself is reused while no day changed."""
        fingerprints = []
        for day in range(first, last):
            day_where = where + _range("spans.start_time_unix_nano", day * NS_PER_DAY, (day + 1) * NS_PER_DAY)
            count, cost = conn.execute(Sql.compose(FINGERPRINT, all_of(day_where))).fetchone()
            if count:
                fingerprints.append((day, (count, cost)))
        signature = tuple(fingerprints)
        with self._lock:
            kept = self._merged.get(key)
        if kept is not None and kept[0] == signature:
            return kept[1]
        parts = [self._day(conn, where, key, day, fingerprint, by) for day, fingerprint in fingerprints]
        merged = _merge(parts, by, compact=True)
        with self._lock:
            self._merged[key] = (signature, merged)
            self._merged.move_to_end(key)
            while len(self._merged) > 32:
                self._merged.popitem(last=False)
        return merged

    def _day(self, conn: Connection, where: list[Sql], key: tuple, day: int, fingerprint: tuple,
             by: Sequence[str]) -> _Part:
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
        return part


def _final(by: Sequence[str]) -> bool:
    """Every group lies in one day (``day`` / ``hour`` in ``by``): a part's records are final."""
    return "day" in by or "hour" in by


def _records(part: _Part, by: Sequence[str]) -> list[dict]:
    if part.records is None:
        part.records = [g.record(k, by) for k, g in part.groups.items()]
        part.groups = {}  # the runs are not needed again
    return part.records


def _merge(parts: list[_Part], by: Sequence[str], compact: bool = False) -> _Part:
    """One part from several, sharing nothing it could change with them: sums added, runs
    listed together, or (``compact``: a part kept for reuse) merged into one sorted run."""
    out = _Part({}, {}, {}, records=[] if _final(by) else None)
    for part in parts:
        if out.records is not None:
            out.records.extend(_records(part, by))
        else:
            for k, g in part.groups.items():
                out.groups.setdefault(k, _Group()).add(g)
        for model, (calls, cost, runs) in part.models.items():
            m = out.models.setdefault(model, [0, 0.0, []])
            m[0] += calls
            m[1] += cost
            m[2].extend(runs)
        for user, sums in part.users.items():
            u = out.users.get(user)
            if u is None:
                out.users[user] = [value or 0 for value in sums]
            else:
                for i, value in enumerate(sums):
                    u[i] += value or 0
    if compact:
        for m in out.models.values():
            m[2] = [_one_run(m[2])]
        for g in out.groups.values():
            g.runs = [[_one_run(runs)] if runs else [] for runs in g.runs]
    return out


def _one_run(runs: list) -> Any:
    return runs[0] if len(runs) == 1 else sorted(itertools.chain.from_iterable(runs))


def _ranks_of_runs(runs: list, which: Sequence[float]) -> list:
    """The nearest-rank percentiles of the union of sorted runs, without merging the largest one
    (a month of calls) with the rest (a day or two): the others are merged, and each rank is
    found by a binary search over the two."""
    if not runs:
        return [None] * len(which)
    big = max(runs, key=len)
    rest = _one_run([r for r in runs if r is not big]) if len(runs) > 1 else []
    n = len(big) + len(rest)
    return [_kth(big, rest, percentile_rank(p, n)) if n else None for p in which]


def _kth(a: Sequence[float], b: Sequence[float], k: int) -> float:
    """The ``k``-th smallest (1-based) of the union of sorted ``a`` and ``b``."""
    lo, hi = max(0, k - len(b)), min(k, len(a))
    while lo < hi:  # i values from a and k - i from b: the least i with a[i] >= b[k - i - 1]
        i = (lo + hi) // 2
        if a[i] < b[k - i - 1]:
            lo = i + 1
        else:
            hi = i
    i, j = lo, k - lo
    return max(a[i - 1], b[j - 1]) if i and j else (a[i - 1] if i else b[j - 1])


def _answer(part: _Part, by: Sequence[str], top: int) -> dict[str, Any]:
    groups = list(part.records) if part.records is not None else [g.record(k, by) for k, g in part.groups.items()]
    per_call = [per_call_record(model, calls, cost, *_ranks_of_runs(runs, COST_PERCENTILES))
                for model, (calls, cost, runs) in part.models.items()]
    users = part.users
    ranked = sorted(users)  # by id, then (stable) by spend: no key tuple per user to allocate
    ranked.sort(key=lambda user: -users[user][1])
    top_users = [user_record(user, *users[user]) for user in ranked[:top]]
    groups.sort(key=group_order(by))
    per_call.sort(key=lambda r: (-r["cost_usd"], r["model"]))
    return {"by": list(by), "groups": groups, "top_users": top_users, "cost_per_call": per_call}
