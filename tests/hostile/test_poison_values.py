"""Poison values cost only their own span: int64 token sums, NaN/inf, a span the database refuses.

Issue 17.1: two spans of one trace with ``gen_ai.usage.input_tokens = 2**63-1`` overflowed the
rollup sum outside the per-row savepoint, so the whole merged batch failed: honest clients sending
at the same moment got INVALID_ARGUMENT (direct path) or lost acknowledged spans (intake journal).
Here honest clients send over real gRPC and HTTP while the poison arrives, into a real SQLite file
or a real Postgres database, and every acknowledged span must be in the database.
"""

from __future__ import annotations

import sqlite3
import threading

import grpc
import pytest

from tests.hostile.data_support import (INT64_MAX, config, grpc_export, http_export, llm_attrs, parse_response, rows,
                          span_request, wait_for)
from storage_helpers import pg_admin, pg_url  # noqa: F401
from exporters.storage.store import sqlite_url

POISON_TRACE = 0xBAD
POISON_SPAN = 10**12  # far from the honest clients' span ids


def _honest_clients(c, clients: int = 4, requests: int = 12, spans: int = 8) -> tuple[set, list]:
    """Send ``clients`` x ``requests`` requests of ``spans`` spans, half gRPC, half HTTP, from
    threads; returns (span ids acknowledged, failures)."""
    acked: set[int] = set()
    failures: list = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for r in range(requests):
            ids = [(n * 1000 + r) * 100 + i + 1 for i in range(spans)]
            body = span_request(*({"trace": 0x1000 + n * 1000 + r, "span": sid, "attrs": llm_attrs()}
                                  for sid in ids)).SerializeToString()
            if n % 2:
                code, response = grpc_export(c.grpc_endpoint, body)
                ok = code == grpc.StatusCode.OK and not response.partial_success.rejected_spans
            else:
                status, _, raw = http_export(c.http_url, body)
                ok = status == 200 and not parse_response(raw).partial_success.rejected_spans
                code = status
            with lock:
                if ok:
                    acked.update(ids)
                else:
                    failures.append((n, r, code))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    return acked, threads, failures


def _send_poison(c, first_span: int, count: int) -> None:
    """Spans of one trace carrying int64-max tokens, NaN cost and an infinite attribute."""
    poison = [{"trace": POISON_TRACE, "span": first_span + i, "name": "poison",
               "attrs": llm_attrs(**{"gen_ai.usage.input_tokens": INT64_MAX, "gen_ai.usage.output_tokens": INT64_MAX,
                                     "gen_ai.usage.cost": float("nan"), "weird": float("inf")})}
              for i in range(count)]
    code, response = grpc_export(c.grpc_endpoint, span_request(*poison).SerializeToString())
    assert code == grpc.StatusCode.OK, response


@pytest.mark.parametrize("store,journal", [("sqlite", False), ("sqlite", True), ("postgres", False)],
                         ids=["sqlite", "sqlite-journal", "postgres"])
def test_int64_max_tokens_saturate_and_honest_clients_keep_every_span(collector_factory, tmp_path, request,
                                                                      store, journal):
    if store == "sqlite":
        url = sqlite_url(tmp_path / "spans.db")
        settings = {"path": str(tmp_path / "spans.db")}
    else:
        url = request.getfixturevalue("pg_url")
        settings = {"url": url}
    c = collector_factory(config(store, settings, journal=journal))
    acked, threads, failures = _honest_clients(c)
    for i in range(4):  # poison keeps arriving while the honest clients send
        _send_poison(c, 1 + 2 * i, 2)
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert len(acked) == 4 * 12 * 8
    expected = len(acked) + 8
    wait_for(lambda: rows(url, "SELECT COUNT(*) FROM spans")[0][0] >= expected, what="every span stored")
    stored = {int(s, 16) for (s,) in rows(url, "SELECT span_id FROM spans WHERE trace_id != :t",
                                          t=f"{POISON_TRACE:032x}")}
    assert acked <= stored  # no acknowledged span lost
    assert rows(url, "SELECT span_count, input_tokens, output_tokens FROM traces WHERE trace_id = :t",
                t=f"{POISON_TRACE:032x}") == [(8, INT64_MAX, INT64_MAX)]
    # A trace already at INT64_MAX keeps taking spans (Postgres refused them with bigint out of range).
    _send_poison(c, 100, 1)
    wait_for(lambda: rows(url, "SELECT span_count, input_tokens FROM traces WHERE trace_id = :t",
                          t=f"{POISON_TRACE:032x}") == [(9, INT64_MAX)], what="the 9th poison span")
    assert rows(url, "SELECT cost_usd FROM spans WHERE trace_id = :t LIMIT 1", t=f"{POISON_TRACE:032x}") == [(None,)]
    assert "Traceback" not in c.log()


@pytest.mark.parametrize("journal", [False, True], ids=["direct", "journal"])
def test_a_span_the_database_refuses_costs_only_itself(collector_factory, tmp_path, journal):
    """A trigger on the real file refuses the rollup of one span (as a bug or a constraint
    would): the batch it was merged into is split until that span is alone."""
    path = tmp_path / "spans.db"
    c = collector_factory(config("sqlite", {"path": str(path)}, journal=journal))
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON traces WHEN NEW.root_name = 'poison' "
               "BEGIN SELECT RAISE(ABORT, 'poisoned rollup'); END")
    db.close()
    acked, threads, failures = _honest_clients(c, clients=2, requests=10)
    for i in range(3):
        code, _ = grpc_export(c.grpc_endpoint, span_request(
            {"trace": POISON_TRACE + i, "span": POISON_SPAN + i, "name": "poison", "attrs": llm_attrs()}).SerializeToString())
        assert code in (grpc.StatusCode.OK,)
    for t in threads:
        t.join(120)
    assert not failures, failures
    url = sqlite_url(path)
    wait_for(lambda: c.metric("otelcol_exporter_storage_rejected_spans") >= 3
             and rows(url, "SELECT COUNT(*) FROM spans")[0][0] >= len(acked), what="every span written")
    stored = {int(s, 16) for (s,) in rows(url, "SELECT span_id FROM spans")}
    assert acked <= stored and not {POISON_SPAN, POISON_SPAN + 1, POISON_SPAN + 2} & stored
    assert c.metric("otelcol_exporter_storage_written_spans") == len(acked)
    log = c.log()
    assert "writing it in halves" in log and "poisoned rollup" in log and "Traceback" not in log
