"""Slow and stalled clients (issue 17, item 3): each costs a bounded slot for a bounded time.

* On the shipped ``otel-config.yaml``: with 64 HTTP connections dripping a body one byte at a time
  and 8 gRPC calls that sent their headers and never their message, a normal client (the official
  SDK exporters, gRPC and HTTP) is still served, and what it sent is stored.
* With short timeouts: a slow HTTP body gets 408 at the whole-request read deadline (not per read);
  a stalled gRPC call is cancelled at ``read_timeout``; idle connections to the metrics port give
  their threads back; the listen backlog takes a burst of connections.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time

import grpc

from tests.conftest import http_get, sdk_tracer_provider
from bench.hostile_slow_clients import EXPORT, Attack, slow_http_body
from tests.hostile.shipped import otlp_to_debug, start_shipped, threads_of
from tests.receiver_helpers import make_request

def _stored(db, names: set[str], timeout: float = 30.0) -> set[str]:
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while time.monotonic() < deadline:
        try:
            con = sqlite3.connect(db)
            try:
                found = {r[0] for r in con.execute("SELECT name FROM spans")} & names
            finally:
                con.close()
        except sqlite3.OperationalError:
            pass
        if found == names:
            break
        time.sleep(0.2)
    return found


def test_normal_clients_are_served_during_a_slow_client_attack_on_the_shipped_config(tmp_path):
    collector = start_shipped(tmp_path)
    attack = None
    try:
        attack = Attack(collector.http_port, collector.grpc_port, slow_bodies=64, stalled_calls=8)
        time.sleep(1.0)  # every attacker is connected and waiting
        names = set()
        for protocol, endpoint in (("grpc", collector.grpc_endpoint), ("http", collector.http_url)):
            provider = sdk_tracer_provider(endpoint, protocol, service=f"honest-{protocol}")
            tracer = provider.get_tracer("honest")
            for i in range(5):
                started = time.monotonic()
                name = f"honest-{protocol}-{i}"
                with tracer.start_as_current_span(name):
                    pass  # SimpleSpanProcessor: exported (and acknowledged) before this returns
                names.add(name)
                assert time.monotonic() - started < 10, f"{name} took {time.monotonic() - started:.1f}s"
            provider.shutdown()
        assert _stored(collector.extra["env"]["GENAI_COLLECTOR_DB"], names) == names
        assert not any(call.done() for call in attack.calls)  # they were really open all along
    finally:
        if attack is not None:
            attack.stop()
        collector.stop()


SHORT = otlp_to_debug("""\
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
        max_concurrent_requests: 2
        read_timeout: 2s
      http:
        endpoint: 127.0.0.1:{http_port}
        max_concurrent_requests: 2
        read_timeout: 2s
        idle_timeout: 3s
""")


def test_a_slow_http_body_gets_408_at_the_whole_request_deadline(collector_factory):
    c = collector_factory(SHORT)
    sock = slow_http_body(c.http_port)
    started = time.monotonic()
    answer = b""
    sock.settimeout(0.5)
    while time.monotonic() - started < 15:  # a byte every 0.5 s: each read is quick, the whole is not
        try:
            sock.send(b"\n")
            answer += sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if answer:
            break
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 1.5 < took < 6, took
    sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout(collector_factory):
    c = collector_factory(SHORT)
    sock = socket.create_connection(("127.0.0.1", c.http_port), timeout=20)
    started = time.monotonic()
    assert sock.recv(1) == b""  # closed by the server, not by our timeout
    assert 2 < time.monotonic() - started < 10
    sock.close()


def export_as_sdk(export, body: bytes, within: float = 10.0) -> None:
    """Export as the SDK exporters do: RESOURCE_EXHAUSTED (with RetryInfo) is retried after 1 s."""
    deadline = time.monotonic() + within
    while True:
        try:
            export(body, timeout=5)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def test_a_stalled_grpc_call_is_cancelled_and_never_blocks_exports(collector_factory):
    c = collector_factory(SHORT)
    attack = Attack(c.http_port, c.grpc_port, slow_bodies=0, stalled_calls=3)  # more than the 2 slots
    try:
        channel = grpc.insecure_channel(c.grpc_endpoint)
        export = channel.unary_unary(EXPORT)
        for i in range(3):
            export_as_sdk(export, make_request(2, 500 + i).SerializeToString())
        started = time.monotonic()
        for call in attack.calls:
            code = call.exception(timeout=15).code()
            assert code == grpc.StatusCode.CANCELLED, code
        assert time.monotonic() - started < 10
        channel.close()
    finally:
        attack.stop()


def test_idle_metrics_connections_give_their_threads_back(collector_factory):
    c = collector_factory(SHORT)
    base = threads_of(c.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", c.metrics_port), timeout=30) for _ in range(150)]
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and threads_of(c.proc.pid) < base + 100:
            time.sleep(0.1)
        assert threads_of(c.proc.pid) >= base + 100  # a thread each, as long as they are open
        assert http_get(f"http://127.0.0.1:{c.metrics_port}/healthz")[0] == 200  # still served
        deadline = time.monotonic() + 30  # the idle timeout (10 s) closes them
        while time.monotonic() < deadline and threads_of(c.proc.pid) > base + 10:
            time.sleep(0.2)
        assert threads_of(c.proc.pid) <= base + 10
        assert all(s.recv(1) == b"" for s in idle)
    finally:
        for s in idle:
            s.close()


def test_a_burst_of_connections_fits_the_listen_backlog(collector_factory):
    """The standard library's backlog of 5 dropped SYNs under a burst (clients waited 1 s+ to retry)."""
    c = collector_factory(SHORT)
    socks = []
    started = time.monotonic()
    for _ in range(100):
        socks.append(socket.create_connection(("127.0.0.1", c.http_port), timeout=5))
    assert time.monotonic() - started < 3
    for s in socks:
        s.close()


def test_every_listener_of_the_shipped_config_closes_a_silent_connection(tmp_path):
    """A connection that never sends a byte is closed by every threaded listener the shipped config
    opens (gRPC: the handshake timeout; metrics and prometheus: their idle timeouts).  OTLP/HTTP's
    own idle_timeout is tested above with a short setting (its default is 60 s); the UI is an
    asyncio server (uvicorn), where a silent connection holds no thread."""
    collector = start_shipped(tmp_path)
    env = collector.extra["env"]
    try:
        listeners = {name: int(value.rpartition(":")[2]) for name, value in env.items()
                     if name.startswith("GENAI_COLLECTOR_") and name.endswith(("_ENDPOINT", "_ADDRESS"))
                     and name not in ("GENAI_COLLECTOR_HTTP_ENDPOINT", "GENAI_COLLECTOR_UI_ENDPOINT")}
        assert len(listeners) >= 2, listeners
        silent = {name: socket.create_connection(("127.0.0.1", port), timeout=30) for name, port in listeners.items()}
        started = time.monotonic()
        still_open = []
        for name, sock in silent.items():
            try:
                while sock.recv(4096):  # gRPC sends its HTTP/2 settings first
                    pass
            except socket.timeout:
                still_open.append(name)
            except ConnectionResetError:
                pass
            finally:
                sock.close()
        assert not still_open, f"not closed after {time.monotonic() - started:.0f}s: {still_open}"
    finally:
        collector.stop()
