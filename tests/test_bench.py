"""The benchmark harness itself: the span mix is what docs/performance.md says, and a smoke run is lossless."""

from __future__ import annotations

import json
from collections import Counter

from bench import ingest
from bench.spanmix import MixConfig, SpanMix, encode_requests
from collector.otlp import decode_protobuf, validate_spans


def test_mix_has_the_advertised_shape():
    mix = SpanMix(MixConfig(seed=3))
    traces = [mix.next_trace() for _ in range(600)]
    sizes = Counter(len(t) for t in traces)
    assert min(sizes) == 1 and max(sizes) == 10
    chat = [s for t in traces for s in t if s.name == "chat"]
    sizes = sorted(s.ByteSize() for s in chat)
    assert 1200 <= sizes[len(sizes) // 2] <= 1800  # ~1.5 KB per LLM call
    names = {s.name.split(" ")[0] for t in traces for s in t}
    assert {"chat", "invoke_agent", "execute_tool"} <= names
    assert 0.28 <= mix.pii_spans / mix.content_spans <= 0.38


def test_requests_decode_without_rejections():
    bodies, info = encode_requests(2_000, 512, MixConfig(seed=4))
    assert info["requests"] == 4
    spans = [s for b in bodies for s in validate_spans(decode_protobuf(b)).batch.spans]
    assert len(spans) == 2_000
    assert len({(s.trace_id, s.span_id) for s in spans}) == 2_000


def test_smoke_run_is_lossless(capsys):
    assert ingest.main(["--smoke", "--pipeline", "minimal", "--store", "sqlite", "--spans", "2000"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sent"] == summary["acked"] == summary["persisted"] == 2000
    assert summary["lost"] == 0 and summary["collector_exit"] == 0
