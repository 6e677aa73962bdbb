"""Durable acknowledgement: an OK means the spans survive ``kill -9``; the intake journal replays.

The crash test runs the collector as a subprocess with the real ``sqlite`` storage exporter
(``synchronous: FULL``), loads it from client threads that record every span id acknowledged with
OK, kills it with SIGKILL mid-load, restarts it and checks every acknowledged span is stored exactly once
(journal replays and client retries re-deliver; the exporter's upsert must absorb them).
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time

import grpc
import pytest

from collector.diskqueue import DiskQueue
from tests.receiver_helpers import (InProcessCollector, collector_yaml, free_port, make_request, otlp_json,
                                    span_keys, start_collector, stored_spans)
from tests.test_receiver_protocol import EXPORT, grpc_export, http_post


def _wait_stored(db: str, keys: set, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stored = stored_spans(db)
        if keys <= set(stored) or time.monotonic() > deadline:
            return stored
        time.sleep(0.1)


class Load:
    """Client threads (gRPC and HTTP) sending unique items; ``acked`` holds what got an OK.

    Spans by default; ``make(n, seed)``, ``keys(request)``, ``method`` and ``path`` send another
    signal (the logs variant is in tests/test_signals_e2e.py).
    """

    def __init__(self, grpc_port: int, http_port: int, threads: int = 3, spans: int = 25, make=make_request,
                 keys=span_keys, method: str = EXPORT, path: str = "/v1/traces") -> None:
        self.acked: set = set()
        self.requests_ok = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.seeds = iter(range(1, 10_000_000))
        self.spans = spans
        self.make, self.keys, self.method, self.path = make, keys, method, path
        self.threads = [threading.Thread(target=self._grpc, args=(grpc_port,), daemon=True) for _ in range(threads)]
        self.threads.append(threading.Thread(target=self._http, args=(http_port,), daemon=True))
        for t in self.threads:
            t.start()

    def _next(self):
        with self.lock:
            return self.make(self.spans, next(self.seeds))

    def _ok(self, req) -> None:
        with self.lock:
            self.acked |= self.keys(req)
            self.requests_ok += 1

    def _grpc(self, port: int) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = channel.unary_unary(self.method)
        while not self.stop.is_set():
            req = self._next()
            try:
                call(req.SerializeToString(), timeout=10)
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            self._ok(req)
        channel.close()

    def _http(self, port: int) -> None:
        while not self.stop.is_set():
            req = self._next()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", self.path, body=req.SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf"})
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                time.sleep(0.05)
                continue
            if ok:
                self._ok(req)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def crash_config(tmp_path, mode: str, **yaml_options) -> tuple[int, int, str, str]:
    """(gRPC port, HTTP port, config path, database path) of a crash test; ``mode`` journal or direct."""
    g, h = free_port(), free_port()
    receiver_extra = f"    storage: {{directory: {tmp_path / 'journal'}}}" if mode == "journal" else ""
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(collector_yaml(str(tmp_path), g, h, receiver_extra=receiver_extra, **yaml_options))
    return g, h, str(cfg), str(tmp_path / "spans.sqlite")


@pytest.mark.parametrize("mode", ["journal", "direct"])
def test_every_acknowledged_span_survives_kill_9_exactly_once(tmp_path, mode):
    g, h, cfg, db = crash_config(tmp_path, mode, real_storage=True)
    journal_dir = tmp_path / "journal"

    proc = start_collector(cfg, g, h)
    load = Load(g, h)
    time.sleep(2.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    load.finish()
    acked = set(load.acked)
    assert load.requests_ok >= 10, "the load never got going"
    before_restart = len(acked & set(stored_spans(db)))
    print(f"{mode}: {len(acked)} spans acknowledged, {before_restart} stored at the kill")

    proc = start_collector(cfg, g, h)
    try:
        stored = _wait_stored(db, acked, timeout=60)
        missing = acked - set(stored)
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged spans lost"
        duplicated = [k for k, rows in stored.items() if rows > 1]
        assert not duplicated, f"{len(duplicated)} spans stored more than once after replay and retries"
        assert_serves_after_restart(g, db)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    if mode == "journal":
        q = DiskQueue(str(journal_dir))
        assert q.pending == 0, "the journal was not drained and checkpointed"
        q.close()


def assert_serves_after_restart(grpc_port: int, db: str) -> None:
    req = make_request(3, 9_999_999)
    code, _, _ = grpc_export(grpc_port, req.SerializeToString())
    assert code == grpc.StatusCode.OK
    assert span_keys(req) <= set(_wait_stored(db, span_keys(req), 10))


# -- the journal in process ---------------------------------------------------------------------


def test_journal_acknowledges_before_a_slow_exporter_commits(tmp_path):
    g, h = free_port(), free_port()
    c = InProcessCollector(collector_yaml(str(tmp_path), g, h, receiver_extra=f"    storage: {{directory: {tmp_path}/j}}",
                                          exporter_extra="    delay: 1s"))
    try:
        req = make_request(5, 1)
        started = time.monotonic()
        code, _, _ = grpc_export(g, req.SerializeToString())
        assert code == grpc.StatusCode.OK
        assert time.monotonic() - started < 0.8, "the OK waited for the exporter"
        assert not span_keys(req) <= set(stored_spans(f"{tmp_path}/spans.sqlite"))
        assert span_keys(req) <= set(_wait_stored(f"{tmp_path}/spans.sqlite", span_keys(req), 10))
    finally:
        c.stop()


def test_full_journal_answers_with_backpressure_then_recovers(tmp_path):
    g, h = free_port(), free_port()
    c = InProcessCollector(collector_yaml(
        str(tmp_path), g, h, grpc_extra="        max_recv_msg_size_mib: 1", http_extra="        max_request_body_size: 1MiB",
        receiver_extra=f"    storage: {{directory: {tmp_path}/j, max_size: 2MiB}}", exporter_extra="    delay: 1s"))
    try:
        big = make_request(1, 1)
        big.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="blob").value.string_value = "x" * 150_000
        codes, retry_after = [], None
        for seed in range(2, 60):
            req = make_request(1, seed)
            req.MergeFrom(big)
            status, headers, _ = http_post(h, req.SerializeToString())
            codes.append(status)
            if status == 429:
                retry_after = headers.get("Retry-After")
                break
        assert 429 in codes and codes[0] == 200
        assert retry_after is not None and int(retry_after) >= 1
        code, _, trailers = grpc_export(g, big.SerializeToString())
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "google.rpc.retryinfo-bin" in dict(trailers)
        # the exporter catches up, the journal frees its segments, requests are taken again
        deadline = time.monotonic() + 20
        while http_post(h, make_request(1, 99).SerializeToString())[0] != 200:
            assert time.monotonic() < deadline, "the journal never freed space"
            time.sleep(0.2)
    finally:
        c.stop()


def test_journal_feeds_from_disk_when_nothing_is_cached(tmp_path):
    """``memory_cache: 0``: every request is decoded again from its journal record (JSON and protobuf),
    with the same partial-success outcome as at intake (the path a replay takes)."""
    import json

    g, h = free_port(), free_port()
    db = f"{tmp_path}/spans.sqlite"
    c = InProcessCollector(collector_yaml(str(tmp_path), g, h,
                                          receiver_extra=f"    storage: {{directory: {tmp_path}/j, memory_cache: 0}}"))
    try:
        proto_req = make_request(3, 1)
        proto_req.resource_spans[0].scope_spans[0].spans[0].span_id = bytes(8)  # rejected
        assert http_post(h, proto_req.SerializeToString())[0] == 200
        json_req = make_request(2, 2)
        status, _, body = http_post(h, json.dumps(otlp_json(json_req)).encode(), "application/json")
        assert status == 200 and json.loads(body) == {}
        expected = (span_keys(proto_req) | span_keys(json_req)) - {(proto_req.resource_spans[0].scope_spans[0]
                                                                   .spans[0].trace_id.hex(), bytes(8).hex())}
        stored = _wait_stored(db, expected, 10)
        assert expected <= set(stored) and len(stored) == 4
    finally:
        c.stop()


def test_journal_keeps_acknowledging_through_an_exporter_outage_and_delivers_after(tmp_path):
    g, h = free_port(), free_port()
    db, outage = f"{tmp_path}/spans.sqlite", tmp_path / "db-down"
    outage.touch()
    c = InProcessCollector(collector_yaml(str(tmp_path), g, h, receiver_extra=f"    storage: {{directory: {tmp_path}/j}}",
                                          exporter_extra=f"    down_while: {outage}"))
    try:
        sent = set()
        for seed in range(1, 21):
            req = make_request(10, seed)
            code, _, _ = grpc_export(g, req.SerializeToString(), timeout=5)
            assert code == grpc.StatusCode.OK  # safe in the journal, although storage is down
            sent |= span_keys(req)
        assert not set(stored_spans(db)) & sent
        outage.unlink()
        assert sent <= set(_wait_stored(db, sent, 15))
    finally:
        c.stop()
