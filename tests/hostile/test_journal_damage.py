"""Journal damage (issue 17, item 6), through a real ``genai-collector run`` and real files.

Phase 1: a collector journals acknowledged requests while its upstream is unreachable, so every
record is still pending, and is killed (``kill -9``).  Then the journal files are damaged the ways
disks and people do: 4 flipped bytes in a record of an older segment, garbage over a record
header, a middle segment deleted, a flipped header in the tail segment with good records after it.
Phase 2: a collector on the same journal with a SQLite exporter.  Asserted: every acknowledged
request outside the damaged records is stored; each lost record is logged and counted
(``journal_damaged_requests``); ``journal_pending_requests`` reaches 0 and the segments are
freed; the tail segment was not truncated; and the collector keeps accepting afterwards.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

from collector import diskqueue
from tests.receiver_helpers import make_request

REQUESTS = 60
SPANS = 5

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http_port}}
        max_request_body_size: 64KiB
    storage: {{{{directory: {{tmp}}/journal, max_size: 1MiB}}}}
exporters:
  {exporter}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [{exporter_id}]
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics_port}}
"""
# phase 1: an unreachable upstream, no sending queue, retried forever: every record stays pending
PHASE1 = CONFIG.format(exporter_id="otlp", exporter="""otlp:
    endpoint: "127.0.0.1:{grpc_port}"
    tls: {{insecure: true}}
    sending_queue: {{enabled: false}}
    retry_on_failure: {{max_elapsed_time: 0}}""")
PHASE2 = CONFIG.format(exporter_id="sqlite", exporter="""sqlite:
    path: {tmp}/spans.db""")


def request(i: int, name: str) -> bytes:
    """A request of SPANS spans named ``<name>-<j>``, ~8 KB (so 60 of them fill 4 journal segments)."""
    req = make_request(SPANS, seed=i + 1, name=name)
    for span in req.resource_spans[0].scope_spans[0].spans:
        span.attributes.add(key="pad").value.string_value = "p" * 1500
    return req.SerializeToString()


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


def records(path: Path) -> list[tuple[int, int, int]]:
    """(seq, start offset, end offset) of each record of a format-2 segment file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(e.seq, e.start, e.end) for e, _ in diskqueue._entries(fd, 8, os.path.getsize(path))]
    finally:
        os.close(fd)


def flip(path: Path, offset: int, n: int = 4) -> None:
    data = bytearray(path.read_bytes())
    for k in range(n):
        data[offset + k] ^= 0xA5
    path.write_bytes(bytes(data))


def stored_names(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {row[0] for row in con.execute("SELECT DISTINCT name FROM spans")}
    finally:
        con.close()


def test_damaged_journal_loses_only_the_damaged_records(collector_factory, tmp_path):
    c1 = collector_factory(PHASE1)
    for i in range(REQUESTS):  # every one acknowledged (journaled), none exported
        assert post(c1.http_url, request(i, f"req{i:03d}")) == 200
    assert c1.metric("otelcol_receiver_journal_pending_requests") == REQUESTS
    c1.stop(signal.SIGKILL)

    journal = tmp_path / "journal"
    segs = sorted(journal.glob("*.seg"))
    assert len(segs) >= 4, segs
    lost_seqs: set[int] = set()
    first = records(segs[0])  # 4 flipped bytes in the payload of an older segment's 3rd record
    seq, start, end = first[2]
    flip(segs[0], (start + end) // 2)
    lost_seqs.add(seq)
    second = records(segs[1])  # garbage over a record header
    seq, start, _ = second[1]
    flip(segs[1], start + 2, 16)
    lost_seqs.add(seq)
    third = records(segs[2])  # a whole middle segment deleted
    lost_seqs.update(s for s, _, _ in third)
    segs[2].unlink()
    tail = records(segs[-1])  # the tail: a flipped header with good records after it
    assert len(tail) >= 3
    seq, start, _ = tail[len(tail) // 2]
    flip(segs[-1], start + 4)
    lost_seqs.add(seq)

    c2 = collector_factory(PHASE2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and c2.metric("otelcol_receiver_journal_pending_requests") > 0:
        time.sleep(0.2)
    assert c2.metric("otelcol_receiver_journal_pending_requests") == 0, c2.log()[-3000:]
    assert c2.metric("otelcol_receiver_journal_damaged_requests") == len(lost_seqs)
    stored = stored_names(tmp_path / "spans.db")
    first_seq = min(s for s, _, _ in first)
    expected = {f"req{seq - first_seq:03d}-{j}" for seq in range(first_seq, first_seq + REQUESTS)
                if seq not in lost_seqs for j in range(SPANS)}
    assert stored == expected, (sorted(expected - stored)[:10], sorted(stored - expected)[:10])
    log = c2.log()
    for seq in lost_seqs - {s for s, _, _ in third}:  # one line per loss, naming the seqs
        assert f"lost (seq {seq}..{seq})" in log, log[-3000:]
    third_seqs = sorted(s for s, _, _ in third)
    assert f"lost (seq {third_seqs[0]}..{third_seqs[-1]})" in log
    assert "torn" not in log  # the tail was not cut: its good records after the damage were stored

    # the journal keeps accepting: the freed space is usable, new requests are stored
    for i in range(REQUESTS):
        assert post(c2.http_url, request(1000 + i, f"new{i:03d}")) == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and c2.metric("otelcol_receiver_journal_pending_requests") > 0:
        time.sleep(0.2)
    assert {f"new{i:03d}-0" for i in range(REQUESTS)} <= stored_names(tmp_path / "spans.db")
    assert len(list(journal.glob("*.seg"))) <= 2  # consumed segments were freed
