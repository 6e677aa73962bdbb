"""Run one real OpenAI instrumentation against a fake server and write the spans it emits.

Usage: ``python instrumented_openai.py {official|openinference|traceloop} BASE_URL OUT [CONTENT_MODE]``,
where OUT is a file (the spans are written there) or ``grpc://HOST:PORT``: spans and log records are
then sent there with the SDK's OTLP exporters, as an app configured by the OpenTelemetry docs does,
and the script fails when any export was not acknowledged.  CONTENT_MODE (official only) is
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: ``SPAN_ONLY`` (default), ``EVENT_ONLY``,
``SPAN_AND_EVENT``, ``NO_CONTENT``; the EVENT modes send content as log records.  For traceloop,
``EVENTS`` turns its events path on (``use_attributes=False``): the deprecated per-message log
events ``gen_ai.<role>.message`` / ``gen_ai.choice`` instead of span attributes.

Each instrumentation patches the same ``openai`` module (and Traceloop's shares the
``opentelemetry.instrumentation.openai`` namespace with the official one), so every dialect runs in
its own process.  The captured spans are written as one serialized ExportTraceServiceRequest, the
exact bytes an OTLP exporter would send.
"""

from __future__ import annotations

import os
import sys

MESSAGES = [
    {"role": "system", "content": "You are a terse geography assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def instrument(dialect: str, provider, logger_provider, content: str) -> None:
    if dialect == "official":
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = content
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    elif dialect == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    elif dialect == "traceloop":
        os.environ["TRACELOOP_TRACE_CONTENT"] = "true"
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as Traceloop

        Traceloop(use_attributes=content != "EVENTS").instrument(tracer_provider=provider,
                                                                 logger_provider=logger_provider)
        return
    else:
        raise SystemExit(f"unknown dialect {dialect!r}")
    OpenAIInstrumentor().instrument(tracer_provider=provider, logger_provider=logger_provider)


class Checked:
    """Wraps an SDK exporter and remembers every export that was not acknowledged."""

    def __init__(self, exporter, failures: list[str]) -> None:
        self.exporter = exporter
        self.failures = failures

    def export(self, batch):
        result = self.exporter.export(batch)
        if result.name != "SUCCESS":
            self.failures.append(f"{type(self.exporter).__name__}: {result.name} for {len(batch)} items")
        return result

    def __getattr__(self, name):
        return getattr(self.exporter, name)


def main(dialect: str, base_url: str, out: str, content: str = "SPAN_ONLY") -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    resource = Resource.create({"service.name": f"app-{dialect}-{content}"})
    provider = TracerProvider(resource=resource)
    logger_provider = LoggerProvider(resource=resource)
    failures: list[str] = []
    if out.startswith("grpc://"):
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = out[len("grpc://"):]
        exporter = Checked(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10), failures)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(
            Checked(OTLPLogExporter(endpoint=endpoint, insecure=True, timeout=10), failures)))
    else:
        exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(dialect, provider, logger_provider, content)

    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, user="user-42")
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True}, user="user-42")
    for _ in stream:
        pass
    try:
        client.chat.completions.create(model="gpt-4o-failing", messages=MESSAGES)
    except openai.InternalServerError:
        pass
    else:
        raise SystemExit("the fake server should have failed this call")
    provider.force_flush()
    logger_provider.force_flush()
    if isinstance(exporter, InMemorySpanExporter):
        with open(out, "wb") as fh:
            fh.write(encode_spans(exporter.get_finished_spans()).SerializeToString())
    provider.shutdown()
    logger_provider.shutdown()
    if failures:
        raise SystemExit("exports not acknowledged: " + "; ".join(failures))


if __name__ == "__main__":
    main(*sys.argv[1:5])
