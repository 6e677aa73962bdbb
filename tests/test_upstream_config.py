"""Config of the upstream exporters: the OTel Collector's keys and defaults, precise errors."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from config.schema import ConfigErrors
from config.service import parse_config
from exporters.otlp import OtlpExporterConfig, grpc_target
from exporters.otlphttp import OtlpHttpExporterConfig, parse_retry_after


def load(exporters: str):
    return parse_config(f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}
exporters:
{exporters}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [{exporters.split(':')[0].strip()}]}}
""")


def errors_of(exporters: str) -> str:
    with pytest.raises(ConfigErrors) as info:
        load(exporters)
    return str(info.value)


def test_defaults_are_the_otel_collectors():
    cfg = load('  otlp: {endpoint: "collector:4317"}').exporters["otlp"].config
    assert isinstance(cfg, OtlpExporterConfig)
    assert (cfg.timeout, cfg.compression, cfg.tls.insecure) == (5.0, "gzip", False)
    r = cfg.retry_on_failure
    assert (r.enabled, r.initial_interval, r.max_interval, r.max_elapsed_time, r.multiplier) == (True, 5, 30, 300, 1.5)
    q = cfg.sending_queue
    assert (q.enabled, q.num_consumers, q.queue_size, q.sizer, q.storage) == (True, 10, 1000, "requests", None)


def test_full_config_with_env_headers_and_persistent_storage(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKEN", "s3cret")
    cfg = load(f"""  otlphttp/vendor:
    endpoint: https://otlp.example.com
    headers: {{authorization: "Bearer ${{env:TOKEN}}"}}
    compression: none
    timeout: 2s
    retry_on_failure: {{initial_interval: 100ms, max_elapsed_time: 0}}
    sending_queue: {{num_consumers: 2, storage: {{directory: "{tmp_path}", max_size: 16MiB}}}}""").exporters
    cfg = cfg["otlphttp/vendor"].config
    assert isinstance(cfg, OtlpHttpExporterConfig)
    assert cfg.urls() == {"traces": "https://otlp.example.com/v1/traces", "logs": "https://otlp.example.com/v1/logs",
                          "metrics": "https://otlp.example.com/v1/metrics"}
    assert cfg.headers == {"authorization": "Bearer s3cret"}
    assert (cfg.compression, cfg.timeout, cfg.retry_on_failure.max_elapsed_time) == ("none", 2.0, 0.0)
    assert cfg.sending_queue.storage.max_size == 16 << 20


def test_a_byte_sized_memory_queue_takes_sizes():
    q = load('  otlp: {endpoint: "x:1", sending_queue: {sizer: bytes, queue_size: 64MiB}}').exporters["otlp"]
    assert q.config.sending_queue.queue_size == 64 << 20


@pytest.mark.parametrize("exporters,message", [
    ("  otlp: {}", "exporters::otlp::endpoint: required"),
    ("  otlphttp: {}", "exporters::otlphttp::endpoint: required"),
    ('  otlphttp: {endpoint: "collector:4318"}', "invalid URL"),
    ('  otlphttp: {traces_endpoint: "ftp://x"}', "exporters::otlphttp::traces_endpoint: invalid value"),
    ('  otlp: {endpoint: "x:1", compression: zstd}', "exporters::otlp::compression: must be one of gzip, none"),
    ('  otlp: {endpoint: "x:1", timeout: soon}', "exporters::otlp::timeout: invalid duration"),
    ('  otlp: {endpoint: "x:1", tls: {cert_file: /c.pem}}', "exporters::otlp::tls::key_file: cert_file and key_file"),
    ('  otlp: {endpoint: "x:1", sending_queue: {queue_size: 0}}', "sending_queue::queue_size: must be >= 1"),
    ('  otlp: {endpoint: "x:1", sending_queue: {storage: {}}}', "sending_queue::storage::directory: required"),
    ('  otlp: {endpoint: "x:1", sending_queue: {storage: {directory: /q, max_size: 1KiB}}}',
     "storage::max_size: must be >= 65536"),
    ('  otlp: {endpoint: "x:1", retry_on_failure: {multiplier: 0.5}}', "retry_on_failure::multiplier: must be >= 1"),
    ('  otlp: {endpoint: "x:1", sending_queue: {persistent: true}}', "sending_queue::persistent: unknown key"),
    ('  otlp: {endpoint: "x:1", headers: {"bad name": v}}', "exporters::otlp::headers::bad name: invalid header"),
    ('  otlphttp: {endpoint: "http://x:1", headers: {x-a: "one\\ntwo"}}', "headers::x-a: header values must be one"),
])
def test_bad_values_name_their_path(exporters, message):
    assert message in errors_of(exporters)


@pytest.mark.parametrize("endpoint,insecure,want", [
    ("collector:4317", False, ("collector:4317", True)),
    ("collector:4317", True, ("collector:4317", False)),
    ("http://collector:4317", False, ("collector:4317", False)),
    ("https://collector:4317/", True, ("collector:4317", True)),
])
def test_grpc_endpoint_scheme_decides_tls(endpoint, insecure, want):
    assert grpc_target(endpoint, insecure) == want


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert 25 <= parse_retry_after(formatdate(time.time() + 30, usegmt=True)) <= 31
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
