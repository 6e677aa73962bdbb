"""The log and metric model: decoded once (protobuf and OTLP/JSON), validated, encoded back unchanged."""

from __future__ import annotations

import base64
import json

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from collector.model import LOGS, METRICS, Batch
from collector.model_logs import LogBatch, LogRecord
from collector.model_metrics import MetricBatch
from collector.otlp import DecodeFailure, decode, response_bytes

TRACE_ID, SPAN_ID = bytes(range(1, 17)), bytes(range(1, 9))


def logs_request() -> ExportLogsServiceRequest:
    """Every LogRecord field set, two resources and scopes, every AnyValue kind in the body."""
    request = ExportLogsServiceRequest()
    for n in range(2):
        rl = request.resource_logs.add(schema_url=f"https://schema/{n}")
        rl.resource.attributes.add(key="service.name").value.string_value = f"svc{n}"
        rl.resource.dropped_attributes_count = n
        sl = rl.scope_logs.add(schema_url="https://scope")
        sl.scope.name, sl.scope.version, sl.scope.dropped_attributes_count = "scope", "1.0", 3
        sl.scope.attributes.add(key="k").value.bool_value = True
        rec = sl.log_records.add(
            time_unix_nano=1_700_000_000_000_000_000 + n, observed_time_unix_nano=1_700_000_000_000_000_001,
            severity_number=9, severity_text="INFO", flags=1, trace_id=TRACE_ID, span_id=SPAN_ID,
            event_name="gen_ai.user.message", dropped_attributes_count=4)
        body = rec.body.kvlist_value.values
        body.add(key="content").value.string_value = "hello"
        body.add(key="n").value.int_value = -(2**63)
        body.add(key="d").value.double_value = 1.5
        body.add(key="b").value.bytes_value = b"\x00\xff"
        body.add(key="arr").value.array_value.values.add().string_value = "x"
        rec.attributes.add(key="event.name").value.string_value = "old.style"
        sl.log_records.add(body={"string_value": "plain line"}, severity_text="WARN")  # no trace
        sl.log_records.add()  # nothing set at all
    return request


def hex_ids(obj):
    """protobuf's JSON has base64 ids; OTLP/JSON has hex (what SDKs send)."""
    if isinstance(obj, dict):
        return {k: (base64.b64decode(v).hex() if k in ("traceId", "spanId") else hex_ids(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [hex_ids(v) for v in obj]
    return obj


def metrics_request() -> ExportMetricsServiceRequest:
    """One metric of each kind, with exemplars, flags and both number kinds."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add(schema_url="https://schema")
    rm.resource.attributes.add(key="service.name").value.string_value = "app"
    sm = rm.scope_metrics.add()
    sm.scope.name = "meter"
    g = sm.metrics.add(name="g", description="a gauge", unit="1")
    g.metadata.add(key="m").value.string_value = "v"
    g.gauge.data_points.add(as_double=0.25, time_unix_nano=5, flags=1)
    s = sm.metrics.add(name="s", unit="{token}").sum
    s.aggregation_temporality, s.is_monotonic = 1, True
    dp = s.data_points.add(as_int=7, start_time_unix_nano=1, time_unix_nano=2)
    dp.attributes.add(key="gen_ai.token.type").value.string_value = "input"
    dp.exemplars.add(as_int=3, trace_id=TRACE_ID, span_id=SPAN_ID, time_unix_nano=2)
    h = sm.metrics.add(name="h", unit="s").histogram
    h.aggregation_temporality = 2
    h.data_points.add(count=3, sum=1.5, bucket_counts=[1, 2, 0], explicit_bounds=[0.1, 1.0], min=0.01, max=0.9)
    e = sm.metrics.add(name="e").exponential_histogram
    edp = e.data_points.add(count=2, scale=3, zero_count=1, zero_threshold=0.001)
    edp.positive.offset, edp.positive.bucket_counts[:] = -2, [1, 1]
    sm.metrics.add(name="sum").summary.data_points.add(
        count=2, sum=3.0, quantile_values=[{"quantile": 0.5, "value": 1.0}])
    return request


@pytest.mark.parametrize("as_json", [False, True])
def test_logs_round_trip_every_field(as_json):
    request = logs_request()
    body = (json.dumps(hex_ids(json_format.MessageToDict(request))).encode() if as_json
            else request.SerializeToString())
    decoded = decode(body, as_json, LOGS)
    assert decoded.rejected == 0
    batch = decoded.batch
    assert isinstance(batch, LogBatch) and isinstance(batch, Batch) and len(batch) == 6
    assert batch.nbytes == len(body)
    first: LogRecord = batch.records[0]
    assert first.body == {"content": "hello", "n": -(2**63), "d": 1.5, "b": b"\x00\xff", "arr": ["x"]}
    assert first.name == "gen_ai.user.message" and batch.records[0].service_name == "svc0"
    assert batch.records[1].body == "plain line" and batch.records[2].body is None
    assert batch.to_request() == request  # nothing lost, regrouped as it came


def test_log_event_name_falls_back_to_the_attribute():
    rec = decode(logs_request().SerializeToString(), False, LOGS).batch.records[0]
    rec.event_name = ""
    assert rec.name == "old.style"


def test_invalid_log_ids_are_rejected_with_partial_success():
    request = logs_request()
    request.resource_logs[0].scope_logs[0].log_records[0].trace_id = b"\x01\x02"
    decoded = decode(request.SerializeToString(), False, LOGS)
    assert decoded.rejected == 1 and len(decoded.batch) == 5
    assert "invalid trace id '0102'" in decoded.error_message
    response = ExportLogsServiceResponse.FromString(response_bytes(decoded, False, LOGS))
    assert response.partial_success.rejected_log_records == 1


@pytest.mark.parametrize("as_json", [False, True])
def test_metrics_round_trip_every_field(as_json):
    request = metrics_request()
    body = (json.dumps(hex_ids(json_format.MessageToDict(request))).encode() if as_json
            else request.SerializeToString())
    decoded = decode(body, as_json, METRICS)
    batch = decoded.batch
    assert isinstance(batch, MetricBatch) and decoded.rejected == 0
    assert len(batch) == 5  # data points, as the Collector counts metrics
    assert batch.to_request() == request
    views = list(batch.metrics())
    assert [v.name for v in views] == ["g", "s", "h", "e", "sum"]
    assert [v.kind for v in views] == ["gauge", "sum", "histogram", "exponential_histogram", "summary"]
    assert views[0].resource.service_name == "app" and views[1].data_points[0].as_int == 7
    copy = batch.copy()
    assert copy.to_request() == request and copy.resource_metrics[0] is not batch.resource_metrics[0]


def test_unnamed_metrics_are_rejected_with_partial_success():
    request = metrics_request()
    request.resource_metrics[0].scope_metrics[0].metrics[0].name = ""
    decoded = decode(request.SerializeToString(), False, METRICS)
    assert decoded.rejected == 1 and len(decoded.batch) == 4
    response = ExportMetricsServiceResponse.FromString(response_bytes(decoded, False, METRICS))
    assert response.partial_success.rejected_data_points == 1


@pytest.mark.parametrize("signal", [LOGS, METRICS])
def test_undecodable_bodies_are_decode_failures(signal):
    with pytest.raises(DecodeFailure):
        decode(b"\xff\xff\xff", False, signal)
    with pytest.raises(DecodeFailure):
        decode(b"[1]", True, signal)
    with pytest.raises(DecodeFailure):
        decode(b'{"resourceLogs": 3, "resourceMetrics": 3}', True, signal)


def test_batches_merge_and_copy_generically():
    batch = decode(logs_request().SerializeToString(), False, LOGS).batch
    merged = LogBatch.merge([batch, batch.copy()])
    assert len(merged) == 12 and merged.nbytes == 2 * batch.nbytes
    copy = batch.copy()
    copy.records[0].body["content"] = "changed"
    assert batch.records[0].body["content"] == "hello"
    metrics = decode(metrics_request().SerializeToString(), False, METRICS).batch
    assert len(MetricBatch.merge([metrics, metrics.copy()])) == 10
