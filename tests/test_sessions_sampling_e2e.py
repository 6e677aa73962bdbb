"""genai_session + sampling inside a running collector, fed by the official OpenTelemetry SDK."""

from __future__ import annotations

import json
import sqlite3

from opentelemetry.trace import Status, StatusCode

from tests.conftest import sdk_tracer_provider, wait_for

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
processors:
  genai_session:
    state:
      path: {tmp}/sessions.db
  sampling:
    decision_wait: 1s
    probabilistic:
      sampling_percentage: 0
    keep:
      errors: true
      attributes:
        - key: user.feedback
          values: [negative]
    content_sampling:
      percentage: 0
exporters:
  debug:
    verbosity: detailed
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai_session, sampling]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"""


def exported(collector) -> list[dict]:
    """The detailed debug lines (one JSON document per exported span)."""
    out = []
    for line in collector.log().splitlines():
        start = line.find('{"attributes"')
        if start >= 0:
            out.append(json.loads(line[start:line.rindex("}") + 1]))
    return out


def llm_call(tracer, user: str, *, error: bool = False, feedback: str | None = None) -> None:
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("user.id", user)
        span.set_attribute("gen_ai.input.messages", '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]')
        span.set_attribute("gen_ai.usage.input_tokens", 12)
        if feedback:
            span.set_attribute("user.feedback", feedback)
        if error:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))


def test_sessions_and_keep_rules_through_a_running_collector_and_a_restart(collector_factory, tmp_path):
    collector = collector_factory(CONFIG)
    provider = sdk_tracer_provider(collector.grpc_endpoint, service="chat-api")
    tracer = provider.get_tracer("test")
    llm_call(tracer, "alice")                      # dropped: 0% and no rule
    llm_call(tracer, "alice", error=True)          # kept: error
    llm_call(tracer, "alice", feedback="negative")  # kept: attribute
    provider.shutdown()

    spans = wait_for(lambda: len(exported(collector)) >= 2 and exported(collector))
    assert len(spans) == 2
    sessions = {s["attributes"]["gen_ai.conversation.id"] for s in spans}
    assert len(sessions) == 1 and all(s["attributes"]["session.source"] == "inferred" for s in spans)
    assert all(s["genai"]["user_id"] == "alice" for s in spans)
    # content sampled at 0%: messages gone, metrics kept
    assert all("gen_ai.input.messages" not in s["attributes"] for s in spans)
    assert all(s["attributes"]["gen_ai.usage.input_tokens"] == 12 for s in spans)
    assert collector.metric("otelcol_processor_sampling_traces", decision="kept", reason="error") == 1
    assert collector.metric("otelcol_processor_sampling_traces", decision="kept", reason="attribute") == 1
    wait_for(lambda: collector.metric("otelcol_processor_sampling_traces",
                                      decision="dropped", reason="probabilistic") == 1, timeout=15)
    assert collector.stop() == 0

    # a new process on the same state store continues alice's session
    restarted = collector_factory(CONFIG)
    provider = sdk_tracer_provider(restarted.grpc_endpoint, service="chat-api")
    llm_call(provider.get_tracer("test"), "alice", error=True)
    provider.shutdown()
    (after,) = wait_for(lambda: exported(restarted))
    assert after["attributes"]["gen_ai.conversation.id"] in sessions
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        assert db.execute("SELECT count(*) FROM gc_session_intervals").fetchone()[0] == 1


SESSIONS_ONLY = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
processors:
  genai_session:
    state:
      path: {tmp}/shared-sessions.db
exporters:
  debug:
    verbosity: detailed
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai_session]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"""


def test_two_collector_processes_on_one_store_share_sessions(collector_factory):
    collectors = [collector_factory(SESSIONS_ONLY), collector_factory(SESSIONS_ONLY)]
    providers = [sdk_tracer_provider(c.grpc_endpoint, service="chat-api") for c in collectors]
    for i in range(6):  # a load balancer alternating one user's requests
        llm_call(providers[i % 2].get_tracer("test"), "bob")
    for provider in providers:
        provider.shutdown()
    spans = [s for c in collectors for s in wait_for(lambda c=c: len(exported(c)) >= 3 and exported(c))]
    assert len(spans) == 6
    assert len({s["attributes"]["gen_ai.conversation.id"] for s in spans}) == 1


def test_held_spans_are_exported_when_a_later_span_of_their_trace_fails(collector_factory):
    collector = collector_factory(CONFIG)
    provider = sdk_tracer_provider(collector.grpc_endpoint, service="agent")
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent") as root:
        with tracer.start_as_current_span("step ok"):  # exported first, on its own: held
            pass
        with tracer.start_as_current_span("step failing") as failing:  # its own request: rescues the trace
            failing.set_status(Status(StatusCode.ERROR, "tool crashed"))
        trace_hex = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    names = wait_for(lambda: len(exported(collector)) >= 3 and {
        line.split("'")[1] for line in collector.log().splitlines() if f"trace_id={trace_hex}" in line})
    assert names == {"invoke_agent", "step ok", "step failing"}
    assert collector.metric("otelcol_processor_sampling_traces", decision="kept", reason="error") == 1


def test_the_guide_example_is_a_valid_config():
    import re
    from pathlib import Path

    import yaml

    from config.schema import build
    from processors.genai_session import SessionConfig
    from processors.sampling import SamplingConfig

    guide = (Path(__file__).resolve().parent.parent / "docs" / "sampling.md").read_text()
    section = guide.split("<!-- section:processors-sessions-sampling -->", 1)[1]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    for key, cls in (("genai_session", SessionConfig), ("sampling", SamplingConfig)):
        _, errors = build(cls, example["processors"][key])
        assert not errors, errors
