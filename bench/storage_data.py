"""Synthetic GenAI spans (~1.5 KB each, like an instrumented chat call) for storage tests and bench.

Each trace is an agent span with ``llm_per_trace`` chat spans below it; chat spans carry the
canonical :class:`GenAI` fields the processors would fill, messages included.
"""

from __future__ import annotations

import os
from typing import Iterator

from collector.model import Event, GenAI, Resource, Scope, Span

RESOURCE = Resource({"service.name": "support-bot", "service.version": "1.4.2",
                     "deployment.environment": "prod", "telemetry.sdk.language": "python"})
SCOPE = Scope("opentelemetry.instrumentation.openai_v2", "2.4b0")
PROMPT = ("You are a helpful support assistant for ACME. Answer briefly and cite the policy. "
          "Customer question: my order #{n} arrived damaged, can I get a refund or a replacement?")
ANSWER = ("I'm sorry your order #{n} arrived damaged. Under our returns policy you can choose a "
          "full refund or a free replacement within 30 days; I have opened case {n} for you.")


def chat_span(trace_id: bytes, parent: bytes, n: int, start: int, session: str | None) -> Span:
    prompt, answer = PROMPT.format(n=n), ANSWER.format(n=n)
    genai = GenAI(provider="openai", operation="chat", request_model="gpt-4o",
                  response_model="gpt-4o-2024-08-06", input_tokens=180 + n % 50, output_tokens=60,
                  cache_read_tokens=64, cost_usd=0.00105, ttft_ms=210.5,
                  output_tokens_per_second=85.0, session_id=session, user_id=f"user-{n % 97}",
                  input_messages=[{"role": "user", "parts": [{"type": "text", "content": prompt}]}],
                  output_messages=[{"role": "assistant", "finish_reason": "stop",
                                    "parts": [{"type": "text", "content": answer}]}],
                  system_instructions=[{"type": "text", "content": "You are ACME's support bot."}])
    return Span(
        resource=RESOURCE, scope=SCOPE, trace_id=trace_id, span_id=os.urandom(8), parent_span_id=parent,
        name="chat gpt-4o", kind=3, start_time_unix_nano=start, end_time_unix_nano=start + 850_000_000,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.usage.input_tokens": 180 + n % 50, "gen_ai.usage.output_tokens": 60,
                    "gen_ai.response.id": f"chatcmpl-{n:012d}", "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.request.temperature": 0.2, "server.address": "api.openai.com",
                    "gen_ai.input.messages": f'[{{"role":"user","content":"{prompt}"}}]'},
        events=[Event("gen_ai.content.completion.chunk", start + 210_000_000, {"index": 0})],
        status_code=1, genai=genai)


def traces(count: int, llm_per_trace: int = 3, start: int = 1_764_000_000_000_000_000,
           sessions: int = 50) -> Iterator[Span]:
    """``count`` traces: a root agent span plus ``llm_per_trace`` chat spans each."""
    for t in range(count):
        trace_id = os.urandom(16)
        root_id = os.urandom(8)
        t0 = start + t * 1_000_000_000
        session = f"session-{t % sessions}" if sessions else None
        yield Span(resource=RESOURCE, scope=SCOPE, trace_id=trace_id, span_id=root_id,
                   name="invoke_agent support", kind=1, start_time_unix_nano=t0,
                   end_time_unix_nano=t0 + 3_000_000_000,
                   attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
                   genai=GenAI(operation="invoke_agent", session_id=session))
        for i in range(llm_per_trace):
            yield chat_span(trace_id, root_id, t * llm_per_trace + i, t0 + i * 900_000_000, session)
