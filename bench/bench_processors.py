"""Micro-benchmark: spans/s through each processor alone, on a realistic steady mix.

    python bench/bench_processors.py [--spans 20000] [--runs 5] [--batch 512] [--only NAME ...]

Prints JSON: per benchmark the median (and every run) of spans/s and wall µs/span, and the median
CPU µs/span (process time: steadier than wall time on a shared machine).  Each run decodes a
fresh copy of the mix from OTLP bytes and runs the processors a benchmark depends on (``before``)
UNTIMED, then times only the processor under test over the whole mix in batches, as the pipeline
would call it.

The mix (one seed, same bytes every time): LLM calls in the OTel GenAI conventions (current, with
JSON messages, 40%), OpenInference (flattened messages, 20%), OpenLLMetry (flattened, older names,
15%), agent and tool spans (15%), and plain HTTP/DB spans (10%); models mostly priced by
genai-prices, a few unknown ones, so every path of every processor is exercised.

To add a processor: append one ``Bench(...)`` to ``BENCHMARKS`` (its registry type, its config as
YAML would give it, and the processors that must run before it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.component import ComponentContext  # noqa: E402
from collector.model import Resource, Scope, Span, SpanBatch, spans_from_request, spans_to_request  # noqa: E402
from collector.telemetry import Telemetry  # noqa: E402
from config.schema import build  # noqa: E402
from processors import PROCESSORS  # noqa: E402


@dataclass
class Bench:
    name: str
    type: str
    config: dict[str, Any] = field(default_factory=dict)
    before: tuple[str, ...] = ()  # processor types run (untimed) before, e.g. ("genai_normalize",)
    then: tuple[str, ...] = ()  # further processor types timed after this one (a chain)


BENCHMARKS: list[Bench] = [
    Bench("genai_normalize", "genai_normalize"),
    Bench("genai_normalize+rewrite", "genai_normalize", {"rewrite_attributes": True}),
    Bench("genai_cost", "genai_cost", before=("genai_normalize",)),
    Bench("genai_token_rate", "genai_token_rate", before=("genai_normalize",)),
    Bench("genai chain (normalize, cost, token_rate)", "genai_normalize", then=("genai_cost", "genai_token_rate")),
]

MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "gpt-4o-2024-08-06"),
          ("anthropic", "claude-3-5-sonnet-20241022"), ("gcp.gemini", "gemini-2.5-pro"),
          ("aws.bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"), ("mistral_ai", "mistral-large-latest"),
          ("openai", "ft:gpt-4o-mini:acme:support-v3")]
PROMPT = ("You are a helpful support assistant. Answer concisely and cite the policy section. "
          "Customer asks: my order 4411 arrived damaged, can I get a refund or a replacement? ") * 3
ANSWER = "I'm sorry to hear that. Under section 4.2 you can choose a refund or a replacement. " * 2


def _otel_current(rng: random.Random, provider: str, model: str) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
        "gen_ai.response.model": model, "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(40)}",
        "gen_ai.usage.input_tokens": rng.randint(200, 4000), "gen_ai.usage.output_tokens": rng.randint(20, 800),
        "gen_ai.usage.cache_read.input_tokens": rng.choice([0, 0, 128]),
        "gen_ai.response.finish_reasons": ["stop"], "gen_ai.conversation.id": f"conv-{rng.randint(1, 200)}",
        "server.address": "api.example.com", "server.port": 443,
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}],
                                               "finish_reason": "stop"}]),
    }


def _openinference(rng: random.Random, provider: str, model: str) -> dict[str, Any]:
    return {
        "openinference.span.kind": "LLM", "llm.provider": provider, "llm.system": provider,
        "llm.model_name": model, "llm.token_count.prompt": rng.randint(200, 4000),
        "llm.token_count.completion": rng.randint(20, 800), "llm.token_count.total": 0,
        "llm.token_count.prompt_details.cache_read": 0, "llm.invocation_parameters": '{"temperature": 0.2}',
        "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "Be brief.",
        "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": PROMPT,
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": ANSWER,
        "session.id": f"s-{rng.randint(1, 200)}", "user.id": f"u-{rng.randint(1, 50)}",
        "input.mime_type": "application/json", "output.mime_type": "application/json",
    }


def _openllmetry(rng: random.Random, provider: str, model: str) -> dict[str, Any]:
    return {
        "llm.request.type": "chat", "gen_ai.system": provider, "gen_ai.request.model": model,
        "gen_ai.response.model": model, "gen_ai.usage.prompt_tokens": rng.randint(200, 4000),
        "gen_ai.usage.completion_tokens": rng.randint(20, 800), "llm.usage.total_tokens": 0,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": PROMPT,
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": ANSWER,
        "gen_ai.completion.0.finish_reason": "stop", "llm.is_streaming": False,
        "traceloop.association.properties.session_id": f"s-{rng.randint(1, 200)}",
    }


def _agent(rng: random.Random, provider: str, model: str) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
                "gen_ai.provider.name": provider, "gen_ai.request.model": model}
    return {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_orders",
            "gen_ai.tool.call.id": f"call_{rng.getrandbits(32)}", "gen_ai.tool.call.arguments": '{"order": 4411}'}


def _http(rng: random.Random, provider: str, model: str) -> dict[str, Any]:
    return {"http.request.method": "POST", "url.path": "/api/chat", "http.response.status_code": 200,
            "server.address": "app.internal", "user.id": f"u-{rng.randint(1, 50)}"}


SHAPES = [(_otel_current, 40), (_openinference, 20), (_openllmetry, 15), (_agent, 15), (_http, 10)]


def make_mix(count: int, seed: int = 7) -> bytes:
    """``count`` spans of the mix as one serialized ExportTraceServiceRequest."""
    rng = random.Random(seed)
    resource, scope = Resource({"service.name": "support-bot"}), Scope("bench")
    shapes = [shape for shape, weight in SHAPES for _ in range(weight)]
    start = 1_750_000_000_000_000_000
    spans = []
    for i in range(count):
        provider, model = rng.choice(MODELS)
        attributes = rng.choice(shapes)(rng, provider, model)
        begin = start + i * 1_000_000
        spans.append(Span(resource=resource, scope=scope, trace_id=rng.getrandbits(128).to_bytes(16, "big"),
                          span_id=rng.getrandbits(64).to_bytes(8, "big"), name="chat", kind=3,
                          start_time_unix_nano=begin, end_time_unix_nano=begin + rng.randint(200, 9000) * 1_000_000,
                          attributes=attributes))
    return spans_to_request(spans).SerializeToString()


def _processor(type_name: str, raw: dict[str, Any]):
    factory = PROCESSORS.get(type_name)
    config, errors = build(factory.config_class, raw)
    if errors:
        raise SystemExit(f"{type_name}: {errors}")
    logger = logging.getLogger(f"bench.{type_name}")
    logger.setLevel(logging.ERROR)  # the unknown models' one-time warnings are expected
    return factory.create(config, ComponentContext(type_name, "processor", Telemetry(), logger))


def _batches(payload: bytes, batch_size: int) -> list[SpanBatch]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    spans = spans_from_request(request)
    return [SpanBatch(spans[i:i + batch_size]) for i in range(0, len(spans), batch_size)]


def run_bench(bench: Bench, payload: bytes, runs: int, batch_size: int) -> dict[str, Any]:
    befores = [_processor(t, {}) for t in bench.before]
    timed = [_processor(bench.type, bench.config)] + [_processor(t, {}) for t in bench.then]
    rates, cpu_us = [], []
    for _ in range(runs + 1):  # the first run warms the caches (price rates, imports) and is dropped
        batches = _batches(payload, batch_size)
        for before in befores:
            batches = [before.process(b) for b in batches]
        count = sum(len(b) for b in batches)
        gc.collect()  # garbage of the setup is not the processor's
        began, began_cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            for processor in timed:
                batch = processor.process(batch)
        rates.append(count / (time.perf_counter() - began))
        cpu_us.append((time.process_time() - began_cpu) / count * 1e6)
    rates, cpu_us = rates[1:], cpu_us[1:]
    median = statistics.median(rates)
    return {"spans_per_s": round(median), "us_per_span": round(1e6 / median, 2),
            "cpu_us_per_span": round(statistics.median(cpu_us), 2),
            "runs_spans_per_s": [round(r) for r in rates]}


def decode_reference(payload: bytes, runs: int) -> dict[str, Any]:
    """OTLP bytes -> model spans, timed the same way: a yardstick for the figures above on a
    machine whose load is unknown (~110,000 spans/s was measured for it on an idle one at design time)."""
    cpu_us = []
    for _ in range(runs):
        gc.collect()
        began_cpu = time.process_time()
        count = sum(len(b) for b in _batches(payload, 1 << 30))
        cpu_us.append((time.process_time() - began_cpu) / count * 1e6)
    return {"cpu_us_per_span": round(statistics.median(cpu_us), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--only", nargs="*", help="benchmark names to run (default: all)")
    args = parser.parse_args(argv)
    payload = make_mix(args.spans)
    selected = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    results = {b.name: run_bench(b, payload, args.runs, args.batch) for b in selected}
    results["reference: OTLP decode"] = decode_reference(payload, args.runs)
    print(json.dumps({"spans": args.spans, "runs": args.runs, "batch": args.batch, "statistic": "median",
                      "load_average_1m": round(os.getloadavg()[0], 2), "results": results}, indent=2))


if __name__ == "__main__":
    main()
