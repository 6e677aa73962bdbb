"""``genai_token_rate``: latency, time to first token and output tokens per second.

Runs after ``genai_normalize`` (it reads ``span.genai``).  Time to first token comes from, in order:
what normalize found in the attributes (``gen_ai.response.time_to_first_chunk`` seconds, OpenLIT
``gen_ai.server.ttft``, Langfuse ``completion_start_time``), else the first streaming-chunk event
(OpenInference ``First Token Stream Event``, OpenLLMetry ``gen_ai.content.completion.chunk``).

Output tokens per second = output tokens / generation time, where the generation time starts at
the first token when it is known (so a slow queue before the first token does not depress the
rate) and at the span start otherwise.  No rate without output tokens or without a positive
generation time: never a division by zero, never an infinity.

Attributes written (derived, so under the collector's names except the standard TTFT one):
``gen_ai.latency_ms``, ``gen_ai.ttft_ms``, ``gen_ai.output_tokens_per_second``, and the standard
``gen_ai.response.time_to_first_chunk`` (seconds) when the span did not carry it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from collector.component import ComponentContext, Factory, Processor
from collector.model import GenAI, Span, SpanBatch
from config.schema import setting
from processors.genai_conventions import FIRST_CHUNK_EVENT_NAMES

__all__ = ["GenAITokenRateConfig", "GenAITokenRateProcessor", "compute_rates", "FACTORY",
           "LATENCY_ATTRIBUTE", "TTFT_ATTRIBUTE", "RATE_ATTRIBUTE", "TTFT_SECONDS_ATTRIBUTE"]

LATENCY_ATTRIBUTE = "gen_ai.latency_ms"
TTFT_ATTRIBUTE = "gen_ai.ttft_ms"
RATE_ATTRIBUTE = "gen_ai.output_tokens_per_second"
TTFT_SECONDS_ATTRIBUTE = "gen_ai.response.time_to_first_chunk"


@dataclass
class GenAITokenRateConfig:
    write_attributes: bool = setting(True, doc="write the derived values as span attributes "
                                               "(span.genai is always filled)")


def _first_chunk_ms(span: Span) -> float | None:
    """Time from span start to the first streaming-chunk event, if the span has one."""
    start = span.start_time_unix_nano
    for event in span.events:
        if event.name in FIRST_CHUNK_EVENT_NAMES and event.time_unix_nano >= start > 0:
            return (event.time_unix_nano - start) / 1e6
    return None


def compute_rates(span: Span, g: GenAI) -> float:
    """Fill ``g.ttft_ms`` (when missing) and ``g.output_tokens_per_second``; return latency ms."""
    duration_ns = span.end_time_unix_nano - span.start_time_unix_nano
    latency_ms = duration_ns / 1e6 if duration_ns > 0 and span.start_time_unix_nano > 0 else 0.0
    ttft = g.ttft_ms
    if ttft is None and span.events:
        ttft = g.ttft_ms = _first_chunk_ms(span)
    if ttft is not None and not (0.0 <= ttft < math.inf):
        ttft = g.ttft_ms = None
    tokens = g.output_tokens
    if tokens is None or latency_ms <= 0.0:
        return latency_ms
    generation_ms = latency_ms - ttft if ttft is not None and ttft < latency_ms else latency_ms
    if generation_ms > 0.0:
        g.output_tokens_per_second = tokens * 1000.0 / generation_ms
    return latency_ms


class GenAITokenRateProcessor(Processor):
    def __init__(self, config: GenAITokenRateConfig, ctx: ComponentContext) -> None:
        self.write = config.write_attributes

    def process(self, batch: SpanBatch) -> SpanBatch:
        write = self.write
        for span in batch.spans:
            g = span.genai
            if g is None:
                continue
            latency_ms = compute_rates(span, g)
            if write:
                attrs = span.attributes
                if latency_ms > 0.0:
                    attrs[LATENCY_ATTRIBUTE] = latency_ms
                if g.ttft_ms is not None:
                    attrs[TTFT_ATTRIBUTE] = g.ttft_ms
                    if TTFT_SECONDS_ATTRIBUTE not in attrs:
                        attrs[TTFT_SECONDS_ATTRIBUTE] = g.ttft_ms / 1000.0
                if g.output_tokens_per_second is not None:
                    attrs[RATE_ATTRIBUTE] = g.output_tokens_per_second
        return batch

    def shutdown(self) -> None:
        pass


def _create(config: GenAITokenRateConfig, ctx: ComponentContext) -> GenAITokenRateProcessor:
    return GenAITokenRateProcessor(config, ctx)


FACTORY = Factory("genai_token_rate", GenAITokenRateConfig, _create,
                  doc="latency, time to first token and output tokens per second",
                  example="""\
write_attributes: true
""")
