"""``genai_cost``: the USD cost of every LLM call, priced per token type.

Runs after ``genai_normalize`` (it reads ``span.genai``).  Prices come from, in order: the user's
``prices:`` (exact model name or regex, optional provider, optional ``effective_from``), then the
genai-prices tables bundled in its wheel.

Never the network: genai-prices can fetch fresh prices (``UpdatePrices``), but only when started;
this module never starts it and reads the *bundled* snapshot directly
(``data_snapshot._bundled_snapshot()``), so even another library in the process that installs a
custom or auto-updated snapshot cannot make pricing depend on a download.

Fast: one ``calc_price`` costs ~65 µs.  Pricing is linear in each token count within a price tier,
so the per-token rates of a (provider, model) are derived ONCE by asking genai-prices itself for
the price of probe usages (which also reproduces its rules: cached tokens are a slice of input
tokens, reasoning a slice of output, an unpriced token type falls back to its parent's rate).  A
span then costs a dict lookup and a few multiplications.  Tiered prices (cliff at N input tokens)
keep one rate set per tier; date- or time-of-day-dependent prices are cached per minute.

Attributes written: ``gen_ai.usage.cost`` (total USD), ``gen_ai.usage.cost_details.<type>`` for
``input`` (uncached input), ``cache_read``, ``cache_write``, ``output`` (non-reasoning output),
``reasoning`` and ``request`` (a per-request fee), and ``gen_ai.usage.cost_source``
(``app``, ``config`` or ``genai-prices``).
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Callable

from collector.component import ComponentContext, Factory, Processor
from collector.model import GenAI, SpanBatch
from config.schema import ConfigError, setting
from processors.genai_conventions import GENAI_PRICES_PROVIDER, normalize_provider

__all__ = ["GenAICostConfig", "PriceConfig", "GenAICostProcessor", "Rates", "FACTORY",
           "COST_ATTRIBUTE", "COST_DETAIL_PREFIX", "COST_SOURCE_ATTRIBUTE"]

COST_ATTRIBUTE = "gen_ai.usage.cost"
COST_DETAIL_PREFIX = "gen_ai.usage.cost_details."
COST_SOURCE_ATTRIBUTE = "gen_ai.usage.cost_source"
_MTOK = 1_000_000
_MAX_UNPRICED_LABELS = 200  # distinct model labels on the unpriced counter; the rest share "_other"
_RESOLUTIONS_PER_SECOND = 200  # new (provider, model) pairs looked up per second at most


@dataclass
class PriceConfig:
    """One user price: USD per million tokens of each type."""

    model: str | None = setting(None, doc="exact model name (case-insensitive)")
    model_regex: str | None = setting(None, doc="regular expression the whole model name must match")
    provider: str | None = setting(None, doc="only for this provider (OTel name, normalised)")
    input_mtok: float = setting(0.0, min=0, doc="USD per million uncached input tokens")
    output_mtok: float = setting(0.0, min=0, doc="USD per million output tokens")
    cache_read_mtok: float | None = setting(None, min=0, doc="cached input read (default: input price)")
    cache_write_mtok: float | None = setting(None, min=0, doc="cache write (default: input price)")
    reasoning_mtok: float | None = setting(None, min=0, doc="reasoning output (default: output price)")
    request: float = setting(0.0, min=0, doc="USD per request")
    # Any: YAML turns an unquoted 2025-06-01 into a date; validate() accepts that and ISO strings
    effective_from: Any = setting(None, doc="ISO date or datetime (UTC if no zone) from which "
                                            "this price applies")

    def validate(self) -> list[ConfigError]:
        problems = []
        if (self.model is None) == (self.model_regex is None):
            problems.append(ConfigError("", "set exactly one of model, model_regex"))
        if self.model_regex is not None:
            try:
                re.compile(self.model_regex)
            except re.error as exc:
                problems.append(ConfigError("model_regex", f"invalid regular expression: {exc}"))
        if self.effective_from is not None:
            try:
                _parse_effective(self.effective_from)
            except (ValueError, TypeError):
                problems.append(ConfigError("effective_from", f"invalid date {self.effective_from!r} "
                                                              "(expected e.g. 2025-06-01 or 2025-06-01T12:00:00Z)"))
        return problems


@dataclass
class GenAICostConfig:
    prices: list[PriceConfig] = setting(default_factory=list, doc="user prices; win over built-in ones")
    model_aliases: dict[str, str] = setting(default_factory=dict,
                                            doc="model name as sent (e.g. an Azure deployment) -> "
                                                "model name to price it as")
    override: bool = setting(False, doc="replace a cost the application already sent")
    builtin_prices: bool = setting(True, doc="use the genai-prices tables shipped in its wheel")


def _parse_effective(value: Any) -> int:
    """ISO date/datetime string, or a YAML date/datetime -> epoch ns (naive means UTC)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, datetime.min.time())
    elif not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    elif len(value.strip()) == 10:
        moment = datetime.combine(date.fromisoformat(value.strip()), datetime.min.time())
    else:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000


# --------------------------------------------------------------------------------------------
# rates

class Rates:
    """USD per token of each type (and per request); ``tiers`` switch rates above an input size."""

    __slots__ = ("input", "cache_read", "cache_write", "output", "reasoning", "request", "tiers", "source")

    def __init__(self, input: float, cache_read: float, cache_write: float, output: float,
                 reasoning: float, request: float = 0.0, source: str = "config",
                 tiers: list[tuple[int, "Rates"]] | None = None) -> None:
        self.input, self.cache_read, self.cache_write = input, cache_read, cache_write
        self.output, self.reasoning, self.request = output, reasoning, request
        self.tiers = tiers
        self.source = source

    def for_input(self, input_tokens: int) -> "Rates":
        """The rates of the tier ``input_tokens`` falls in (genai-prices' cliff rule: > start)."""
        rates = self
        for start, tier in self.tiers or ():
            if input_tokens > start:
                rates = tier
        return rates

    def breakdown(self, g: GenAI) -> tuple[float, float, float, float, float, float]:
        """(uncached input, cache read, cache write, non-reasoning output, reasoning, request) USD."""
        inp = g.input_tokens or 0
        out = g.output_tokens or 0
        cr = g.cache_read_tokens or 0
        cw = g.cache_write_tokens or 0
        rs = g.reasoning_tokens or 0
        r = self.for_input(inp) if self.tiers else self
        uncached = inp - cr - cw
        plain_out = out - rs
        return ((uncached if uncached > 0 else 0) * r.input, cr * r.cache_read, cw * r.cache_write,
                (plain_out if plain_out > 0 else 0) * r.output, rs * r.reasoning, r.request)


def _rates_from_config(p: PriceConfig) -> Rates:
    return Rates(p.input_mtok / _MTOK,
                 (p.input_mtok if p.cache_read_mtok is None else p.cache_read_mtok) / _MTOK,
                 (p.input_mtok if p.cache_write_mtok is None else p.cache_write_mtok) / _MTOK,
                 p.output_mtok / _MTOK,
                 (p.output_mtok if p.reasoning_mtok is None else p.reasoning_mtok) / _MTOK,
                 p.request, "config")


def _probe_rates(model_price: Any) -> Rates:
    """Per-token rates of a flat (untiered) genai-prices ``ModelPrice``, from genai-prices itself."""
    from genai_prices.types import Usage

    n = Decimal(_MTOK)

    def price(**usage: int) -> Decimal:
        return model_price.calc_price(Usage(**usage))["total_price"]

    base = price()
    per_input = (price(input_tokens=_MTOK) - base) / n
    per_output = (price(output_tokens=_MTOK) - base) / n

    def sliced(fallback: Decimal, **usage: int) -> Decimal:
        try:
            return (price(**usage) - base) / n
        except ValueError:  # genai-prices refuses this combination: price the slice as its parent
            return fallback

    return Rates(float(per_input),
                 float(sliced(per_input, input_tokens=_MTOK, cache_read_tokens=_MTOK)),
                 float(sliced(per_input, input_tokens=_MTOK, cache_write_tokens=_MTOK)),
                 float(per_output),
                 float(sliced(per_output, output_tokens=_MTOK, output_reasoning_tokens=_MTOK)),
                 float(base), "genai-prices")


def _rates_from_model_price(model_price: Any) -> Rates:
    """Rates of a genai-prices ``ModelPrice``, one set per input-size tier when it is tiered."""
    from genai_prices.types import ModelPrice, TieredPrices

    values = {k: v for k, v in model_price.__dict__.items() if not k.startswith("_") and v is not None}
    tiered = {k: v for k, v in values.items() if isinstance(v, TieredPrices)}
    if not tiered:
        return _probe_rates(model_price)
    starts = sorted({tier.start for v in tiered.values() for tier in v.tiers})

    def flat_at(input_tokens: int) -> Rates:
        flat = dict(values)
        for key, v in tiered.items():
            flat[key] = v.base
            for tier in v.tiers:  # sorted ascending: the last one passed applies
                if input_tokens > tier.start:
                    flat[key] = tier.price
        return _probe_rates(ModelPrice(**flat))

    base = flat_at(0)
    base.tiers = [(start, flat_at(start + 1)) for start in starts]
    return base


# --------------------------------------------------------------------------------------------
# pricing of one (provider, model): static, a user timeline, or time-dependent built-in prices

class _Pricing:
    """How to get the rates for a span of one model at a time."""

    __slots__ = ("static", "starts", "timeline", "fallback", "dynamic", "_buckets")

    def __init__(self, static: Rates | None = None, starts: list[int] | None = None,
                 timeline: list[Rates] | None = None, fallback: "_Pricing | None" = None,
                 dynamic: Callable[[int], Rates] | None = None) -> None:
        self.static = static
        self.starts = starts
        self.timeline = timeline
        self.fallback = fallback
        self.dynamic = dynamic
        self._buckets: dict[int, Rates] = {}

    def at(self, time_ns: int) -> Rates | None:
        if self.static is not None:
            return self.static
        if self.timeline is not None:
            index = bisect.bisect_right(self.starts, time_ns) - 1  # type: ignore[arg-type]
            if index >= 0:
                return self.timeline[index]
            return self.fallback.at(time_ns) if self.fallback is not None else None
        if self.dynamic is not None:
            bucket = time_ns // 60_000_000_000
            rates = self._buckets.get(bucket)
            if rates is None:
                if len(self._buckets) > 1024:
                    self._buckets.clear()
                rates = self._buckets[bucket] = self.dynamic(bucket * 60_000_000_000)
            return rates
        return None


_UNPRICED = _Pricing()

_DATE_SUFFIX = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8})$")
# Bedrock model ids: optional region prefix, vendor, model, optional version: us.anthropic.x-v2:0
_BEDROCK_ID = re.compile(r"^(?:[a-z]{2,4}\.)?(anthropic|amazon|meta|mistral|cohere|ai21|deepseek|qwen|"
                         r"openai|writer)\.(.+?)(?:-v\d+(?::\d+)?)?$")


def _model_candidates(provider: str | None, model: str) -> list[tuple[str | None, str]]:
    """(genai-prices provider id, model ref) pairs to try, most specific first.

    Covers the forms seen in the wild: OpenRouter / LiteLLM ``openai/gpt-4o``, Vertex
    ``publishers/google/models/gemini-1.5-pro``, Bedrock ``us.anthropic.claude-...-v1:0``,
    dated snapshots (``-2024-08-06``, ``-20240806``, ``@20240620``).
    """
    gp = GENAI_PRICES_PROVIDER.get(provider) if provider else None
    candidates: list[tuple[str | None, str]] = [(gp, model)]
    if "/" in model:
        prefix, _, rest = model.partition("/")
        last = model.rsplit("/", 1)[1]
        prefixed = GENAI_PRICES_PROVIDER.get(normalize_provider(prefix))
        candidates += [(prefixed or gp, rest), (prefixed or gp, last), ("openrouter", model)]
    match = _BEDROCK_ID.match(model)
    if match:
        candidates += [("aws", model),
                       (GENAI_PRICES_PROVIDER.get(normalize_provider(match.group(1))), match.group(2))]
    undated = [(p, _DATE_SUFFIX.sub("", m)) for p, m in candidates if _DATE_SUFFIX.search(m)]
    candidates += undated
    candidates += [(None, m) for p, m in list(candidates) if p is not None]
    seen: set[tuple[str | None, str]] = set()
    return [c for c in candidates if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


class _Builtin:
    """Lookups in genai-prices' bundled snapshot (never an auto-updated or downloaded one)."""

    def __init__(self) -> None:
        from genai_prices import data_snapshot

        self.snapshot = data_snapshot._bundled_snapshot()
        self._by_price: dict[int, Rates] = {}

    def pricing(self, provider: str | None, model: str) -> _Pricing | None:
        self._bound_snapshot_caches()
        for gp, ref in _model_candidates(provider, model):
            try:
                _provider, info = self.snapshot.find_provider_model(ref, None, gp, None)
            except LookupError:
                continue
            if isinstance(info.prices, list):  # start-date or time-of-day conditional prices
                return _Pricing(dynamic=lambda ns, info=info: self._rates(info.get_prices(
                    datetime.fromtimestamp(ns / 1e9, tz=timezone.utc))))
            return _Pricing(static=self._rates(info.prices))
        return None

    def _bound_snapshot_caches(self) -> None:
        """genai-prices memoises every lookup, misses included, without bound; we keep our own
        cache, so its (private) ones are emptied when they grow past what real traffic needs."""
        for name in ("_lookup_cache", "_provider_cache", "_provider_misses"):
            memo = getattr(self.snapshot, name, None)
            if memo is not None and len(memo) > 10_000:
                memo.clear()

    def _rates(self, model_price: Any) -> Rates:
        rates = self._by_price.get(id(model_price))
        if rates is None:
            rates = self._by_price[id(model_price)] = _rates_from_model_price(model_price)
        return rates


@dataclass
class _UserPrice:
    config: PriceConfig
    rates: Rates
    start_ns: int = -(2**63)
    regex: re.Pattern | None = field(default=None)
    provider: str | None = None

    def matches(self, provider: str | None, model: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        if self.regex is not None:
            return self.regex.fullmatch(model) is not None
        return self.config.model.lower() == model.lower()  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# the processor

class GenAICostProcessor(Processor):
    def __init__(self, config: GenAICostConfig, ctx: ComponentContext) -> None:
        self.override = config.override
        self.aliases = {k.lower(): v for k, v in config.model_aliases.items()}
        self.user_prices = [
            _UserPrice(p, _rates_from_config(p),
                       _parse_effective(p.effective_from) if p.effective_from else -(2**63),
                       re.compile(p.model_regex) if p.model_regex else None,
                       normalize_provider(p.provider) if p.provider else None)
            for p in config.prices
        ]
        self.builtin = _Builtin() if config.builtin_prices else None
        self.ctx = ctx
        self.logger = ctx.logger
        self._cache: dict[tuple[str | None, str | None, str | None], _Pricing] = {}
        self._lock = threading.Lock()
        self._unpriced_counters: dict[str, Any] = {}
        self._budget_since, self._budget_left = 0.0, 0
        self.priced = ctx.counter("priced_spans", "GenAI spans given a cost")

    # -- resolution (once per provider + model) --
    def _resolve(self, provider: str | None, response_model: str | None,
                 request_model: str | None) -> _Pricing:
        for model in (response_model, request_model):
            if model:
                pricing = self._resolve_model(provider, self.aliases.get(model.lower(), model))
                if pricing is not None:
                    return pricing
        return _UNPRICED

    def _resolve_model(self, provider: str | None, model: str) -> _Pricing | None:
        builtin = self.builtin.pricing(provider, model) if self.builtin is not None else None
        mine = sorted((u for u in self.user_prices if u.matches(provider, model)),
                      key=lambda u: u.start_ns)  # stable: config order breaks ties
        if not mine:
            return builtin
        starts, timeline = [], []
        for u in mine:
            if starts and starts[-1] == u.start_ns:
                continue  # the first listed wins a tie
            starts.append(u.start_ns)
            timeline.append(u.rates)
        if starts == [-(2**63)]:
            return _Pricing(static=timeline[0])
        return _Pricing(starts=starts, timeline=timeline, fallback=builtin)

    def _pricing(self, g: GenAI) -> _Pricing:
        key = (g.provider, g.response_model, g.request_model)
        pricing = self._cache.get(key)
        if pricing is None:
            if not self._resolution_allowed():
                return _UNPRICED  # not cached: priced once the budget allows
            with self._lock:
                pricing = self._resolve(*key)
                if len(self._cache) > 100_000:  # hostile cardinality: start over rather than grow
                    self._cache.clear()
                self._cache[key] = pricing
        return pricing

    def _resolution_allowed(self) -> bool:
        """A new (provider, model) costs genai-prices lookups (~1 ms when unknown): a client sending
        a new random model name on every span must not turn that into a denial of service."""
        now = time.monotonic()
        if now - self._budget_since >= 1.0:
            self._budget_since, self._budget_left = now, _RESOLUTIONS_PER_SECOND
        if self._budget_left <= 0:
            return False
        self._budget_left -= 1
        return True

    def _unpriced(self, model: str, count: int) -> None:
        """Count unpriced spans by model; warn once per model so the user sees what to add.

        Past ``_MAX_UNPRICED_LABELS`` distinct models (a client sending random names), further
        ones share the ``_other`` label and one last warning: memory and log stay bounded.
        """
        counter = self._unpriced_counters.get(model)
        if counter is None and len(self._unpriced_counters) >= _MAX_UNPRICED_LABELS:
            counter = self._unpriced_counters.get("_other")
        if counter is None:
            if len(self._unpriced_counters) < _MAX_UNPRICED_LABELS:
                self.logger.warning("genai_cost: no price known for model %r; spans keep their tokens "
                                    "with cost null (add the model under prices: or model_aliases:)", model)
                label = model
            else:
                label = "_other"
                if "_other" not in self._unpriced_counters:
                    self.logger.warning("genai_cost: more than %d models without a price; counting the "
                                        "rest as model=\"_other\"", _MAX_UNPRICED_LABELS)
            counter = self.ctx.counter("unpriced_spans", "GenAI spans with tokens but no known price",
                                       model=label)
            self._unpriced_counters[label] = counter
        counter.add(count)

    def process(self, batch: SpanBatch) -> SpanBatch:
        override = self.override
        priced = 0
        unpriced: dict[str, int] = {}
        for span in batch.spans:
            g = span.genai
            if g is None or (g.input_tokens is None and g.output_tokens is None):
                continue
            attrs = span.attributes
            if g.cost_usd is not None and not override:
                if COST_ATTRIBUTE not in attrs:
                    attrs[COST_ATTRIBUTE] = g.cost_usd
                attrs[COST_SOURCE_ATTRIBUTE] = "app"
                continue
            rates = self._pricing(g).at(span.start_time_unix_nano or time.time_ns())
            if rates is None:  # an app-sent cost, if any, is better than none even with override
                model = g.response_model or g.request_model
                if model:
                    unpriced[model] = unpriced.get(model, 0) + 1
                continue
            inp, cr, cw, out, rs, req = rates.breakdown(g)
            total = inp + cr + cw + out + rs + req
            g.cost_usd = total
            attrs[COST_ATTRIBUTE] = total
            attrs[COST_SOURCE_ATTRIBUTE] = rates.source
            attrs[_D_INPUT] = inp
            attrs[_D_OUTPUT] = out
            if cr:
                attrs[_D_CACHE_READ] = cr
            if cw:
                attrs[_D_CACHE_WRITE] = cw
            if rs:
                attrs[_D_REASONING] = rs
            if req:
                attrs[_D_REQUEST] = req
            priced += 1
        self.priced.add(priced)
        for model, count in unpriced.items():
            self._unpriced(model, count)
        return batch

    def shutdown(self) -> None:
        pass


_D_INPUT = COST_DETAIL_PREFIX + "input"
_D_OUTPUT = COST_DETAIL_PREFIX + "output"
_D_CACHE_READ = COST_DETAIL_PREFIX + "cache_read"
_D_CACHE_WRITE = COST_DETAIL_PREFIX + "cache_write"
_D_REASONING = COST_DETAIL_PREFIX + "reasoning"
_D_REQUEST = COST_DETAIL_PREFIX + "request"


def _create(config: GenAICostConfig, ctx: ComponentContext) -> GenAICostProcessor:
    return GenAICostProcessor(config, ctx)


FACTORY = Factory("genai_cost", GenAICostConfig, _create,
                  doc="USD cost per span from genai-prices and user prices",
                  example="""\
model_aliases:
  prod-chat-deployment: gpt-4o          # an Azure deployment name -> the model it serves
prices:                                 # USD per million tokens; wins over genai-prices
  - model: my-llama-70b
    input_mtok: 0.5
    output_mtok: 1.5
  - model_regex: "ft:gpt-4o-mini:.*"
    provider: openai
    input_mtok: 0.3
    output_mtok: 1.2
""")
