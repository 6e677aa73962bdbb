"""A realistic GenAI span mix, pre-encoded as OTLP ``ExportTraceServiceRequest`` bytes.

What an LLM application's SDK sends: traces of 1-10 spans where an ``invoke_agent`` root wraps
``chat`` calls and ``execute_tool`` calls.  A chat span is ~1.5 KB: a ~500-char prompt and a
~300-char completion as ``gen_ai.input.messages`` / ``gen_ai.output.messages`` JSON, token counts,
a model drawn from priced and unpriced ones, a session id and a user id.  A configurable share of
the spans with content (chat prompts, tool-call arguments) carries PII from ``/work/shared/data/pii_corpus.jsonl`` in its content, so redaction
has real work to do; the rest carry clean corpus text.  A share of the spans use the OpenInference
dialect so normalisation is exercised too.

Requests are built before any timing starts (``encode_requests``), so a benchmark measures the
collector, not this generator.  Everything is driven by one seed: the same flags give the same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["MixConfig", "SpanMix", "encode_requests", "DEFAULT_CORPUS"]

DEFAULT_CORPUS = Path("/work/shared/data/pii_corpus.jsonl")

# (provider, model, priced by genai-prices)
MODELS: tuple[tuple[str, str, bool], ...] = (
    ("openai", "gpt-4o", True),
    ("openai", "gpt-4o-mini", True),
    ("anthropic", "claude-3-5-sonnet-20241022", True),
    ("anthropic", "claude-3-5-haiku-20241022", True),
    ("gcp.gemini", "gemini-1.5-pro", True),
    ("mistral_ai", "mistral-large-latest", True),
    ("openai", "ft:gpt-4o-mini:acme:support-v3", False),
    ("openai", "llama-3-70b-internal", False),
)
TOOLS = ("search_orders", "get_weather", "lookup_customer", "send_email", "run_sql")
SERVICES = ("support-bot", "sales-assistant", "doc-qa")
FILLER = ("Answer concisely and cite the relevant policy section. Keep the tone friendly and "
          "professional, avoid speculation, and ask a clarifying question when the request is ambiguous. ")

KIND_INTERNAL, KIND_CLIENT = 1, 3


@dataclass
class MixConfig:
    pii_share: float = 1 / 3          # share of spans with content (chat, tool call) carrying PII
    openinference_share: float = 0.2  # share of chat spans in the OpenInference dialect
    error_share: float = 0.02
    prompt_chars: int = 500
    completion_chars: int = 300
    max_trace_spans: int = 10
    sessions: int = 200
    users: int = 50
    seed: int = 1


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _load_corpus(path: Path) -> tuple[list[str], list[str]]:
    pii, clean = [], []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            (pii if row["pii"] else clean).append(row["text"])
    if not pii or not clean:
        raise ValueError(f"{path}: need texts both with and without PII")
    return pii, clean


class SpanMix:
    """Generates traces of the mix; ``next_trace`` returns the spans of one trace."""

    def __init__(self, config: MixConfig | None = None, corpus: Path = DEFAULT_CORPUS) -> None:
        self.cfg = config or MixConfig()
        self.rng = random.Random(self.cfg.seed)
        self.pii_texts, self.clean_texts = _load_corpus(corpus)
        self.clock = 1_700_000_000_000_000_000
        self.chat_spans = 0
        self.content_spans = 0
        self.pii_spans = 0

    # -- text ------------------------------------------------------------------------------

    def _text(self, chars: int, with_pii: bool) -> str:
        """Corpus sentences (one with PII first if asked) padded with filler to ``chars``."""
        rng = self.rng
        parts = [rng.choice(self.pii_texts)] if with_pii else []
        while sum(len(p) + 1 for p in parts) < chars:
            parts.append(rng.choice(self.clean_texts) if rng.random() < 0.5 else FILLER)
        return " ".join(parts)[:chars]

    def _pii(self) -> bool:
        """Draw whether the next span with content (chat or tool call) carries PII."""
        self.content_spans += 1
        with_pii = self.rng.random() < self.cfg.pii_share
        self.pii_spans += with_pii
        return with_pii

    def _ids(self) -> bytes:
        return self.rng.getrandbits(64).to_bytes(8, "big") or b"\x01" * 8

    # -- spans -----------------------------------------------------------------------------

    def _chat_attributes(self, session: str, user: str) -> list[KeyValue]:
        rng, cfg = self.rng, self.cfg
        provider, model, _ = rng.choice(MODELS)
        self.chat_spans += 1
        prompt = self._text(cfg.prompt_chars, self._pii())
        completion = self._text(cfg.completion_chars, False)
        in_tok, out_tok = len(prompt) // 4 + rng.randint(50, 400), len(completion) // 4 + rng.randint(0, 50)
        if rng.random() < cfg.openinference_share:
            return [
                _kv("openinference.span.kind", "LLM"), _kv("llm.system", provider), _kv("llm.model_name", model),
                _kv("llm.token_count.prompt", in_tok), _kv("llm.token_count.completion", out_tok),
                _kv("llm.token_count.total", in_tok + out_tok),
                _kv("llm.input_messages.0.message.role", "user"),
                _kv("llm.input_messages.0.message.content", prompt),
                _kv("llm.output_messages.0.message.role", "assistant"),
                _kv("llm.output_messages.0.message.content", completion),
                _kv("session.id", session), _kv("user.id", user),
            ]
        attrs = [
            _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", provider),
            _kv("gen_ai.request.model", model), _kv("gen_ai.response.model", model),
            _kv("gen_ai.request.temperature", 0.2), _kv("gen_ai.request.max_tokens", 1024),
            _kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(48):012x}"),
            _kv("gen_ai.response.finish_reasons", "stop"),
            _kv("gen_ai.usage.input_tokens", in_tok), _kv("gen_ai.usage.output_tokens", out_tok),
            _kv("gen_ai.conversation.id", session), _kv("user.id", user),
            _kv("gen_ai.input.messages", json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}])),
            _kv("gen_ai.output.messages", json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": completion}],
                  "finish_reason": "stop"}])),
        ]
        if rng.random() < 0.3:
            attrs.append(_kv("gen_ai.usage.cache_read.input_tokens", in_tok // 2))
        return attrs

    def _span(self, trace_id: bytes, parent: bytes, name: str, kind: int, attrs: list[KeyValue],
              start: int, duration_ns: int) -> trace_pb2.Span:
        span = trace_pb2.Span(trace_id=trace_id, span_id=self._ids(), parent_span_id=parent, name=name,
                              kind=kind, start_time_unix_nano=start, end_time_unix_nano=start + duration_ns,
                              attributes=attrs)
        if self.rng.random() < self.cfg.error_share:
            span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
            span.status.message = "upstream timeout"
            span.attributes.append(_kv("error.type", "timeout"))
        return span

    def next_trace(self) -> list[trace_pb2.Span]:
        rng, cfg = self.rng, self.cfg
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        session = f"sess-{rng.randrange(cfg.sessions):05d}"
        user = f"user-{rng.randrange(cfg.users):04d}"
        size = rng.randint(1, cfg.max_trace_spans)
        self.clock += rng.randint(1, 5) * 1_000_000_000
        start = self.clock
        if size == 1:
            return [self._span(trace_id, b"", "chat", KIND_CLIENT, self._chat_attributes(session, user),
                               start, rng.randint(300, 4000) * 1_000_000)]
        root = self._span(trace_id, b"", "invoke_agent support_agent", KIND_INTERNAL, [
            _kv("gen_ai.operation.name", "invoke_agent"), _kv("gen_ai.agent.name", "support_agent"),
            _kv("gen_ai.conversation.id", session), _kv("user.id", user)], start, 0)
        spans, t = [root], start
        for i in range(size - 1):
            if i % 2 == 0:
                dur = rng.randint(300, 4000) * 1_000_000
                spans.append(self._span(trace_id, root.span_id, "chat", KIND_CLIENT,
                                        self._chat_attributes(session, user), t, dur))
            else:
                dur = rng.randint(5, 200) * 1_000_000
                tool = rng.choice(TOOLS)
                spans.append(self._span(trace_id, root.span_id, f"execute_tool {tool}", KIND_INTERNAL, [
                    _kv("gen_ai.operation.name", "execute_tool"), _kv("gen_ai.tool.name", tool),
                    _kv("gen_ai.tool.call.id", f"call_{rng.getrandbits(40):010x}"),
                    _kv("gen_ai.tool.call.arguments", json.dumps({"query": self._text(80, self._pii())})),
                ], t, dur))
            t += dur
        root.end_time_unix_nano = t
        return spans

    def spans(self) -> Iterator[trace_pb2.Span]:
        while True:
            yield from self.next_trace()


def _resource_spans(service: str) -> Any:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", service), _kv("telemetry.sdk.language", "python"),
                                   _kv("telemetry.sdk.name", "opentelemetry"),
                                   _kv("deployment.environment", "bench")])
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    ss.scope.version = "2.1b0"
    return request, ss


def encode_requests(total_spans: int, spans_per_request: int = 512,
                    config: MixConfig | None = None) -> tuple[list[bytes], dict[str, Any]]:
    """Encode ``total_spans`` of the mix into requests of ``spans_per_request`` (one service each).

    Returns the request bodies and a summary of the mix (counts, mean encoded bytes per span).
    """
    mix = SpanMix(config)
    source = mix.spans()
    bodies: list[bytes] = []
    left = total_spans
    while left > 0:
        n = min(spans_per_request, left)
        request, ss = _resource_spans(SERVICES[len(bodies) % len(SERVICES)])
        ss.spans.extend(next(source) for _ in range(n))
        bodies.append(request.SerializeToString())
        left -= n
    nbytes = sum(len(b) for b in bodies)
    summary = {"spans": total_spans, "requests": len(bodies), "bytes": nbytes,
               "bytes_per_span": round(nbytes / max(1, total_spans)),
               "chat_spans": mix.chat_spans, "content_spans": mix.content_spans, "pii_spans": mix.pii_spans}
    return bodies, summary


if __name__ == "__main__":
    import time
    t0 = time.perf_counter()
    _, info = encode_requests(20_000)
    info["encode_seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(info))
