"""Bounded fuzzing: arbitrary and mutated bytes at both endpoints; only well-defined answers, no crash."""

from __future__ import annotations

import gzip
import json
import socket

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.receiver_helpers import InProcessCollector, collector_yaml, free_port, make_request
from tests.test_receiver_protocol import assert_serves, grpc_export, http_post

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
VALID = make_request(3, 42).SerializeToString()


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("fuzz"))
    g, h = free_port(), free_port()
    c = InProcessCollector(collector_yaml(tmp, g, h))
    c.grpc_port, c.http_port, c.db, c.seed = g, h, f"{tmp}/spans.sqlite", 5000
    c.channel = grpc.insecure_channel(f"127.0.0.1:{g}")
    yield c
    c.channel.close()
    c.stop()


def _mutated(draw_bytes: bytes, positions: list[int]) -> bytes:
    """The valid request with some bytes overwritten: deep inside the protobuf, not just at the top."""
    body = bytearray(VALID)
    for i, pos in enumerate(positions):
        body[pos % len(body)] = draw_bytes[i % len(draw_bytes)] if draw_bytes else 0
    return bytes(body)


@st.composite
def bodies(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    return _mutated(draw(st.binary(min_size=1, max_size=16)), draw(st.lists(st.integers(0, 10_000), max_size=8)))


@st.composite
def json_bodies(draw):
    """Random JSON shaped roughly like OTLP/JSON, so the decoder's deeper paths are reached."""
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
    value = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.sampled_from(
                                                          ["traceId", "spanId", "name", "kind", "spans",
                                                           "scopeSpans", "resourceSpans", "attributes", "key",
                                                           "value", "intValue", "startTimeUnixNano", "status",
                                                           "code", "links", "events"]), inner, max_size=4)),
                         max_leaves=12)
    return json.dumps({"resourceSpans": draw(value)}).encode()


@FUZZ
@given(body=bodies())
def test_grpc_answers_arbitrary_bytes_with_ok_or_invalid_argument(collector, body):
    code, _, _ = grpc_export(collector.grpc_port, body, channel=collector.channel)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)


@FUZZ
@given(body=bodies(), content_type=st.sampled_from(["application/x-protobuf", "application/json"]),
       compress=st.booleans())
def test_http_answers_arbitrary_bytes_with_200_or_400(collector, body, content_type, compress):
    headers = {"Content-Encoding": "gzip"} if compress else {}
    status, _, _ = http_post(collector.http_port, gzip.compress(body) if compress else body, content_type,
                             headers=headers)
    assert status in (200, 400)


@settings(FUZZ, max_examples=60)  # generating nested JSON is the slow part
@given(body=json_bodies())
def test_http_answers_random_otlp_shaped_json_with_200_or_400(collector, body):
    status, _, _ = http_post(collector.http_port, body, "application/json")
    assert status in (200, 400)


@settings(FUZZ, max_examples=40)
@given(raw=st.binary(min_size=1, max_size=512), to_grpc=st.booleans())
def test_raw_bytes_on_the_sockets_are_survived(collector, raw, to_grpc):
    """Not even HTTP or HTTP/2: whatever comes back (or not), the server must go on."""
    with socket.create_connection(("127.0.0.1", collector.grpc_port if to_grpc else collector.http_port),
                                  timeout=2) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(1024)
        except OSError:
            pass


def test_still_serves_after_fuzzing(collector):
    assert_serves(collector)
