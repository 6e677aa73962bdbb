"""``redaction``: no personal data that presidio recognises leaves the collector.

Where it looks: the GenAI content of a span in every dialect, as :mod:`processors.genai_content`
defines it (the canonical ``span.genai`` message lists when the normalize processor filled them,
and the raw attributes storage also keeps: ``gen_ai.input.messages`` & co, OpenLLMetry
``gen_ai.prompt.N.content``, OpenInference ``llm.input_messages.N.message.content``, Langfuse,
Vercel AI SDK, tool definitions, call arguments and results), every span event attribute, configured attribute keys / key patterns, and configured
resource attributes.  JSON strings are parsed and only their string leaves are rewritten, so
structured content stays valid JSON (re-encoded compactly when something was redacted).

What it does with a finding: per entity ``replace`` (``<EMAIL_ADDRESS>``), ``mask`` (``*****``),
``hash`` (``<EMAIL_ADDRESS:hmac-sha256 hex>``: the same value always gives the same token, so it can
still be joined on, and nobody without the secret can confirm a guess) or ``drop`` (the attribute
goes).  Like the OTel Collector's redaction processor it also removes attributes outside
``allowed_keys``, masks values of keys matching ``blocked_key_patterns`` and substrings matching
``blocked_values`` with ``****``, and adds summary attributes.

It fails closed: a span whose redaction raises loses its content attributes (counted) rather than
passing through unredacted.  Detection is in :mod:`processors.pii`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from collector.component import TRACES_AND_LOGS, ComponentContext, Factory, Processor
from collector.model import TRACES, Batch, Span
from collector.model_logs import LogRecord
from config.schema import ConfigError, setting
from processors.genai_content import CONTENT_GENAI_FIELDS, is_content_event_attribute, is_content_key

__all__ = ["RedactionConfig", "CustomRecognizerConfig", "RedactionProcessor", "FACTORY"]

Operator = Literal["replace", "mask", "hash", "drop"]

_SUMMARY_PREFIX = "redaction."
_MASK = "****"
_MAX_CACHED_CHARS = 65536
_MAX_KEYS = 65536  # attribute keys whose classification is remembered
_JSON_CACHE_ENTRIES = 2048  # JSON documents remembered (each twice: as sent and compact)
_MAX_KEY_SETS = 4096  # attribute key sets (one per instrumentation and span type) remembered


def _compile(patterns: list[str], path: str, errors: list[ConfigError]) -> list[re.Pattern]:
    out = []
    for i, p in enumerate(patterns):
        try:
            out.append(re.compile(p))
        except re.error as exc:
            errors.append(ConfigError(f"{path}::{i}", f"invalid regular expression {p!r}: {exc}"))
    return out


@dataclass
class CustomRecognizerConfig:
    """One regex recognizer: ``entity`` is the type reported (and the placeholder's name)."""

    entity: str = setting(pattern=r"[A-Z][A-Z0-9_]*", doc="entity type, e.g. EMPLOYEE_ID")
    regex: str = setting(doc="Python regular expression (case-insensitive, like presidio's)")
    score: float = setting(0.8, min=0.0, max=1.0, doc="presidio score of a match")
    context: list[str] = setting(default_factory=list, doc="words that raise the score when near a match")
    name: str = setting("", doc="recognizer name in logs (default: derived from entity)")

    def validate(self) -> list[ConfigError]:
        errors: list[ConfigError] = []
        _compile([self.regex], "regex", errors)
        return [ConfigError("regex", e.message) for e in errors]


@dataclass
class RedactionConfig:
    entities: list[str] = setting(default_factory=lambda: ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD",
                                                           "US_SSN", "IBAN_CODE", "IP_ADDRESS"],
                                  doc="what to detect; any other presidio pattern entity (URL, CRYPTO, "
                                      "US_BANK_NUMBER...) works too, without the fast screens; PERSON, "
                                      "LOCATION, NRP, ORGANIZATION need nlp_model")
    score_threshold: float = setting(0.0, min=0.0, max=1.0, doc="presidio score below which a finding is "
                                     "ignored. Validated cards, e-mails, IBANs score 1.0, IPs 0.6, SSNs 0.5, "
                                     "phones 0.4; a context word within 5 words adds 0.35")
    recognizers: list[CustomRecognizerConfig] = setting(default_factory=list, doc="custom regex recognizers")
    allow_list: list[str] = setting(default_factory=list, doc="exact values never redacted")
    operator: Operator = setting("replace", doc="for every entity: replace (<EMAIL_ADDRESS>), mask (same "
                                 "length of mask_char), hash (<ENTITY:hex HMAC-SHA256>, joinable), drop (remove "
                                 "the attribute, structured field or event attribute that contains it)")
    operators: dict[str, Operator] = setting(default_factory=dict, doc="per-entity operator, e.g. "
                                             "{EMAIL_ADDRESS: hash}")
    mask_char: str = setting("*", pattern=r".", doc="the character mask writes")
    hash_secret: str = setting("", doc="HMAC key; required by the hash operator and hash_keys (use ${env:VAR})")
    hash_keys: list[str] = setting(default_factory=list, doc="attributes whose whole value becomes its "
                                   "HMAC-SHA256 hex (e.g. [user.id, enduser.id]); span.genai.user_id follows, "
                                   "so per-user sessions and joins still work")
    attributes: list[str] = setting(default_factory=list, doc="more attribute keys to scan as content")
    attribute_patterns: list[str] = setting(default_factory=list, doc="regexes (searched) of more attribute "
                                            "keys to scan")
    resource_attributes: list[str] = setting(default_factory=list, doc="regexes of resource attribute keys "
                                             "to scan (['.*'] for all)")
    allowed_keys: list[str] = setting(default_factory=list, doc="when set, span attributes not listed are "
                                      "removed (OTel semantics; redaction.* summary keys are kept)")
    blocked_key_patterns: list[str] = setting(default_factory=list, doc="regexes: values of matching keys "
                                              "become ****")
    blocked_values: list[str] = setting(default_factory=list, doc="regexes: matching substrings of any string "
                                        "span attribute become ****")
    drop_content_when: dict[str, str] = setting(default_factory=dict, doc="{attribute: value}: when a span "
                                                "attribute equals the value, all its content (attributes, "
                                                "span.genai messages, gen_ai.* event content) is removed and "
                                                "redaction.content.dropped: true is set")
    summary: Literal["silent", "info", "debug"] = setting("info", doc="info: redaction.redacted.count and "
                                                          "redaction.redacted.types on spans where something "
                                                          "happened; debug: also redaction.redacted.keys; "
                                                          "silent: none")
    nlp_model: str = setting("", doc="an installed spaCy model (package name or path) for NER entities; "
                             "never downloaded, a missing one is a config error")
    cache_size: int = setting(8192, min=0, max=10_000_000, doc="entries of each LRU cache (texts, JSON "
                              "documents, phone windows); 0 disables")

    def validate(self) -> list[ConfigError]:
        from processors.pii import NER_ENTITIES, SCREENED_ENTITIES, nlp_model_installed

        errors: list[ConfigError] = []
        for name in ("attribute_patterns", "resource_attributes", "blocked_key_patterns", "blocked_values"):
            _compile(getattr(self, name), name, errors)
        custom = {r.entity for r in self.recognizers}
        known = SCREENED_ENTITIES | custom | NER_ENTITIES
        unknown = [e for e in self.entities if e not in known]
        if unknown:
            known |= _presidio_pattern_entities()
        for i, entity in enumerate(self.entities):
            if entity not in known:
                errors.append(ConfigError(f"entities::{i}", f"unknown entity {entity!r} (presidio pattern "
                                          f"entities, PERSON/LOCATION/NRP/ORGANIZATION with nlp_model, "
                                          f"or a custom recognizer's entity)"))
            elif entity in NER_ENTITIES and not self.nlp_model:
                errors.append(ConfigError(f"entities::{i}", f"{entity} needs a spaCy NER model: set nlp_model"))
        for entity in self.operators:
            if entity not in self.entities and entity not in custom:
                errors.append(ConfigError(f"operators::{entity}", "not one of the configured entities"))
        uses_hash = self.operator == "hash" or "hash" in self.operators.values() or self.hash_keys
        if uses_hash:
            problem = _weak_secret(self.hash_secret)
            if problem:
                errors.append(ConfigError("hash_secret", f"{problem} by the hash operator and hash_keys: a "
                                          f"real secret of at least {MIN_SECRET_CHARS} characters (e.g. "
                                          f"hash_secret: ${{env:REDACTION_SECRET}} with REDACTION_SECRET="
                                          f"$(openssl rand -hex 32))"))
        if self.nlp_model and not nlp_model_installed(self.nlp_model):
            errors.append(ConfigError("nlp_model", f"spaCy model {self.nlp_model!r} is not installed "
                                      f"(pip install it or remove nlp_model)"))
        return errors


MIN_SECRET_CHARS = 16
_PLACEHOLDERS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "your-secret", "secret-here")


def _weak_secret(secret: str) -> str:
    """Why ``secret`` cannot key the HMAC, or "" when it can.  A short or placeholder key lets
    anyone who reads the config (or guesses it) confirm a guessed e-mail address from its hash."""
    if not secret:
        return "required"
    if len(secret) < MIN_SECRET_CHARS:
        return f"too short ({len(secret)} characters) to be used"
    lowered = secret.lower()
    if any(p in lowered for p in _PLACEHOLDERS) or len(set(secret)) < 4:
        return "a placeholder, not a secret, cannot be used"
    return ""


def _presidio_pattern_entities() -> set[str]:
    """Entities of presidio's predefined English pattern recognizers (imports presidio: only used
    when a config names an entity beyond the defaults)."""
    from presidio_analyzer import PatternRecognizer, RecognizerRegistry

    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"])
    return {e for r in registry.recognizers if isinstance(r, PatternRecognizer) for e in r.supported_entities}


def _dumps(value: Any) -> str:
    """Compact JSON text (orjson: a tenth of the standard library's cost); the standard library for
    what orjson declines (integers beyond 64 bits, lone surrogates)."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, ValueError):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _Stats:
    """What redaction did to one span (for the summary attributes and counters)."""

    __slots__ = ("count", "types", "keys")

    def __init__(self) -> None:
        self.count = 0
        self.types: set[str] = set()
        self.keys: set[str] = set()

    def add(self, key: str, count: int, types=()) -> None:
        self.count += count
        self.types.update(types)
        self.keys.add(key)


_DROP = object()  # a walked value whose attribute must be removed

# key classification bits
_CONTENT, _HASH, _BLOCKED, _NOT_ALLOWED = 1, 2, 4, 8


class RedactionProcessor(Processor):
    def __init__(self, config: RedactionConfig, ctx: ComponentContext | None = None) -> None:
        from processors.pii import CustomPattern, LruCache, PiiEngine

        errors = config.validate()
        if errors:
            raise ValueError("; ".join(str(e) for e in errors))
        self.config = config
        operators = dict(config.operators)
        self.engine = PiiEngine(
            entities=config.entities, score_threshold=config.score_threshold,
            custom=[CustomPattern(r.entity, r.regex, r.score, tuple(r.context), r.name) for r in config.recognizers],
            allow_list=config.allow_list, operator_for=lambda e: operators.get(e, config.operator),
            mask_char=config.mask_char, hash_secret=config.hash_secret.encode(), nlp_model=config.nlp_model,
            cache_size=config.cache_size)
        if self.engine.unsupported:
            raise ValueError(f"entities: no recognizer for {self.engine.unsupported}")
        self._secret = config.hash_secret.encode()
        self._extra_keys = frozenset(config.attributes)
        self._key_patterns = [re.compile(p) for p in config.attribute_patterns]
        self._resource_patterns = [re.compile(p) for p in config.resource_attributes]
        self._hash_keys = frozenset(config.hash_keys)
        self._allowed = frozenset(config.allowed_keys)
        self._blocked_keys = [re.compile(p) for p in config.blocked_key_patterns]
        self._blocked_values = (re.compile("|".join(f"(?:{p})" for p in config.blocked_values))
                                if config.blocked_values else None)
        self._drop_when = dict(config.drop_content_when)
        self._kinds: dict[str, int] = {}
        self._key_sets: dict[tuple[str, ...], tuple[tuple[str, int], ...]] = {}
        # Whole JSON documents rarely repeat (system prompts and tool schemas do, and a span's
        # messages are looked up once more by _walk_structure): a smaller cache, less memory.
        self._json_cache = LruCache(min(config.cache_size, _JSON_CACHE_ENTRIES))
        self._resource_kinds: dict[str, bool] = {}
        self._redacted = ctx.counter("redacted_values", "PII values and blocked values redacted") if ctx else None
        self._errors = ctx.counter("redaction_errors", "spans whose content was dropped because "
                                   "redaction failed") if ctx else None
        self._log = ctx.logger if ctx else None

    # -- pipeline protocol ---------------------------------------------------------------------------

    def process(self, batch: Batch) -> Batch:
        """Spans or log records: the same rules, and a log record's body counts as content."""
        total = errors = 0
        resources: set[int] = set()
        if batch.signal == TRACES:
            redact, drop = self._redact_span, self._drop_content
        else:
            redact, drop = self._redact_record, self._drop_record_content
        for item in batch.items:
            stats = _Stats()
            try:
                if self._resource_patterns and id(item.resource) not in resources:
                    resources.add(id(item.resource))
                    self._redact_resource(item.resource.attributes, stats)
                redact(item, stats)
            except Exception as exc:  # fail closed: never pass content we could not check
                errors += 1
                drop(item, stats)
                if self._log:  # the exception type only: its message may quote the content
                    self._log.warning("redaction failed for %r, content dropped: %s", item, type(exc).__name__)
            total += stats.count
            self._summarize(item.attributes, stats)
        if self._redacted is not None:
            self._redacted.add(total)
            self._errors.add(errors)
        return batch

    def shutdown(self) -> None:
        pass

    # -- spans ---------------------------------------------------------------------------------------

    def _kind(self, key: str) -> int:
        kind = self._kinds.get(key)
        if kind is None:
            kind = 0
            if is_content_key(key) or key in self._extra_keys or any(p.search(key) for p in self._key_patterns):
                kind |= _CONTENT
            if key in self._hash_keys:
                kind |= _HASH
            if any(p.search(key) for p in self._blocked_keys):
                kind |= _BLOCKED
            if self._allowed and key not in self._allowed and not key.startswith(_SUMMARY_PREFIX):
                kind |= _NOT_ALLOWED
            if len(self._kinds) >= _MAX_KEYS:  # keys are few in practice; bound hostile ones
                self._kinds.clear()
            self._kinds[key] = kind
        return kind

    def _keyed(self, attrs: dict[str, Any]) -> tuple[tuple[str, int], ...]:
        """(key, kind) of the keys of ``attrs`` redaction acts on.  Spans of one instrumentation
        share their key set, so this is one dict lookup per span, not one per attribute."""
        keys = tuple(attrs)
        acted = self._key_sets.get(keys)
        if acted is None:
            acted = tuple((key, kind) for key in keys if (kind := self._kind(key)) or self._blocked_values)
            if len(self._key_sets) >= _MAX_KEY_SETS:
                self._key_sets.clear()
            self._key_sets[keys] = acted
        return acted

    def _redact_span(self, span: Span, stats: _Stats) -> None:
        attrs = span.attributes
        if self._drops(attrs):
            self._drop_content(span, stats)
        hashed = self._redact_attributes(attrs, stats)
        genai = span.genai
        if genai is not None:
            if hashed and genai.user_id in hashed:
                genai.user_id = hashed[genai.user_id]
            for name in CONTENT_GENAI_FIELDS:
                value = getattr(genai, name)
                if value:
                    new = self._walk_structure(value, stats, "genai." + name)
                    setattr(genai, name, None if new is _DROP else new)
        for event in span.events:
            for key in list(event.attributes):
                self._redact_attribute(event.attributes, key, stats, f"event.{event.name}.{key}")

    def _drops(self, attrs: dict[str, Any]) -> bool:
        """Whether ``drop_content_when`` matches these attributes."""
        return bool(self._drop_when) and any(str(attrs.get(k)) == v for k, v in self._drop_when.items() if k in attrs)

    def _redact_attributes(self, attrs: dict[str, Any], stats: _Stats) -> dict[str, str]:
        """Apply the key rules and content redaction to one attribute map; returns original -> hash
        of the values hashed (so the canonical user id can follow)."""
        hashed: dict[str, str] = {}
        for key, kind in self._keyed(attrs):
            if key not in attrs:  # removed by drop_content_when
                continue
            if kind & _NOT_ALLOWED:
                del attrs[key]
                stats.add(key, 1)
                continue
            if kind & _HASH and attrs[key] is not None:
                original = str(attrs[key])
                attrs[key] = hashed[original] = self._hash(original)
                stats.add(key, 1)
            elif kind & _BLOCKED:
                attrs[key] = _MASK
                stats.add(key, 1)
            elif kind & _CONTENT:
                self._redact_attribute(attrs, key, stats)
            if self._blocked_values is not None and key in attrs:
                self._mask_blocked(attrs, key, stats)
        return hashed

    # -- log records -----------------------------------------------------------------------------------

    def _redact_record(self, record: LogRecord, stats: _Stats) -> None:
        """A log record as a span: its attributes by the same rules, and its body as content (a
        prompt in a body is redacted as one in ``gen_ai.input.messages``); in a ``gen_ai.*`` event
        every attribute but the metadata ones is content, as in span events."""
        attrs = record.attributes
        if self._drops(attrs):
            self._drop_record_content(record, stats)
        self._redact_attributes(attrs, stats)
        name = record.name
        for key in [k for k in attrs if is_content_event_attribute(name, k) and not self._kind(k) & _CONTENT]:
            self._redact_attribute(attrs, key, stats, f"event.{name}.{key}")
        if record.body is not None:
            holder = {"body": record.body}
            self._redact_attribute(holder, "body", stats)
            record.body = holder.get("body")

    def _drop_record_content(self, record: LogRecord, stats: _Stats) -> None:
        """Keep only metadata: the body and content attributes go."""
        attrs = record.attributes
        for key in list(attrs):
            if is_content_event_attribute(record.name, key) or self._kind(key) & _CONTENT:
                del attrs[key]
                stats.add(key, 1)
        if record.body is not None:
            record.body = None
            stats.add("body", 1)
        attrs["redaction.content.dropped"] = True

    def _redact_resource(self, attrs: dict[str, Any], stats: _Stats) -> None:
        for key in list(attrs):
            match = self._resource_kinds.get(key)
            if match is None:
                if len(self._resource_kinds) >= _MAX_KEYS:
                    self._resource_kinds.clear()
                match = self._resource_kinds[key] = any(p.search(key) for p in self._resource_patterns)
            if match:
                self._redact_attribute(attrs, key, stats, "resource." + key)

    def _redact_attribute(self, attrs: dict[str, Any], key: str, stats: _Stats, label: str | None = None) -> None:
        value = attrs[key]
        if isinstance(value, (list, dict)):
            new = self._walk_structure(value, stats, label or key)
        else:
            new = self._walk(value, stats, label or key, parse_json=True)
        if new is _DROP:
            del attrs[key]
        else:
            attrs[key] = new

    def _walk(self, value: Any, stats: _Stats, label: str, parse_json: bool = False) -> Any:
        """``value`` with PII redacted in every string; ``_DROP`` when a ``drop`` entity was found
        anywhere in it.  With ``parse_json``, a JSON string is parsed and re-encoded (only when
        something changed): detection sees the text, not its escapes, and the result stays JSON."""
        if value.__class__ is str:
            if parse_json and value[:1] in "[{":
                done = self._json(value)
                if done is not None:
                    new, count, types = done
                    if count:
                        stats.add(label, count, types)
                    return new
            return self._text(value, stats, label)
        if isinstance(value, (list, dict)):
            redact, known_clean = self.engine.redact, self.engine.known_clean
            for k, item in (enumerate(value) if isinstance(value, list) else value.items()):
                if item.__class__ is str:  # the common leaf: one call, usually surely clean or cached
                    if item in known_clean:  # "user", "text", "stop": no call at all
                        continue
                    outcome = redact(item)
                    if not outcome.count:
                        continue
                    stats.add(label, outcome.count, outcome.types)
                    if outcome.drop:
                        return _DROP
                    value[k] = outcome.text
                elif isinstance(item, (list, dict, str)):
                    new = self._walk(item, stats, label)
                    if new is _DROP:
                        return _DROP
                    value[k] = new
        elif isinstance(value, str):  # a str subclass
            return self._text(str(value), stats, label)
        return value

    def _text(self, text: str, stats: _Stats, label: str) -> Any:
        """One string redacted (``_DROP`` for a ``drop`` entity)."""
        outcome = self.engine.redact(text)
        if outcome.count:
            stats.add(label, outcome.count, outcome.types)
            return _DROP if outcome.drop else outcome.text
        return text

    def _walk_structure(self, value: list | dict, stats: _Stats, label: str) -> Any:
        """:meth:`_walk` for a list/dict (the normalised messages), with two shortcuts on its
        compact JSON encoding (one C call): the same document already redacted as an attribute of
        this span (cached by :meth:`_json` under its compact encoding: the normaliser keeps the
        current dialect's messages as they came), or an encoding that is surely clean."""
        try:
            dump = orjson.dumps(value)
        except (TypeError, ValueError):  # bytes, big integers or other non-JSON values inside: walk it
            return self._walk(value, stats, label)
        cached = self._json_cache.get(dump)
        if cached is not None:
            new, count, types = cached
            if not count:
                return value
            stats.add(label, count, types)
            return _DROP if new is _DROP else orjson.loads(new)
        if self.engine.surely_clean(dump.decode()):
            return value
        return self._walk(value, stats, label)

    def _json(self, raw: str) -> tuple[Any, int, set[str]] | None:
        """(redacted JSON string or _DROP, findings, types) of a JSON document, cached (system
        prompts and tool schemas repeat on every call); None when ``raw`` is not a JSON array/object."""
        cached = self._json_cache.get(raw)
        if cached is not None:
            return cached
        if self.engine.surely_clean(raw):
            return raw, 0, ()
        try:
            parsed = orjson.loads(raw)
        except ValueError:  # not JSON, or JSON orjson declines (integers beyond 64 bits)
            try:
                parsed = json.loads(raw)
            except (ValueError, RecursionError):
                return None
        if not isinstance(parsed, (list, dict)):
            return None
        try:
            compact = orjson.dumps(parsed)  # the key under which _walk_structure finds it
        except (TypeError, ValueError):
            compact = None
        stats = _Stats()
        new = self._walk(parsed, stats, "")
        if new is not _DROP:
            new = _dumps(new) if stats.count else raw
        result = (new, stats.count, stats.types)
        if len(raw) <= _MAX_CACHED_CHARS:
            self._json_cache.put(raw, result)
            if compact is not None:
                self._json_cache.put(compact, result)
        return result

    def _mask_blocked(self, attrs: dict[str, Any], key: str, stats: _Stats) -> None:
        value = attrs[key]
        if isinstance(value, str):
            new, n = self._blocked_values.subn(_MASK, value)
            if n:
                attrs[key] = new
                stats.add(key, n)

    def _drop_content(self, span: Span, stats: _Stats) -> None:
        """Keep only metadata: content attributes, GenAI messages and event content go."""
        attrs = span.attributes
        for key in [k for k in attrs if self._kind(k) & _CONTENT]:
            del attrs[key]
            stats.add(key, 1)
        if span.genai is not None:
            for name in CONTENT_GENAI_FIELDS:
                if getattr(span.genai, name) is not None:
                    setattr(span.genai, name, None)
                    stats.add("genai." + name, 1)
        for event in span.events:
            for key in list(event.attributes):
                if is_content_event_attribute(event.name, key) or self._kind(key) & _CONTENT:
                    del event.attributes[key]
                    stats.add(f"event.{event.name}.{key}", 1)
        attrs["redaction.content.dropped"] = True

    def _hash(self, value: str) -> str:
        from processors.pii import hmac_hex

        return hmac_hex(self._secret, value)

    def _summarize(self, attrs: dict[str, Any], stats: _Stats) -> None:
        if self.config.summary == "silent" or not stats.count:
            return
        attrs["redaction.redacted.count"] = stats.count
        if stats.types:
            attrs["redaction.redacted.types"] = sorted(stats.types)
        if self.config.summary == "debug":
            attrs["redaction.redacted.keys"] = sorted(stats.keys)


FACTORY = Factory("redaction", RedactionConfig, lambda cfg, ctx: RedactionProcessor(cfg, ctx),
                  signals=TRACES_AND_LOGS,
                  doc="redact PII (presidio) and blocked keys/values from GenAI content",
                  example="""\
operators:
  EMAIL_ADDRESS: hash          # same address, same token: still joinable
  CREDIT_CARD: mask
hash_secret: ${env:REDACTION_SECRET}
hash_keys: [user.id]
recognizers:
  - {entity: EMPLOYEE_ID, regex: '\\bEMP-\\d{6}\\b', score: 0.9}
blocked_values: ['sk-[A-Za-z0-9]{20,}']
""")
