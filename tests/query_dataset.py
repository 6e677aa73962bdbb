"""A small, fully known GenAI dataset for the query CLI tests, and loaders that write it through
the real storage exporters (``sqlite`` / ``postgres`` factories -> ``export(batch)``)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from collector.component import ComponentContext
from collector.model import STATUS_ERROR, STATUS_OK, GenAI, Resource, Scope, Span, SpanBatch
from collector.telemetry import Telemetry
from config.schema import build

HOUR_NS = 3_600_000_000_000
MS_NS = 1_000_000

MODELS = [  # (provider, request model, response model)
    ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4", "claude-sonnet-4"),
]
REFUSAL = "I can't help with that request."


def _msg(role: str, text: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


@dataclass
class Dataset:
    base_ns: int           # start of the first trace (whole hour, UTC)
    spans: list[Span]

    @property
    def llm(self) -> list[Span]:
        return [s for s in self.spans if s.genai is not None and s.genai.model]


def make_dataset(n_traces: int = 24, seed: int = 11) -> Dataset:
    """``n_traces`` agent traces five hours apart, ending a little before now.

    Each trace: a root ``agent.run`` (no GenAI fields), 2-4 chat calls (3 models), one tool call.
    Users u0..u3, sessions s0..s2 (the last trace has none), services chatbot/agent (resource
    attribute ``tenant.id`` acme/globex), span attribute ``app.feature`` search/chat, ~1 in 7 calls
    an error, some streaming (TTFT), a few refusals and negative feedback.
    """
    rng = random.Random(seed)
    base = (time.time_ns() // HOUR_NS) * HOUR_NS - (n_traces * 5 + 2) * HOUR_NS
    spans: list[Span] = []
    scope = Scope("test.instrumentation", "1.0")
    resources = {name: Resource({"service.name": name, "tenant.id": tenant})
                 for name, tenant in (("chatbot", "acme"), ("agent", "globex"))}
    k = 0
    for i in range(n_traces):
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        if i < 2:  # two ids share a 6-digit prefix: `trace abcdef` is ambiguous
            trace_id = bytes.fromhex("abcdef") + trace_id[3:]
        root_id = rng.getrandbits(64).to_bytes(8, "big")
        resource = resources["chatbot" if i % 3 else "agent"]
        user, session = f"u{i % 4}", (f"s{i % 3}" if i < n_traces - 1 else None)
        start = base + i * 5 * HOUR_NS
        cursor = start + 2 * MS_NS
        children = []
        for j in range(2 + i % 3):
            k += 1
            provider, req, resp = MODELS[(i + j) % 3]
            dur_ms = rng.randrange(80, 6000) + k / 7  # distinct, fractional: percentiles are visible
            inp, out = rng.randrange(20, 3000), rng.randrange(5, 900)
            error = k % 7 == 3
            answer = REFUSAL if k % 9 == 4 else f"Answer {k}: use the ttl setting."
            attributes = {"gen_ai.request.model": req, "app.feature": ("search", "chat")[k % 2]}
            if k % 11 == 5:
                attributes["feedback"] = "thumbs_down"
            genai = GenAI(
                provider=provider, operation="chat", request_model=req, response_model=resp,
                input_tokens=inp, output_tokens=out, cost_usd=round(inp * 2.5e-6 + out * 1e-5, 9),
                ttft_ms=round(rng.uniform(50, 700), 3) if k % 2 else None,
                output_tokens_per_second=round(out / (dur_ms / 1000), 6),
                session_id=session, user_id=user, error_type="timeout" if error else None,
                system_instructions=[{"type": "text", "content": "You are a helpful assistant."}],
                input_messages=[_msg("user", f"Question {k}: how long is data kept? ünïcode")],
                output_messages=None if error else [_msg("assistant", answer)],
            )
            children.append(Span(
                resource=resource, scope=scope, trace_id=trace_id,
                span_id=rng.getrandbits(64).to_bytes(8, "big"), parent_span_id=root_id,
                name=f"chat {req}", kind=3, start_time_unix_nano=cursor,
                end_time_unix_nano=cursor + int(dur_ms * MS_NS), attributes=attributes,
                status_code=STATUS_ERROR if error else STATUS_OK,
                status_message="upstream timeout" if error else "", genai=genai))
            cursor += int(dur_ms * MS_NS) + MS_NS
        tool_ms = rng.randrange(5, 300)
        children.append(Span(
            resource=resource, scope=scope, trace_id=trace_id,
            span_id=rng.getrandbits(64).to_bytes(8, "big"), parent_span_id=root_id,
            name="tool lookup", kind=1, start_time_unix_nano=cursor,
            end_time_unix_nano=cursor + tool_ms * MS_NS, status_code=STATUS_OK,
            genai=GenAI(operation="execute_tool", session_id=session, user_id=user)))
        cursor += tool_ms * MS_NS
        root = Span(resource=resource, scope=scope, trace_id=trace_id, span_id=root_id,
                    name="agent.run", kind=2, start_time_unix_nano=start,
                    end_time_unix_nano=cursor + MS_NS,
                    status_code=STATUS_ERROR if any(c.status_code == STATUS_ERROR for c in children)
                    else STATUS_OK)
        spans.append(root)
        spans.extend(children)
    return Dataset(base, spans)


def load(exporter_type: str, settings: dict, dataset: Dataset) -> None:
    """Write the dataset through the storage exporter, in two batches as a pipeline would."""
    from exporters import EXPORTERS

    factory = EXPORTERS.get(exporter_type)
    config, errors = build(factory.config_class, settings)  # validated, as from a YAML config
    assert not errors, errors
    ctx = ComponentContext(id=exporter_type, kind="exporter", telemetry=Telemetry(),
                           logger=logging.getLogger(f"test.{exporter_type}"))
    exporter = factory.create(config, ctx)
    try:
        half = len(dataset.spans) // 2
        exporter.export(SpanBatch(dataset.spans[:half]))
        exporter.export(SpanBatch(dataset.spans[half:]))
    finally:
        exporter.shutdown()
