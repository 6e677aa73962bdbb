"""``sampling``: keep a share of traces, always keep the ones worth keeping, and keep full
content for a sample only.

Three stages, per trace:

1. **Probabilistic** (``probabilistic: {sampling_percentage, hash_seed}``): the decision is a pure
   function of the trace id, computed exactly like the OTel Collector's ``probabilistic_sampler``
   in ``hash_seed`` mode, so a collector beside ours with the same settings keeps the same traces.
2. **Keep rules** (``keep``): error status, trace latency, trace cost, trace tokens, attribute
   matches, listed services.  They override a "drop" from stage 1.  Every rule is *monotonic*
   (once true for a trace it stays true as more spans arrive), so the sampler never has to wait to
   say "keep": a trace is released the moment it qualifies.  Only traces that stage 1 would drop
   and no rule has matched yet are *held*, for ``decision_wait`` after their first span, in case a
   later span (an error in a child, a negative-feedback span) rescues them.  Held data is bounded
   by ``max_traces`` / ``max_spans``; overflow decides the oldest held traces "drop" early, counted.
3. **Rate limit** (``rate_limit`` spans/s, token bucket, whole traces) and **content sampling**
   (``content_sampling.percentage`` of kept traces keep their messages; the rest are stripped of
   prompts, completions, messages and tool arguments in every dialect, keeping every metric).

Log records (the same processor id listed in a ``logs`` pipeline) follow their trace: the
instances of one ``sampling`` id in a collector share their decisions, so a record whose trace was
kept passes (stripped of its body and content attributes when the trace lost content sampling),
one whose trace was dropped is dropped.  A record that arrives before its trace is decided takes
the hash decision when that is "keep" (or no keep rule could change it), and otherwise waits up to
``decision_wait`` for the trace, then is dropped if nothing kept it.  Records outside any trace
(no trace id) always pass.

Acknowledgement semantics: the pipeline acknowledges a request once the spans this processor
*returned* are committed.  Kept spans are returned at once, so the ack still means "durable" for
them and nothing waits ``decision_wait``.  Held spans are the ones that were going to be dropped
unless a rule fires; they live in memory only (lost on a crash, like in the OTel
``tail_sampling`` processor) and, when rescued, leave with the batch that rescued them.  Expiry
(which only ever drops) happens in ``process`` and in the pipeline's periodic ``flush`` call.
"""

from __future__ import annotations

import re
import struct
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from collector.component import TRACES_AND_LOGS, ComponentContext, Factory, Processor
from collector.model import LOGS, STATUS_ERROR, Batch, Span, SpanBatch
from collector.model_logs import LogBatch, LogRecord
from config.schema import ConfigError, Duration, setting
from processors.genai_content import (CONTENT_GENAI_FIELDS, event_body_is_content, strip_attributes,
                                     strip_event_attributes)

__all__ = [
    "SamplingConfig", "SamplingProcessor", "FACTORY", "fnv1a32_seeded", "hash_seed_threshold",
    "hash_seed_sampled", "strip_content",
]

# ---------------------------------------------------------------------------------------------
# The OTel Collector probabilistic_sampler, hash_seed mode (fnvhasher.go, sampler_mode.go)

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_NUM_HASH_BUCKETS = 0x4000  # 2**14
_BUCKET_MASK = _NUM_HASH_BUCKETS - 1


def fnv1a32_seeded(data: bytes, seed: int) -> int:
    """FNV-1a 32 over the seed's 4 little-endian bytes, then ``data`` (``computeHash`` in Go)."""
    h = _FNV_OFFSET
    for b in seed.to_bytes(4, "little") + data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def hash_seed_threshold(percentage: float) -> int:
    """How many of the 16384 hash buckets are sampled.

    Go computes ``uint32(pct * percentageScaleFactor)`` with ``pct`` a float32, so the product is
    rounded to float32 and then truncated; reproducing that exactly matters at the bucket edges.
    """
    pct = min(float(percentage), 100.0)
    if pct <= 0:
        return 0
    return int(_f32(_f32(pct) * _f32(_NUM_HASH_BUCKETS / 100.0)))


def hash_seed_sampled(trace_id: bytes, seed: int, threshold: int) -> bool:
    """The OTel decision: lower 14 bits of the seeded hash below the threshold."""
    return (fnv1a32_seeded(trace_id, seed) & _BUCKET_MASK) < threshold


class _TraceHasher:
    """``hash_seed_sampled`` with the seed's 4 bytes pre-mixed (the per-trace hot path)."""

    __slots__ = ("state", "threshold")

    def __init__(self, seed: int, percentage: float) -> None:
        h = _FNV_OFFSET
        for b in seed.to_bytes(4, "little"):
            h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
        self.state = h
        self.threshold = hash_seed_threshold(percentage)

    def sampled(self, trace_id: bytes) -> bool:
        threshold = self.threshold
        if threshold >= _NUM_HASH_BUCKETS:
            return True
        if threshold <= 0:
            return False
        h = self.state
        for b in trace_id:
            h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
        return (h & _BUCKET_MASK) < threshold


# ---------------------------------------------------------------------------------------------
# Content stripping

def strip_record_content(record: LogRecord) -> int:
    """Remove content from one log record: content attributes, and the body of a content event."""
    removed = strip_event_attributes(record.name, record.attributes)
    if record.body is not None and event_body_is_content(record.name):
        record.body = None
        removed += 1
    return removed


def strip_content(span: Span) -> int:
    """Remove content from one span (attributes, event attributes, canonical messages), as
    :mod:`processors.genai_content` defines it.

    Metrics (tokens, cost, latency, model) are untouched.  Returns how many values were removed.
    """
    removed = strip_attributes(span.attributes)
    for event in span.events:
        if event.attributes:
            removed += strip_event_attributes(event.name, event.attributes)
    genai = span.genai
    if genai is not None:
        for name in CONTENT_GENAI_FIELDS:
            if getattr(genai, name) is not None:
                setattr(genai, name, None)
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------
# Config


@dataclass
class ProbabilisticConfig:
    sampling_percentage: float = setting(100.0, min=0, max=100,
                                         doc="share of traces kept by trace-id hash")
    hash_seed: int = setting(0, min=0, max=2**32 - 1, doc="FNV seed; same seed => same decisions")


@dataclass
class AttributeRule:
    """Keep a trace when one of its spans has attribute ``key`` matching.

    ``values`` (string equality on the value's text), ``pattern`` (regex, full match) and
    ``min_value`` / ``max_value`` (numbers, inclusive) may be combined; any one matching is enough.
    With none of them, the attribute merely being present matches.
    """

    key: str = setting(pattern=r".+", doc="span attribute to test; alone, the attribute being present matches")
    values: list[str] = setting(default_factory=list, doc="match when the value's text equals one of these")
    pattern: str | None = setting(None, doc="match when the value's text fully matches this regex")
    min_value: float | None = setting(None, doc="match numbers >= this")
    max_value: float | None = setting(None, doc="match numbers <= this")

    def validate(self) -> list[str]:
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ConfigError("pattern", f"invalid regular expression: {exc}") from None
        return []


@dataclass
class KeepConfig:
    errors: bool = setting(True, doc="keep traces with a span whose status is ERROR")
    latency_threshold: Duration | None = setting(None, doc="keep traces longer than this")
    cost_threshold_usd: float | None = setting(None, min=0, doc="keep traces costing more (sum)")
    tokens_threshold: int | None = setting(None, min=0, doc="keep traces using more tokens (sum)")
    attributes: list[AttributeRule] = setting(default_factory=list, doc="keep traces with a span attribute "
                                              "matching any rule")
    services: list[str] = setting(default_factory=list, doc="keep traces with a span from these service.names")


@dataclass
class ContentSamplingConfig:
    percentage: float = setting(100.0, min=0, max=100,
                                doc="share of kept traces that keep message content")
    hash_seed: int = setting(1, min=0, max=2**32 - 1,
                             doc="seed of the content decision; differs from probabilistic's")


@dataclass
class SamplingConfig:
    probabilistic: ProbabilisticConfig = setting(default_factory=ProbabilisticConfig, doc="stage 1: keep a "
                                                 "share of traces by trace-id hash (as the OTel probabilistic_sampler)")
    keep: KeepConfig = setting(default_factory=KeepConfig, doc="stage 2: rules that keep a trace stage 1 "
                               "would drop; any one is enough")
    rate_limit: int = setting(0, min=0, doc="max spans per second leaving the sampler; 0 = none")
    decision_wait: Duration = setting(10.0, doc="how long a not-yet-kept trace may be rescued by a later "
                                      "span; 0s = nothing is held, rules see only the same batch")
    max_traces: int = setting(50000, min=1, doc="held traces at most; overflow drops the oldest")
    max_spans: int = setting(50000, min=1, doc="held spans at most; overflow drops the oldest traces")
    decision_cache: int = setting(100000, min=1, doc="remembered decisions for late spans")
    content_sampling: ContentSamplingConfig = setting(default_factory=ContentSamplingConfig, doc="stage 4: "
                                                      "which kept traces keep their message content")


# ---------------------------------------------------------------------------------------------
# Keep rules


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if value == value else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_COST_KEYS = ("gen_ai.usage.cost", "llm.cost.total", "gen_ai.cost.total_usd")
_TOKEN_KEYS = (
    ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
    ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"),
)


def _span_cost(span: Span) -> float:
    genai = span.genai
    if genai is not None and genai.cost_usd is not None:
        return genai.cost_usd
    attrs = span.attributes
    for key in _COST_KEYS:
        value = _number(attrs.get(key))
        if value is not None:
            return value
    return 0.0


def _span_tokens(span: Span) -> float:
    genai = span.genai
    if genai is not None and (genai.input_tokens is not None or genai.output_tokens is not None):
        return (genai.input_tokens or 0) + (genai.output_tokens or 0)
    attrs = span.attributes
    total = 0.0
    for keys in _TOKEN_KEYS:
        for key in keys:
            value = _number(attrs.get(key))
            if value is not None:
                total += value
                break
    return total


class _TraceStats:
    """What the monotonic rules need about a trace so far (spans seen in any batch)."""

    __slots__ = ("start", "end", "cost", "tokens")

    def __init__(self) -> None:
        self.start = 0
        self.end = 0
        self.cost = 0.0
        self.tokens = 0.0


class _Rules:
    """The keep rules compiled for the hot path; ``match`` returns the reason or None."""

    def __init__(self, cfg: KeepConfig) -> None:
        self.errors = cfg.errors
        self.latency_ns = int(cfg.latency_threshold * 1e9) if cfg.latency_threshold is not None else None
        self.cost = cfg.cost_threshold_usd
        self.tokens = cfg.tokens_threshold
        self.services = frozenset(cfg.services)
        self.attributes = [
            (r.key, frozenset(r.values), re.compile(r.pattern) if r.pattern else None,
             r.min_value, r.max_value)
            for r in cfg.attributes
        ]
        self.need_stats = self.latency_ns is not None or self.cost is not None or self.tokens is not None
        self.any = bool(self.errors or self.need_stats or self.services or self.attributes)

    def _attribute_match(self, attrs: dict[str, Any]) -> bool:
        for key, values, pattern, lo, hi in self.attributes:
            if key not in attrs:
                continue
            value = attrs[key]
            if not values and pattern is None and lo is None and hi is None:
                return True
            text = value if isinstance(value, str) else str(value)
            if text in values or (pattern is not None and pattern.fullmatch(text)):
                return True
            if lo is not None or hi is not None:
                number = _number(value)
                if number is not None and (lo is None or number >= lo) and (hi is None or number <= hi):
                    return True
        return False

    def match(self, spans: list[Span], stats: _TraceStats) -> str | None:
        """Update ``stats`` with ``spans`` and say why the trace must be kept, if it must."""
        reason = None
        for span in spans:
            if reason is None:
                if self.errors and span.status_code == STATUS_ERROR:
                    reason = "error"
                elif self.services and span.resource.service_name in self.services:
                    reason = "service"
                elif self.attributes and self._attribute_match(span.attributes):
                    reason = "attribute"
            if self.need_stats:
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if start and (not stats.start or start < stats.start):
                    stats.start = start
                if end > stats.end:
                    stats.end = end
                if self.cost is not None:
                    stats.cost += _span_cost(span)
                if self.tokens is not None:
                    stats.tokens += _span_tokens(span)
            elif reason is not None:
                break
        if reason is not None:
            return reason
        if self.latency_ns is not None and stats.start and stats.end - stats.start > self.latency_ns:
            return "latency"
        if self.cost is not None and stats.cost > self.cost:
            return "cost"
        if self.tokens is not None and stats.tokens > self.tokens:
            return "tokens"
        return None


# ---------------------------------------------------------------------------------------------
# The processor


class _Held:
    __slots__ = ("spans", "deadline", "stats")

    def __init__(self, deadline: float, stats: _TraceStats) -> None:
        self.spans: list[Span] = []
        self.deadline = deadline
        self.stats = stats


class _TokenBucket:
    """Spans per second with a one-second burst; whole traces pass or fail together."""

    def __init__(self, rate: int, clock) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = float(rate)
        self.last = clock()

    def admit(self, n: int) -> bool:
        now = self.clock()
        self.tokens = min(float(self.rate), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens <= 0:
            return False
        self.tokens -= n  # may go negative: a big trace borrows from the next second
        return True


KEPT, DROPPED = True, False


class _Decisions:
    """Keep/drop per trace id, remembered for late data; shared by the traces and logs pipelines
    of one sampler id (each pipeline builds its own instance and runs in its own thread)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.lock = threading.Lock()
        self.map: OrderedDict[bytes, bool] = OrderedDict()

    def get(self, trace_id: bytes) -> bool | None:
        with self.lock:
            return self.map.get(trace_id)

    def set(self, trace_id: bytes, keep: bool) -> None:
        with self.lock:
            self.map[trace_id] = keep
            if len(self.map) > self.capacity:
                self.map.popitem(last=False)


_SHARED: "weakref.WeakKeyDictionary[Any, dict[str, _Decisions]]" = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _shared_decisions(ctx: ComponentContext, capacity: int) -> _Decisions:
    """The decisions of sampler ``ctx.id`` in the collector that owns ``ctx.telemetry``."""
    with _SHARED_LOCK:
        per_collector = _SHARED.setdefault(ctx.telemetry, {})
        decisions = per_collector.get(ctx.id)
        if decisions is None:
            decisions = per_collector[ctx.id] = _Decisions(capacity)
        return decisions


_NO_TRACE = (b"", bytes(16))


class SamplingProcessor(Processor):
    """See the module docstring.  Not thread-safe: one pipeline calls ``process`` at a time."""

    holds_data = True  # traces wait for their decision; ``flush`` releases them

    def __init__(self, config: SamplingConfig, ctx: ComponentContext, clock=time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.hasher = _TraceHasher(config.probabilistic.hash_seed, config.probabilistic.sampling_percentage)
        if config.probabilistic.sampling_percentage > 0 and self.hasher.threshold == 0:
            ctx.logger.warning("sampling_percentage %s is below one 14-bit hash bucket (0.0061 %%): "
                               "rounded to zero, as the OTel Collector does",
                               config.probabilistic.sampling_percentage)
        cs = config.content_sampling
        self.content = _TraceHasher(cs.hash_seed, cs.percentage) if cs.percentage < 100 else None
        self.rules = _Rules(config.keep)
        self.bucket = _TokenBucket(config.rate_limit, clock) if config.rate_limit else None
        self.held: OrderedDict[bytes, _Held] = OrderedDict()
        self.held_spans = 0
        self.decisions = _shared_decisions(ctx, config.decision_cache)
        self.logs = (ctx.pipeline or "").partition("/")[0] == LOGS
        self.held_records: OrderedDict[bytes, tuple[float, list[LogRecord]]] = OrderedDict()
        self._ctx = ctx
        self._trace_counters: dict[tuple[str, str], Any] = {}
        self.kept_spans = ctx.counter("sampling_kept_spans", "spans passed on by the sampler")
        self.dropped_spans = ctx.counter("sampling_dropped_spans", "spans dropped by the sampler")
        self.late_spans = ctx.counter("sampling_late_spans", "spans arriving after their trace's decision")
        self.evicted = ctx.counter("sampling_evicted_traces",
                                   "held traces decided early because max_traces/max_spans was reached")
        self.stripped = ctx.counter("sampling_content_stripped_spans", "spans whose content was removed")
        self.kept_records = ctx.counter("sampling_kept_log_records", "log records passed on (their trace was kept)")
        self.dropped_records = ctx.counter("sampling_dropped_log_records", "log records dropped with their trace")
        ctx.gauge("sampling_held_traces", "traces waiting for a decision", lambda: len(self.held))
        ctx.gauge("sampling_held_spans", "spans waiting for a decision", lambda: self.held_spans)

    # -- counters ------------------------------------------------------------------------------

    def _count_trace(self, decision: str, reason: str) -> None:
        counter = self._trace_counters.get((decision, reason))
        if counter is None:
            counter = self._trace_counters[(decision, reason)] = self._ctx.counter(
                "sampling_traces", "trace decisions by outcome and reason", decision=decision, reason=reason)
        counter.add(1)

    # -- decisions -----------------------------------------------------------------------------

    def _remember(self, trace_id: bytes, keep: bool) -> None:
        self.decisions.set(trace_id, keep)

    def _keep(self, trace_id: bytes, spans: list[Span], reason: str, out: list[Span]) -> None:
        """Decide a new trace "keep" (unless the rate limit says no) and emit its spans."""
        if self.bucket is not None and not self.bucket.admit(len(spans)):
            self._drop(trace_id, spans, "rate_limited")
            return
        self._remember(trace_id, KEPT)
        self._count_trace("kept", reason)
        self._emit(trace_id, spans, out)

    def _drop(self, trace_id: bytes, spans: list[Span], reason: str) -> None:
        self._remember(trace_id, DROPPED)
        self._count_trace("dropped", reason)
        self.dropped_spans.add(len(spans))

    def _emit(self, trace_id: bytes, spans: list[Span], out: list[Span]) -> None:
        if self.content is not None and not self.content.sampled(trace_id):
            for span in spans:
                strip_content(span)
                span.attributes["sampling.content"] = "stripped"
            self.stripped.add(len(spans))
        self.kept_spans.add(len(spans))
        out.extend(spans)

    def _late(self, trace_id: bytes, spans: list[Span], keep: bool, out: list[Span]) -> None:
        """Spans of a decided trace follow the decision, except that a keep rule still rescues
        them (an error reported after the wait is worth more than a consistent trace)."""
        self.late_spans.add(len(spans))
        if keep:
            if self.bucket is not None:
                self.bucket.admit(len(spans))
            self._emit(trace_id, spans, out)
            return
        reason = self.rules.match(spans, _TraceStats()) if self.rules.any else None
        if reason is None:
            self.dropped_spans.add(len(spans))
        else:
            self._keep(trace_id, spans, reason, out)

    def _rescue_or_hold(self, trace_id: bytes, spans: list[Span], now: float, out: list[Span]) -> None:
        """A trace the hash would drop: keep it (with what was held) if a rule now matches,
        else hold it for the rest of its ``decision_wait``."""
        held = self.held.get(trace_id)
        stats = held.stats if held is not None else _TraceStats()
        reason = self.rules.match(spans, stats)
        if reason is not None:
            if held is not None:
                del self.held[trace_id]
                self.held_spans -= len(held.spans)
                spans = held.spans + spans
            self._keep(trace_id, spans, reason, out)
        elif self.config.decision_wait <= 0:
            self._drop(trace_id, spans, "probabilistic")
        else:
            if held is None:
                held = self.held[trace_id] = _Held(now + self.config.decision_wait, stats)
            held.spans.extend(spans)
            self.held_spans += len(spans)

    def _expire(self, now: float) -> None:
        """Drop held traces whose wait is over, then the oldest while over the memory bounds."""
        held = self.held
        while held:
            trace_id, entry = next(iter(held.items()))
            overflow = len(held) > self.config.max_traces or self.held_spans > self.config.max_spans
            if entry.deadline > now and not overflow:
                break
            del held[trace_id]
            self.held_spans -= len(entry.spans)
            if overflow and entry.deadline > now:
                self.evicted.add(1)
            self._drop(trace_id, entry.spans, "probabilistic")

    def process(self, batch: Batch) -> Batch:
        if self.logs:
            return self._process_records(batch)
        by_trace: dict[bytes, list[Span]] = {}
        for span in batch.spans:
            spans = by_trace.get(span.trace_id)
            if spans is None:
                by_trace[span.trace_id] = [span]
            else:
                spans.append(span)
        out: list[Span] = []
        now = self.clock()
        for trace_id, spans in by_trace.items():
            decision = self.decisions.get(trace_id)
            if decision is not None:
                self._late(trace_id, spans, decision, out)
            elif self.hasher.sampled(trace_id):
                self._keep(trace_id, spans, "probabilistic", out)
            elif not self.rules.any:
                self._drop(trace_id, spans, "probabilistic")
            else:
                self._rescue_or_hold(trace_id, spans, now, out)
        self._expire(now)
        nbytes = batch.nbytes * len(out) // len(batch.spans) if batch.spans else 0
        return SpanBatch(out, nbytes)

    def flush(self, final: bool = False) -> Batch:
        """The pipeline's timer hook (every 0.5 s, and ``final`` at shutdown).

        For traces it only ever *drops*: a trace is released the moment a rule matches, inside
        ``process``, so a held trace whose wait ends has lost.  Calling it keeps memory and the
        counters current when no traffic arrives.  At shutdown every held trace is decided the
        same way.  For log records it releases those whose trace has been decided "keep".
        """
        if self.logs:
            out: list[LogRecord] = []
            self._release_records(float("inf") if final else self.clock(), out)
            return LogBatch(out)
        self._expire(float("inf") if final else self.clock())
        return SpanBatch()

    # -- log records ------------------------------------------------------------------------------

    def _process_records(self, batch: Batch) -> Batch:
        out: list[LogRecord] = []
        now = self.clock()
        for record in batch.items:
            trace_id = record.trace_id
            if trace_id in _NO_TRACE:
                out.append(record)
                continue
            decision = self.decisions.get(trace_id)
            if decision is None and (self.hasher.sampled(trace_id) or not self.rules.any):
                decision = self.hasher.sampled(trace_id)
            if decision is None:
                held = self.held_records.get(trace_id)
                if held is None:
                    held = self.held_records[trace_id] = (now + self.config.decision_wait, [])
                held[1].append(record)
                if len(self.held_records) > self.config.max_traces:
                    self._release_oldest(out)
            else:
                self._emit_record(trace_id, record, decision, out)
        self._release_records(now, out)
        nbytes = batch.nbytes * len(out) // len(batch) if len(batch) else 0
        return LogBatch(out, nbytes)

    def _emit_record(self, trace_id: bytes, record: LogRecord, keep: bool, out: list[LogRecord]) -> None:
        if not keep:
            self.dropped_records.add(1)
            return
        if self.content is not None and not self.content.sampled(trace_id):
            strip_record_content(record)
            record.attributes["sampling.content"] = "stripped"
        self.kept_records.add(1)
        out.append(record)

    def _release_records(self, now: float, out: list[LogRecord]) -> None:
        """Held records whose trace got decided follow the decision; expired ones are dropped."""
        for trace_id in list(self.held_records):
            deadline, records = self.held_records[trace_id]
            decision = self.decisions.get(trace_id)
            if decision is None and deadline > now:
                continue
            del self.held_records[trace_id]
            for record in records:
                self._emit_record(trace_id, record, bool(decision), out)

    def _release_oldest(self, out: list[LogRecord]) -> None:
        trace_id, (_, records) = self.held_records.popitem(last=False)
        decision = bool(self.decisions.get(trace_id))
        for record in records:
            self._emit_record(trace_id, record, decision, out)

    def shutdown(self) -> None:
        self.flush(final=True)


def _create(config: SamplingConfig, ctx: ComponentContext) -> SamplingProcessor:
    return SamplingProcessor(config, ctx)


FACTORY = Factory("sampling", SamplingConfig, _create, signals=TRACES_AND_LOGS,
                  doc="probabilistic (OTel hash_seed) + keep rules + rate limit + content sampling",
                  example="""\
probabilistic: {sampling_percentage: 25, hash_seed: 42}
keep:
  errors: true
  latency_threshold: 30s
  cost_threshold_usd: 0.50
  attributes:
    - {key: user.feedback, values: [negative, thumbs_down]}
rate_limit: 5000
content_sampling: {percentage: 10}
""")
