"""OTLP receiver protocol behaviour through real sockets: SDK exporters, OTLP/JSON, every error path.

Each error test also checks the collector still serves a valid request on both protocols.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.receiver_helpers import (InProcessCollector, collector_yaml, free_port, make_request, otlp_json,
                                    span_keys, stored_spans)

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("protocol"))
    g, h = free_port(), free_port()
    c = InProcessCollector(collector_yaml(tmp, g, h, grpc_extra="        max_recv_msg_size_mib: 1",
                                          http_extra="        max_request_body_size: 1MiB"))
    c.grpc_port, c.http_port, c.db = g, h, f"{tmp}/spans.sqlite"
    c.seed = 1000
    yield c
    c.stop()


def next_seed(c) -> int:
    c.seed += 1
    return c.seed


def grpc_export(port: int, body: bytes, metadata=(), timeout: float = 10, channel=None):
    """Raw bytes to Export: (status code, response bytes or None, trailing metadata)."""
    own = channel is None
    channel = channel or grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        call = channel.unary_unary(EXPORT)
        try:
            resp, state = call.with_call(body, metadata=metadata, timeout=timeout)
            return grpc.StatusCode.OK, resp, state.trailing_metadata()
        except grpc.RpcError as err:
            return err.code(), err.details(), err.trailing_metadata()
    finally:
        if own:
            channel.close()


def http_post(port: int, body: bytes, content_type: str = "application/x-protobuf", method: str = "POST",
              path: str = "/v1/traces", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def assert_serves(c) -> None:
    """A valid request is accepted and stored on both protocols."""
    req = make_request(2, next_seed(c))
    code, _, _ = grpc_export(c.grpc_port, req.SerializeToString())
    assert code == grpc.StatusCode.OK
    req2 = make_request(2, next_seed(c))
    status, _, _ = http_post(c.http_port, req2.SerializeToString())
    assert status == 200
    assert span_keys(req) | span_keys(req2) <= set(stored_spans(c.db))


def status_of(body: bytes, as_json: bool) -> status_pb2.Status:
    if as_json:
        data = json.loads(body)
        return status_pb2.Status(code=data.get("code", 0), message=data.get("message", ""))
    return status_pb2.Status.FromString(body)


# -- official SDK exporters ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_sdk_exporters_deliver_spans_over_grpc_and_http(collector, compression):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    grpc_exp = GrpcExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True,
                            compression=grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression)
    http_exp = HttpExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/traces",
                            compression=HttpCompression.Gzip if compression == "gzip" else HttpCompression.NoCompression)
    expected = set()
    for exporter in (grpc_exp, http_exp):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        for i in range(3):
            with tracer.start_as_current_span(f"chat gpt-4o {i}", attributes={"gen_ai.usage.input_tokens": 10}) as s:
                ctx = s.get_span_context()
                expected.add((f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"))
        provider.shutdown()
    assert expected <= set(stored_spans(collector.db))


# -- OTLP/JSON ----------------------------------------------------------------------------------


def test_otlp_json_hex_ids_enum_names_and_int64_strings_in_camel_and_snake_case(collector):
    tid, sid = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
            "scopeSpans": [{"scope": {"name": "s"}, "spans": [
                {"traceId": tid, "spanId": sid, "name": "camel", "kind": "SPAN_KIND_CLIENT",
                 "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
                 "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}}],
                 "status": {"code": 2}},
                {"trace_id": tid, "span_id": "eee19b7ec3c1b175", "parent_span_id": sid, "name": "snake",
                 "kind": 3, "start_time_unix_nano": 1700000000000000000, "end_time_unix_nano": "1700000000100000000"},
            ]}],
        }],
    }
    status, headers, raw = http_post(collector.http_port, json.dumps(body).encode(), "application/json")
    assert status == 200, raw
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw) == {}
    stored = stored_spans(collector.db)
    assert (tid, sid) in stored and (tid, "eee19b7ec3c1b175") in stored


def test_json_response_to_json_and_protobuf_to_protobuf_with_gzip(collector):
    req = make_request(1, next_seed(collector))
    status, headers, raw = http_post(collector.http_port, gzip.compress(req.SerializeToString()),
                                     headers={"Content-Encoding": "gzip"})
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(raw) == ExportTraceServiceResponse()
    assert span_keys(req) <= set(stored_spans(collector.db))


# -- partial success ------------------------------------------------------------------------------


def _bad_id_request(seed: int):
    req = make_request(5, seed)
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = bytes(16)  # all zero
    spans[1].span_id = b"\x01\x02"  # not 8 bytes
    spans[2].end_time_unix_nano = spans[2].start_time_unix_nano - 1  # ends before it starts
    good = {(s.trace_id.hex(), s.span_id.hex()) for s in list(spans)[3:]}
    return req, good


def test_bad_ids_are_rejected_with_partial_success_over_grpc(collector):
    req, good = _bad_id_request(next_seed(collector))
    code, resp, _ = grpc_export(collector.grpc_port, req.SerializeToString())
    assert code == grpc.StatusCode.OK
    result = ExportTraceServiceResponse.FromString(resp)
    assert result.partial_success.rejected_spans == 3
    assert "trace id" in result.partial_success.error_message
    stored = set(stored_spans(collector.db))
    assert good <= stored and len(span_keys(req) & stored) == 2
    assert_serves(collector)


@pytest.mark.parametrize("as_json", [False, True])
def test_bad_ids_are_rejected_with_partial_success_over_http(collector, as_json):
    req, good = _bad_id_request(next_seed(collector))
    if as_json:
        data = otlp_json(req)
        spans = req.resource_spans[0].scope_spans[0].spans
        data["resourceSpans"][0]["scopeSpans"][0]["spans"][3]["spanId"] = "not-hex"
        good.discard((spans[3].trace_id.hex(), spans[3].span_id.hex()))
        body, ctype = json.dumps(data).encode(), "application/json"
    else:
        body, ctype = req.SerializeToString(), "application/x-protobuf"
    status, headers, raw = http_post(collector.http_port, body, ctype)
    assert status == 200
    if as_json:
        partial = json.loads(raw)["partialSuccess"]
        assert int(partial["rejectedSpans"]) == 4 and partial["errorMessage"]
    else:
        assert ExportTraceServiceResponse.FromString(raw).partial_success.rejected_spans == 3
    assert good <= set(stored_spans(collector.db))
    assert_serves(collector)


# -- undecodable requests ---------------------------------------------------------------------------

GARBAGE = b"\xff\xfe this is not protobuf \x00\x01\x02" * 3


def test_garbage_truncated_and_empty_requests_over_grpc(collector):
    whole = make_request(3, next_seed(collector)).SerializeToString()
    for body in (GARBAGE, whole[: len(whole) // 2]):
        code, details, _ = grpc_export(collector.grpc_port, body)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "protobuf" in details
    code, resp, _ = grpc_export(collector.grpc_port, b"")  # empty request: valid, nothing to store
    assert code == grpc.StatusCode.OK and ExportTraceServiceResponse.FromString(resp) == ExportTraceServiceResponse()
    assert_serves(collector)


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"])
def test_garbage_and_truncated_bodies_over_http_get_400_with_a_status_in_their_encoding(collector, content_type):
    as_json = content_type == "application/json"
    whole = make_request(3, next_seed(collector)).SerializeToString()
    bodies = [GARBAGE, b'{"resourceSpans": [' if as_json else whole[:-7]]
    for body in bodies:
        status, headers, raw = http_post(collector.http_port, body, content_type)
        assert status == 400
        assert headers["Content-Type"] == content_type
        st = status_of(raw, as_json)
        assert st.code == code_pb2.INVALID_ARGUMENT and st.message
    assert_serves(collector)


def test_empty_http_bodies(collector):
    assert http_post(collector.http_port, b"")[0] == 200  # empty protobuf request
    assert http_post(collector.http_port, b"{}", "application/json")[0] == 200
    assert http_post(collector.http_port, b"", "application/json")[0] == 400
    assert_serves(collector)


@pytest.mark.parametrize("body", [
    {"resourceSpans": "nope"},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 12345}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_NOPE"}]}]}]},
    [1, 2, 3],
])
def test_json_with_wrong_types_gets_400(collector, body):
    status, headers, raw = http_post(collector.http_port, json.dumps(body).encode(), "application/json")
    assert status == 400, raw
    assert status_of(raw, True).code == code_pb2.INVALID_ARGUMENT
    assert_serves(collector)


# -- sizes and bombs ---------------------------------------------------------------------------------


def test_grpc_message_over_max_recv_msg_size_is_resource_exhausted(collector):
    req = make_request(1, next_seed(collector))
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="big").value.string_value = "x" * (1 << 20)
    code, details, _ = grpc_export(collector.grpc_port, req.SerializeToString())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert_serves(collector)


def test_http_body_over_max_request_body_size_is_413(collector):
    body = b"\x00" * ((1 << 20) + 1)
    status, headers, raw = http_post(collector.http_port, body)
    assert status == 413
    assert status_of(raw, False).code == code_pb2.RESOURCE_EXHAUSTED
    assert_serves(collector)


def test_chunked_body_over_the_limit_is_413_and_a_chunked_body_under_it_works(collector):
    req = make_request(2, next_seed(collector))
    for payload, expected in ((req.SerializeToString(), 200), (b"\x00" * ((1 << 20) + 10), 413)):
        conn = http.client.HTTPConnection("127.0.0.1", collector.http_port, timeout=10)
        chunks = [payload[i:i + 65536] for i in range(0, len(payload), 65536)]
        conn.request("POST", "/v1/traces", body=iter(chunks), encode_chunked=True,
                     headers={"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == expected
        conn.close()
    assert span_keys(req) <= set(stored_spans(collector.db))
    assert_serves(collector)


def test_gzip_bomb_is_refused_with_413_without_inflating_it(collector):
    bomb = gzip.compress(b"\x00" * (200 << 20), compresslevel=9)  # 200 MiB of zeros in ~200 KiB
    assert len(bomb) < 1 << 20
    started = time.monotonic()
    status, _, raw = http_post(collector.http_port, bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert time.monotonic() - started < 5
    assert_serves(collector)


def test_corrupt_gzip_is_400_and_unknown_encoding_is_415(collector):
    status, _, _ = http_post(collector.http_port, b"\x1f\x8b not really gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400
    status, _, raw = http_post(collector.http_port, b"abc", headers={"Content-Encoding": "br"})
    assert status == 415
    assert_serves(collector)


# -- HTTP routing -----------------------------------------------------------------------------------


def test_wrong_method_wrong_content_type_and_unknown_path(collector):
    status, headers, raw = http_post(collector.http_port, b"", method="GET")
    assert status == 405 and headers["Allow"] == "POST" and raw == b"405 method not allowed, supported: [POST]"
    status, headers, raw = http_post(collector.http_port, b"a=b", "application/x-www-form-urlencoded")
    assert status == 415 and b"application/x-protobuf" in raw
    status, _, _ = http_post(collector.http_port, b"", path="/v1/metrics")
    assert status == 404
    assert_serves(collector)


def test_content_type_parameters_are_accepted(collector):
    req = make_request(1, next_seed(collector))
    status, _, _ = http_post(collector.http_port, json.dumps({}).encode(), "application/json; charset=utf-8")
    assert status == 200
    status, _, _ = http_post(collector.http_port, req.SerializeToString(), "Application/X-Protobuf")
    assert status == 200


def test_malformed_http_and_abrupt_disconnects_do_not_hurt(collector):
    for raw in (b"\x16\x03\x01garbage\r\n\r\n", b"POST /v1/traces HTTP/1.1\r\nContent-Length: 100\r\n"
                b"Content-Type: application/x-protobuf\r\n\r\nshort", b"GET / HTTP/9.9\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", collector.http_port), timeout=5) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert_serves(collector)


def test_expect_100_continue_gets_413_before_an_oversized_body_is_sent(collector):
    with socket.create_connection(("127.0.0.1", collector.http_port), timeout=5) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    req = make_request(1, next_seed(collector))
    body = req.SerializeToString()
    with socket.create_connection(("127.0.0.1", collector.http_port), timeout=5) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
        assert s.recv(4096).startswith(b"HTTP/1.1 100")
        s.sendall(body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    assert_serves(collector)
