"""Invalid UTF-8 in a protobuf string field costs only that value (issue 17.2).

upb refuses a whole proto3 message when one ``string`` field is not UTF-8, so one span with a bad
attribute used to get the whole request INVALID_ARGUMENT, and the SDK dropped the good spans.
Every string field a span can carry is poisoned here (name, attribute key and value, nested array
and kvlist values, event name, resource attribute, status message), over a real gRPC channel, a
real HTTP request (protobuf and JSON), into a real SQLite file.
"""

from __future__ import annotations

import json

import grpc
import pytest

from tests.hostile.data_support import config, grpc_export, http_export, llm_attrs, parse_response, rows, span_request
from exporters.storage.store import sqlite_url

REPLACED = "\ufffd"


def _poisoned_body(trace: int) -> bytes:
    """Three spans; the middle one carries invalid UTF-8 in every kind of string field.  Markers
    of the same length are swapped for bad bytes after serialising (lengths stay valid)."""
    req = span_request(
        {"trace": trace, "span": 1, "name": "good-1", "attrs": llm_attrs()},
        {"trace": trace, "span": 2, "name": "NAME@@", "attrs": {"KEY@@": "VALUE@@", "ok": "fine"}},
        {"trace": trace, "span": 3, "name": "good-3", "attrs": llm_attrs()},
        resource={"service.name": "svc", "res": "RES@@"})
    middle = req.resource_spans[0].scope_spans[0].spans[1]
    middle.status.message = "STATUS@@"
    middle.events.add(name="EVENT@@")
    nested = middle.attributes.add(key="nested").value.kvlist_value.values.add(key="list")
    nested.value.array_value.values.add().string_value = "DEEP@@"
    body = req.SerializeToString()
    for marker in (b"NAME@@", b"KEY@@", b"VALUE@@", b"RES@@", b"STATUS@@", b"EVENT@@", b"DEEP@@"):
        assert marker in body
        body = body.replace(marker, marker[:-2] + b"\xff\xfe")
    return body


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_bad_utf8_in_one_span_keeps_every_span(collector_factory, tmp_path, transport):
    path = tmp_path / "spans.db"
    c = collector_factory(config("sqlite", {"path": str(path)}))
    body = _poisoned_body(trace=0xAB)
    if transport == "grpc":
        code, response = grpc_export(c.grpc_endpoint, body)
        assert code == grpc.StatusCode.OK, response
    else:
        status, _, raw = http_export(c.http_url, body)
        assert status == 200, raw
        response = parse_response(raw)
    # Accepted in full; the spec's partial success with 0 rejected carries the warning.
    assert response.partial_success.rejected_spans == 0
    assert "invalid UTF-8" in response.partial_success.error_message
    url = sqlite_url(path)
    stored = rows(url, "SELECT span_id, name, status_message, attributes, resource_attributes, events "
                       "FROM spans ORDER BY span_id")
    assert [r[1] for r in stored] == ["good-1", f"NAME{REPLACED}{REPLACED}", "good-3"]
    _, _, status_message, attributes, resource, events = stored[1]
    attributes = json.loads(attributes)
    assert attributes[f"KEY{REPLACED}{REPLACED}"] == f"VALUE{REPLACED}{REPLACED}" and attributes["ok"] == "fine"
    assert attributes["nested"] == {"list": [f"DEEP{REPLACED}{REPLACED}"]}
    assert status_message == f"STATUS{REPLACED}{REPLACED}"
    assert json.loads(resource)["res"] == f"RES{REPLACED}{REPLACED}"
    assert json.loads(events)[0]["name"] == f"EVENT{REPLACED}{REPLACED}"
    assert c.metric("otelcol_receiver_repaired_values", transport=transport) == 7
    assert c.metric("otelcol_receiver_accepted_spans", transport=transport) == 3


def test_bad_utf8_in_otlp_json_keeps_the_request(collector_factory, tmp_path):
    path = tmp_path / "spans.db"
    c = collector_factory(config("sqlite", {"path": str(path)}))
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "%032x" % 7, "spanId": "%016x" % 1, "name": "BAD@@"},
        {"traceId": "%032x" % 7, "spanId": "%016x" % 2, "name": "good"}]}]}]}).encode()
    status, _, raw = http_export(c.http_url, body.replace(b"BAD@@", b"BAD\xc3\x28"), "application/json")
    assert status == 200, raw
    assert "invalid UTF-8" in json.loads(raw)["partialSuccess"]["errorMessage"]
    assert rows(sqlite_url(path), "SELECT name FROM spans ORDER BY span_id") == [(f"BAD{REPLACED}(",), ("good",)]


def test_a_body_that_is_not_protobuf_is_still_refused(collector_factory):
    """The lenient path repairs strings only; garbage stays INVALID_ARGUMENT / 400."""
    c = collector_factory(config("debug", {}))
    code, (details, _) = grpc_export(c.grpc_endpoint, b"\xff\xfe\xfd not protobuf")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "invalid protobuf" in details
    status, _, _ = http_export(c.http_url, b"\xff\xfe\xfd not protobuf")
    assert status == 400
