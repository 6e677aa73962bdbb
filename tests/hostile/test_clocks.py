"""Client clocks do not decide retention (issue 17.5).

With ``ttl: 30d`` a span stamped 1971 was deleted at the first retention pass, one stamped 2090
was kept forever (and ``content_ttl`` never removed its prompt), and a time >= 2**63 ns was stored
as 0 and deleted at once.  Now retention counts from the collector's receipt time and times past
2262 are rejected with partial success.
"""

from __future__ import annotations

import time

import grpc

from exporters.storage.config import RetentionPolicy
from exporters.storage.retention import Retention
from exporters.storage.store import Store, sqlite_url
from tests.hostile.data_support import config, grpc_export, llm_attrs, rows, span_request, wait_for

DAY = 86400
YEAR_1971 = 365 * DAY * 10**9
YEAR_2090 = 120 * 365 * DAY * 10**9
PROMPT = "content that content_ttl must remove"


def test_retention_counts_from_receipt_not_from_span_times(collector_factory, tmp_path):
    path = tmp_path / "spans.db"
    c = collector_factory(config("sqlite", {"path": str(path), "ttl": "30d", "content_ttl": "7d",
                                            "retention_check_interval": "100ms"}))
    before = time.time_ns()
    attrs = llm_attrs(**{"input.value": PROMPT})
    code, response = grpc_export(c.grpc_endpoint, span_request(
        {"trace": 1, "span": 1, "start": YEAR_1971, "attrs": attrs},
        {"trace": 2, "span": 2, "start": YEAR_2090, "attrs": attrs},
        {"trace": 3, "span": 3, "start": 2**64 - 10, "end": 2**64 - 1, "attrs": attrs},  # past int64
    ).SerializeToString())
    after = time.time_ns()
    assert code == grpc.StatusCode.OK
    assert response.partial_success.rejected_spans == 1
    assert "past 2262-04-11" in response.partial_success.error_message
    url = sqlite_url(path)
    stored = rows(url, "SELECT span_id, start_time_unix_nano, received_unix_nano FROM spans ORDER BY span_id")
    assert [(s, start) for s, start, _ in stored] == [("%016x" % 1, YEAR_1971), ("%016x" % 2, YEAR_2090)]
    assert all(before <= received <= after for _, _, received in stored)
    assert c.metric("otelcol_receiver_rejected_spans") == 1
    # Several retention passes (every 100 ms) run: the 1971 span is not "30 years old".
    time.sleep(1.0)
    wait_for(lambda: c.metric("otelcol_exporter_storage_written_spans") == 2, what="the write")
    assert rows(url, "SELECT COUNT(*) FROM spans WHERE content_attributes IS NOT NULL") == [(2,)]
    assert c.stop() == 0

    # 8 days later on the collector's clock content_ttl removes both prompts; 31 days later ttl
    # removes both traces: the 2090 stamp does not keep anything.
    store = Store(url, max_content_bytes=2**20)
    policy = RetentionPolicy(ttl=30 * DAY, content_ttl=7 * DAY)
    Retention(store, policy, clock=lambda: after / 1e9 + 8 * DAY).run_once()
    assert rows(url, "SELECT span_id, content_attributes, content_purged FROM spans ORDER BY span_id") == [
        ("%016x" % 1, None, 1), ("%016x" % 2, None, 1)]
    report = Retention(store, policy, clock=lambda: after / 1e9 + 31 * DAY).run_once()
    assert report.deleted_traces == 2 and rows(url, "SELECT COUNT(*) FROM spans") == [(0,)]
    store.close()
