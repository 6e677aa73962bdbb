"""``genai-collector validate`` as a user runs it: exit codes and the exact messages."""

from __future__ import annotations

import subprocess

import pytest

from config.loader import expand_env
from config.schema import ConfigErrors, parse_bytesize, parse_duration
from config.service import parse_config
from tests.conftest import REPO, collector_cmd

GOOD = """
receivers:
  otlp:
    protocols:
      grpc:
processors:
  batch:
    timeout: 200ms
  batch/big:
    send_batch_size: 20000
  memory_limiter:
    limit_mib: 32
exporters:
  debug:
  debug/loud:
    verbosity: detailed
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [debug]
    traces/pii:
      receivers: [otlp]
      processors: [batch/big]
      exporters: [debug/loud]
"""


def validate(tmp_path, text: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    import os

    return subprocess.run(collector_cmd("validate", "--config", str(path)), cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text)
    return [str(e) for e in info.value.errors]


def test_validate_accepts_a_good_config(tmp_path):
    result = validate(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr
    assert "valid (2 pipeline(s): traces, traces/pii)" in result.stdout


def test_shipped_default_config_is_valid():
    result = subprocess.run(collector_cmd("validate", "--config", "otel-config.yaml"), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_validate_prints_every_error_with_path_and_line(tmp_path):
    bad = """receivers:
  otlp:
    protocols:
      grpc:
        endpoint: nowhere
processors:
  batch:
    send_batch_size: -1
    bogus: 1
  foo/bar: {}
exporters:
  debug:
    verbosity: loud
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, missing]
      exporters: []
"""
    result = validate(tmp_path, bad)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "error: line 9: processors::batch::bogus: unknown key (valid keys: send_batch_max_size, " \
           "send_batch_size, timeout)" in lines
    assert "error: line 8: processors::batch::send_batch_size: must be >= 1, got -1" in lines
    assert any('processors::foo/bar: unknown type: "foo" for id: "foo/bar" (valid values: [' in l for l in lines)
    assert "error: line 13: exporters::debug::verbosity: must be one of basic, normal, detailed" in lines
    assert 'error: line 18: service::pipelines::traces::processors: references processor "missing" ' \
           "which is not configured" in lines
    assert "error: line 19: service::pipelines::traces::exporters: must have at least one exporter" in lines
    assert any("receivers::otlp::protocols::grpc::endpoint: invalid value 'nowhere'" in l for l in lines)
    # an invalid component is not also reported as "not configured"
    assert not any('references processor "batch"' in l for l in lines)


def test_yaml_syntax_error_names_the_line(tmp_path):
    result = validate(tmp_path, "receivers:\n  otlp:\n    protocols:\n\tgrpc: {}\n")
    assert result.returncode == 1
    assert "config.yaml: YAML syntax error at line 4, column 1: found character '\\t'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_one_clear_line(tmp_path):
    result = subprocess.run(collector_cmd("validate", "--config", str(tmp_path / "nope.yaml")), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: config file not found: {tmp_path / 'nope.yaml'}"


@pytest.mark.parametrize("text,expected", [
    ("service: {pipelines: {}}", "service::pipelines: at least one pipeline is required (e.g. traces)"),
    ("receivers: {otlp: {protocols: {}}}\nexporters: {debug: }\n"
     "service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}",
     "receivers::otlp::protocols: must enable at least one protocol (grpc, http)"),
    ("receivers: {otlp: }\nexporters: {debug: }\n"
     "service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}",
     "receivers::otlp::protocols: required"),
    ("exporters: {debug: }\nservice: {pipelines: {traces: {exporters: [debug]}}}",
     "service::pipelines::traces::receivers: must have at least one receiver"),
    ("exporters: {'9bad': {}}\nservice: {pipelines: {}}", 'exporters::9bad: invalid id "9bad"'),
    ("receivers: {otlp: {protocols: {grpc: }}}\nexporters: {debug: }\nservice: {pipelines: "
     "{profiles: {receivers: [otlp], exporters: [debug]}}}",
     'service::pipelines::profiles: unsupported signal "profiles" (supported: traces, logs, metrics)'),
    ("receivers: {otlp: {protocols: {grpc: }}}\nexporters: {sqlite: {path: x.db}}\nservice: {pipelines: "
     "{metrics/app: {receivers: [otlp], exporters: [sqlite]}}}",
     'service::pipelines::metrics/app::exporters: exporter "sqlite" does not support metrics '
     '(type sqlite supports: logs, traces)'),
    ("receivers: {otlp: {protocols: {grpc: }}}\nprocessors: {genai_cost: }\nexporters: {debug: }\n"
     "service: {pipelines: {logs: {receivers: [otlp], processors: [genai_cost], exporters: [debug]}}}",
     'service::pipelines::logs::processors: processor "genai_cost" does not support logs'),
    ("receivers: {otlp: {protocols: {grpc: }}}\nprocessors: {batch: , genai_cost: }\nexporters: {debug: }\n"
     "service: {pipelines: {traces: {receivers: [otlp], processors: [genai_cost, batch], exporters: [debug]}}}",
     'service::pipelines::traces::processors: processor "batch" acts at the pipeline intake (before any '
     'processor runs), so it must be listed before "genai_cost"'),
    ("receivers: {otlp: {protocols: {grpc: }}}\nprocessors: {batch: , memory_limiter: }\nexporters: {debug: }\n"
     "service: {pipelines: {traces: {receivers: [otlp], processors: [batch, memory_limiter], exporters: [debug]}}}",
     'service::pipelines::traces::processors: processor "memory_limiter" must be listed before "batch"'),
    ("processors: {batch: {timeout: soon}}\nservice: {pipelines: {}}",
     "processors::batch::timeout: invalid duration 'soon'"),
    ("processors: {batch: {send_batch_size: 'many'}}\nservice: {pipelines: {}}",
     "processors::batch::send_batch_size: expected an integer, got string 'many'"),
    ("extra: 1\nservice: {pipelines: {}}", "extra: unknown key"),
    ("service: {pipelines: {}, telemetry: {logs: {encoding: xml}}}",
     "service::telemetry::logs::encoding: must be one of console, json"),
])
def test_config_errors(text, expected):
    assert any(expected in e for e in errors_of(text)), errors_of(text)


def test_duplicate_keys_are_refused():
    errors = errors_of("processors:\n  batch: {}\n  batch: {}\nservice: {pipelines: {}}\n")
    assert any("duplicate key 'batch' (first at line 2)" in e for e in errors)


def test_env_expansion_follows_confmap():
    env = {"PORT": "4317", "NAME": "svc", "FLAG": "true"}
    unset: list[str] = []
    out = expand_env({"a": "${env:PORT}", "b": "x-${env:NAME}-${NAME}", "c": "${env:MISSING:-fallback}",
                      "d": "$${env:NAME}", "e": "${env:FLAG}", "f": "${env:GONE}"}, env, unset)
    assert out == {"a": 4317, "b": "x-svc-svc", "c": "fallback", "d": "${env:NAME}", "e": True, "f": ""}
    assert unset == ["GONE"]


def test_env_values_reach_component_configs(tmp_path):
    text = GOOD.replace("timeout: 200ms", "timeout: ${env:BATCH_TIMEOUT:-1s}")
    cfg = parse_config(text)
    assert cfg.processors["batch"].config.timeout == 1.0
    result = validate(tmp_path, text.replace("${env:BATCH_TIMEOUT:-1s}", "${env:BATCH_TIMEOUT}"),
                      env={"BATCH_TIMEOUT": "forever"})
    assert result.returncode == 1
    assert "processors::batch::timeout: invalid duration 'forever'" in result.stderr


def test_unset_variable_is_warned_about(tmp_path):
    text = GOOD.replace("limit_mib: 32", "limit_mib: ${env:GC_TEST_UNSET_LIMIT:-32}").replace(
        "verbosity: detailed", "verbosity: ${env:GC_TEST_UNSET_VERBOSITY}detailed")
    result = validate(tmp_path, text)
    assert result.returncode == 0
    assert "warning: environment variable GC_TEST_UNSET_VERBOSITY is not set" in result.stderr


def test_units():
    assert parse_duration("200ms") == pytest.approx(0.2)
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration(5) == 5.0
    assert parse_bytesize("16MiB") == 16 * 2**20
    assert parse_bytesize("1GB") == 10**9
    for bad in ("-1s", "1 fortnight", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
