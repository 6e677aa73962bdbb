"""PII detection for the ``redaction`` processor: presidio's recognizers, at line rate.

Why not ``AnalyzerEngine.analyze`` per text?  It runs every recognizer over every text: ~1 ms for a
clean 450-char text and 8-10 ms for a PII-heavy one (the phone recognizer, pure-Python
``phonenumbers`` run for 8 regions, is most of it) -- a few hundred spans/s.  The same recognizers
give the same answers much faster when each one only runs where it could possibly match:

1. **Exact screens.**  Text with no digit, no ``@`` and no IPv6-like colons cannot hold a default
   entity: that is decided in about a microsecond (a bytes ``translate`` for ASCII text) and is
   most content.  Otherwise one scan finds the "numeric runs" (digits joined by at most 4 of
   phonenumbers' own punctuation characters: every card, SSN, IPv4 address and phone number lies
   inside one).  Card, SSN and IPv4 recognizers run only on the runs one of their own regexes
   matches, with one character either side (``\\b`` sees the same neighbours, so the results are
   the whole-text results); the e-mail recognizer only on the whitespace-delimited tokens holding
   an ``@``; IBAN only when two letters precede a run; IPv6 only with ``::``-like colons.  Screens
   are supersets, so they never cost recall: the tests check it against presidio's full engine on
   generated texts.
2. **Phone numbers on small windows, few regions.**  The phone recognizer runs on a window just
   around each run (plus the lead characters and extension phonenumbers' candidate pattern allows
   and one character either side, which its VALID leniency looks at), only for the regions where
   some digit group of the run could be valid there (matches a number-type pattern of the region
   after stripping a national prefix, the region's country code or an international prefix), and
   it stops once the runs are covered.  A run already inside a card, IBAN, SSN or IP finding is
   skipped: a phone match there would only change the placeholder's label.  A match touching a
   window edge makes the whole text go through the recognizer instead.
3. **Caches.**  Whole texts (system prompts repeat on every call) and sentences sit in one
   bounded LRU cache (``functools.lru_cache``: a hit is a lookup in C); phone windows (dates,
   prices, versions repeat) and per-digit-group region verdicts in smaller ones.
4. **No GIL hand-offs.**  The pattern recognizers' own regexes run with ``concurrent=False``
   (:class:`LeanPatterns`): presidio's calls release the GIL around every search, and in the
   collector each release could cost the redaction thread a switch interval.
5. **Replacement in-process** when findings do not overlap (nearly always): the same output as
   presidio-anonymizer's replace/mask/custom operators at a fraction of its per-call cost;
   overlapping findings still go through presidio-anonymizer's conflict resolution.

Context words only raise scores; they are applied (presidio's own enhancer) only when a finding is
below ``score_threshold``.  A blank pipeline has no lemmas, so a tiny component copies each token's
lower-cased text into its lemma for the enhancer to compare.  Presidio's card pattern misses
Mastercard 2-series (2221-2720) and other schemes, so ``AnyCardRecognizer`` adds Luhn-valid numbers
in the IIN ranges of every major scheme.

Everything here is offline: the NLP engine is ``spacy.blank("en")`` unless ``nlp_model`` names an
installed spaCy model (never downloaded), and the e-mail recognizer validates domains with
tldextract's bundled public-suffix snapshot instead of fetching the list at first use.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib.util
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "DEFAULT_ENTITIES", "SCREENED_ENTITIES", "NER_ENTITIES", "Finding", "Outcome",
    "PiiEngine", "LeanPatterns", "LeanIban", "LruCache", "luhn_valid", "card_scheme", "nlp_model_installed",
    "hmac_hex",
]

DEFAULT_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")
SCREENED_ENTITIES = frozenset(DEFAULT_ENTITIES)
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP", "ORGANIZATION"})  # need a spaCy NER model

_PHONE_MIN_DIGITS = 4  # shortest valid national number among the phone regions (DE); IPv4 has 4 too


def _numeric_run_re() -> re.Pattern:
    """Digits joined by <= 4 separators: phonenumbers' punctuation (its matcher's own block rule),
    plus the brackets / plus signs it accepts around blocks and any whitespace."""
    from phonenumbers.phonenumberutil import _VALID_PUNCTUATION

    sep = _VALID_PUNCTUATION + "+\uff0b()\\[\\]\uff08\uff09\uff3b\uff3d\\s"
    return re.compile(rf"\d(?:[{sep}]{{0,4}}\d)*")


_DIGIT = re.compile(r"\d")
_DIGITS = re.compile(r"\d+")
_MAX_BLOCKS = 12  # runs with more digit blocks try every phone region rather than O(n^2) groups
_MAX_NATIONAL_PREFIX = 6  # longest national prefix (with carrier code) of the phone regions: GB 180020
# Every IPv6 form presidio matches has two colons at most 4 hex digits apart ("::" or 8 groups);
# starting at a literal ":" keeps the scan fast.
_IPV6_SCREEN = re.compile(r":(?=[0-9A-Fa-f]{0,4}:)")
_RUN_ENTITIES = ("CREDIT_CARD", "US_SSN", "IP_ADDRESS")  # patterns of digits and separators only
_ASCII_SPACE = (" ", "\n", "\t", "\r", "\f", "\v")
_MAX_LEAD = 10  # phonenumbers' candidate may start with up to 2 x (lead char + 4 punctuation)
# A sentence end (see PiiEngine._segment_bounds) and the text length from which cutting pays.
_SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z])")
_MIN_SEGMENTED = 120
_LOOKUP_FIRST = 64  # texts from this length are looked up in the cache before being screened
_MAX_CACHED_CHARS = 65536  # longer texts are not remembered (a cache of 8192 would hold gigabytes)
_SHORT_CLEAN_ENTRIES = 4096  # short texts remembered as clean (roles, part types, finish reasons)
_NOT_DIGIT = bytes(b for b in range(256) if not 48 <= b <= 57)


def _has_digits(text: str) -> bool:
    """Any decimal digit; ASCII text takes a C-speed bytes path (most content is ASCII)."""
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _NOT_DIGIT))
    return _DIGIT.search(text) is not None


_NUMBER_TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
                 "voip", "pager", "uan", "voicemail")


def _number_type_descs(metadata) -> list:
    """The number-type descriptions phonenumbers' ``is_valid_number`` can accept a number by."""
    descs = (getattr(metadata, name, None) for name in _NUMBER_TYPES)
    return [d for d in descs if d is not None and d.national_number_pattern]


def _run_screen(recognizers) -> re.Pattern | None:
    """One regex matching where any of the recognizers' regexes matches (their alternation, with
    presidio's flags): a run none of them matches cannot hold their entity.  None when a pattern is
    written for the ``regex`` module only: the caller then screens by digit count alone."""
    try:
        return re.compile("|".join(f"(?:{p.regex})" for rec in recognizers for p in getattr(rec, "patterns", ())),
                          re.DOTALL | re.MULTILINE | re.IGNORECASE)
    except re.error:
        return None


def _at_tokens(text: str) -> list[tuple[int, int]]:
    """(start, end) of the whitespace-delimited tokens holding an "@": an e-mail address contains
    no whitespace, so each lies inside one (a token may be wider, cut at ASCII whitespace only)."""
    spans: list[tuple[int, int]] = []
    i = text.find("@")
    while i >= 0:
        start = max(text.rfind(c, 0, i) for c in _ASCII_SPACE) + 1
        ends = [j for j in (text.find(c, i) for c in _ASCII_SPACE) if j >= 0]
        end = min(ends) if ends else len(text)
        spans.append((start, end))
        i = text.find("@", end)
    return spans


def _phone_lead_and_extension() -> tuple[frozenset[str], re.Pattern]:
    """Characters phonenumbers' candidate pattern accepts before the first digit, and its
    extension pattern (``ext. 123``) that may follow the last one."""
    from phonenumbers.phonenumberutil import _EXTN_PATTERNS_FOR_MATCHING, _REGEX_FLAGS, _VALID_PUNCTUATION

    chars = set("+\uff0b(\uff08[\uff3b" + _VALID_PUNCTUATION.replace("\\", ""))
    chars.update(chr(c) for c in range(0x2010, 0x2016))
    chars.update(chr(c) for c in range(0xFF0D, 0xFF10))
    chars.update(" \t\u00a0\u3000")
    return frozenset(chars), re.compile(f"(?:{_EXTN_PATTERNS_FOR_MATCHING})", _REGEX_FLAGS)


def _ascii_digits(text: str) -> str:
    """Fullwidth / Arabic-Indic ... digits as ASCII, as phonenumbers normalizes them."""
    import unicodedata

    return "".join(str(unicodedata.digit(ch, 0)) for ch in text)


def _plausible(digits: str, rule: tuple) -> bool:
    """Whether ``digits`` could parse to a valid number of a region (see ``_plausible_regions``):
    as a national number, after a national prefix, after the region's own country code (parsing
    strips a leading "55" in Brazil, as if "+55" was written), or as an international call."""
    _, general, national, international, country_code = rule
    if general.fullmatch(digits) or (international is not None and international.match(digits)):
        return True
    skip = len(country_code) if digits.startswith(country_code) else 0
    if skip and any(general.fullmatch(digits, skip + k) for k in range(0, _MAX_NATIONAL_PREFIX + 1)):
        return True
    if national is not None and national.match(digits):
        return any(general.fullmatch(digits, k) for k in range(1, min(_MAX_NATIONAL_PREFIX, len(digits)) + 1))
    return False


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# (first digits low, high, allowed lengths) of the major schemes (ISO/IEC 7812 IIN ranges).
_SCHEMES: tuple[tuple[str, int, int, tuple[int, ...]], ...] = (
    ("visa", 4, 4, (13, 16, 19)),
    ("mastercard", 51, 55, (16,)),
    ("mastercard", 2221, 2720, (16,)),
    ("amex", 34, 34, (15,)),
    ("amex", 37, 37, (15,)),
    ("discover", 6011, 6011, (16, 17, 18, 19)),
    ("discover", 644, 649, (16, 17, 18, 19)),
    ("discover", 65, 65, (16, 17, 18, 19)),
    ("unionpay", 62, 62, (16, 17, 18, 19)),
    ("jcb", 3528, 3589, (16, 17, 18, 19)),
    ("diners", 300, 305, (14, 15, 16, 17, 18, 19)),
    ("diners", 36, 36, (14, 15, 16, 17, 18, 19)),
    ("diners", 38, 39, (14, 15, 16, 17, 18, 19)),
    ("mir", 2200, 2204, (16, 17, 18, 19)),
    ("maestro", 50, 50, tuple(range(12, 20))),
    ("maestro", 56, 69, tuple(range(12, 20))),
)


def card_scheme(digits: str) -> str | None:
    """The scheme whose IIN range and length fit ``digits`` (no Luhn check), else None."""
    for name, low, high, lengths in _SCHEMES:
        if len(digits) in lengths and low <= int(digits[: len(str(low))]) <= high:
            return name
    return None


def hmac_hex(secret: bytes, value: str) -> str:
    """HMAC-SHA256: the same value gives the same token (joinable), unguessable without the key."""
    return hmac.new(secret, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def nlp_model_installed(name: str) -> bool:
    """A spaCy model is an installed package or a model directory (cheap: no spaCy import)."""
    try:
        return importlib.util.find_spec(name) is not None or Path(name).is_dir()
    except (ImportError, ValueError):
        return Path(name).is_dir()


class LruCache:
    """A bounded mapping that forgets the least recently used entry (``size`` 0 disables it)."""

    __slots__ = ("size", "_data")

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            try:
                self._data.move_to_end(key)
            except KeyError:  # evicted meanwhile by another pipeline's thread sharing this instance
                pass
        return value

    def put(self, key: Any, value: Any) -> None:
        if self.size <= 0:
            return
        self._data[key] = value
        if len(self._data) > self.size:
            try:
                self._data.popitem(last=False)
            except KeyError:
                pass

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class Finding:
    entity_type: str
    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What redacting one text did: ``text`` is None when nothing was found."""

    text: str | None
    types: tuple[str, ...]
    count: int
    drop: bool


CLEAN = Outcome(None, (), 0, False)


@dataclass(frozen=True)
class CustomPattern:
    entity: str
    regex: str
    score: float
    context: tuple[str, ...] = ()
    name: str = ""


_REGEX_TIMEOUT_S = 60  # presidio's own per-search limit (REGEX_TIMEOUT_SECONDS)


class LeanPatterns:
    """A presidio ``PatternRecognizer``'s analysis as one call on a text: its patterns (compiled with
    the same ``regex`` module and flags), validation and invalidation, giving the matches and scores
    of ``rec.analyze`` without the explanation object and timestamps it builds per match.

    Why: presidio searches with the ``regex`` module's default, which releases the GIL around every
    search.  In the collector, with receiver and exporter threads busy, each release lets another
    thread hold the GIL for up to its switch interval, so the redaction thread waited more than it
    worked (analysis took twice as long there as alone; a search measured beside one busy thread:
    828 per second, against 117,000 with ``concurrent=False``, which is what this passes).  Results
    carry no ``analysis_explanation``, which only context enhancement reads, so the engine uses this
    only at ``score_threshold`` 0.  A search that times out raises, and the redaction processor then
    drops the content (it fails closed) where presidio would log and skip the pattern.
    Per-recognizer de-duplication is left to :meth:`PiiEngine.analyze`, which de-duplicates all
    results the same way.
    """

    __slots__ = ("rec", "entity", "patterns", "metadata", "result")

    def __init__(self, rec) -> None:
        import regex
        from presidio_analyzer import RecognizerResult

        self.rec = rec
        self.result = RecognizerResult
        self.entity = rec.supported_entities[0]
        self.patterns = [(regex.compile(p.regex, flags=rec.global_regex_flags), p.score) for p in rec.patterns]
        self.metadata = {RecognizerResult.RECOGNIZER_NAME_KEY: rec.name,
                         RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: rec.id}

    @staticmethod
    def matcher(rec, lean: bool) -> Callable[[str], list]:
        """``rec``'s analysis of a text: lean when ``lean`` and ``rec`` is a plain pattern recognizer
        or presidio's IBAN recognizer, else ``rec.analyze`` itself."""
        from presidio_analyzer import PatternRecognizer
        from presidio_analyzer.predefined_recognizers import IbanRecognizer

        if lean and type(rec) is IbanRecognizer and not rec.exact_match:
            return LeanIban(rec)
        if lean and isinstance(rec, PatternRecognizer) and type(rec).analyze is PatternRecognizer.analyze:
            return LeanPatterns(rec)
        return lambda text: rec.analyze(text, rec.supported_entities, None)

    def __call__(self, text: str) -> list:
        """presidio's ``__analyze_patterns``: a validator's verdict sets the score to 1 or 0, an
        invalidation to 0, and zero-score matches are left out."""
        out = []
        for pattern, score in self.patterns:
            for match in pattern.finditer(text, concurrent=False, timeout=_REGEX_TIMEOUT_S):
                start, end = match.span()
                if start != end:
                    self._add(out, text, start, end, score)
        return out

    def _add(self, out: list, text: str, start: int, end: int, score: float) -> bool:
        """Append the match ``text[start:end]`` unless its score ends at 0; whether it was kept."""
        found = text[start:end]
        valid = self.rec.validate_result(found)
        if valid is not None:
            score = 1.0 if valid else 0.0
        if self.rec.invalidate_result(found):
            score = 0.0
        if score > 0:
            out.append(self.result(self.entity, start, end, score, recognition_metadata=dict(self.metadata)))
        return score > 0


class LeanIban(LeanPatterns):
    """presidio's ``IbanRecognizer``, which overrides the matching: each match is tried with its
    optional trailing groups first, then shorter, and the first one that validates is kept (so "DE89
    3704 0044 0532 0130 00 2 days" does not swallow the "2")."""

    __slots__ = ()

    def __call__(self, text: str) -> list:
        out = []
        for pattern, score in self.patterns:
            for match in pattern.finditer(text, concurrent=False, timeout=_REGEX_TIMEOUT_S):
                start, whole_end = match.span()
                for group in range(len(match.groups()), 0, -1):
                    end = match.span(group)[1]
                    end = end if end > 0 else whole_end
                    if start != end and self._add(out, text, start, end, score):
                        break
        return out


def _make_recognizers(entities: Iterable[str], custom: Iterable[CustomPattern], nlp_engine) -> list:
    """Presidio's predefined recognizers for ``entities``, offline, plus our own and custom ones."""
    import tldextract
    from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, EmailRecognizer

    offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    offline_tld("example.com")  # builds the suffix trie now, not inside the first batch

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer validating domains against the bundled suffix snapshot."""

        def validate_result(self, pattern_text: str) -> bool:
            return offline_tld(pattern_text).fqdn != ""

    class AnyCardRecognizer(PatternRecognizer):
        """Luhn-valid 12-19 digit numbers in the IIN range of a major scheme (incl. Mastercard 2-series)."""

        def __init__(self) -> None:
            super().__init__(supported_entity="CREDIT_CARD", name="AnyCardRecognizer",
                             patterns=[Pattern("card, any scheme", r"\b\d(?:[- ]?\d){11,18}\b", 0.3)],
                             context=list(CreditCardRecognizer.CONTEXT))

        def validate_result(self, pattern_text: str) -> bool:
            digits = EntityRecognizer.sanitize_value(pattern_text, [("-", ""), (" ", "")])
            return card_scheme(digits) is not None and luhn_valid(digits)

    wanted = set(entities)
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    recognizers = []
    for rec in registry.recognizers:
        if not wanted.intersection(rec.supported_entities):
            continue
        if isinstance(rec, EmailRecognizer):
            rec = OfflineEmailRecognizer()
        recognizers.append(rec)
    if "CREDIT_CARD" in wanted:
        recognizers.append(AnyCardRecognizer())
    for i, c in enumerate(custom):
        recognizers.append(PatternRecognizer(
            supported_entity=c.entity, name=c.name or f"custom_{i}_{c.entity}",
            patterns=[Pattern(c.name or c.entity, c.regex, c.score)], context=list(c.context) or None))
    return recognizers


_LOWER_LEMMA = "genai_collector_lower_lemma"


def _register_lower_lemma() -> None:
    """A spaCy component giving each token its lower-cased text as lemma.  Presidio's context
    enhancer compares lemmas with context words ("call" near a phone number raises its score); a
    blank pipeline has no lemmas, so without this context would never count."""
    from spacy.language import Language

    if not Language.has_factory(_LOWER_LEMMA):
        def lower_lemma(doc):
            for token in doc:
                token.lemma_ = token.lower_
            return doc

        Language.component(_LOWER_LEMMA, func=lower_lemma)


def _make_nlp_engine(nlp_model: str):
    """Presidio's spaCy engine without its download-if-missing: blank English or a named model."""
    import spacy

    _register_lower_lemma()
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    class OfflineSpacyNlpEngine(SpacyNlpEngine):
        def load(self) -> None:
            if nlp_model:
                if not nlp_model_installed(nlp_model):
                    raise ValueError(f"spaCy model {nlp_model!r} is not installed "
                                     f"(pip install it, or remove nlp_model)")
                self.nlp = {"en": spacy.load(nlp_model)}
            else:
                blank = spacy.blank("en")
                blank.add_pipe(_LOWER_LEMMA)
                self.nlp = {"en": blank}

    engine = OfflineSpacyNlpEngine(models=[{"lang_code": "en", "model_name": nlp_model or "blank"}],
                                   ner_model_configuration=NerModelConfiguration())
    engine.load()
    return engine


class PiiEngine:
    """Finds and replaces PII in texts; thread-compatible (one per processor, called from one thread).

    ``operator_for(entity)`` gives ``replace``, ``mask``, ``hash`` or ``drop``.
    """

    def __init__(self, *, entities: Iterable[str] = DEFAULT_ENTITIES, score_threshold: float = 0.0,
                 custom: Iterable[CustomPattern] = (), allow_list: Iterable[str] = (),
                 operator_for: Callable[[str], str] = lambda e: "replace", mask_char: str = "*",
                 hash_secret: bytes = b"", nlp_model: str = "", cache_size: int = 8192) -> None:
        from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.predefined_recognizers import PhoneRecognizer

        self.entities = list(dict.fromkeys(entities))
        custom = list(custom)
        self.threshold = score_threshold
        self.allow = frozenset(allow_list)
        # spaCy serves only context enhancement (a finding below score_threshold) and, with a model,
        # the NER entities: without either it is never built (~10 MB less per collector).
        needs_nlp = bool(nlp_model) or score_threshold > 0
        self.nlp = _make_nlp_engine(nlp_model) if needs_nlp else None
        recognizers = _make_recognizers(self.entities + [c.entity for c in custom], custom, self.nlp)
        self.engine = AnalyzerEngine(registry=RecognizerRegistry(recognizers, supported_languages=["en"]),
                                     nlp_engine=self.nlp, supported_languages=["en"]) if needs_nlp else None
        self._by_entity: dict[str, list] = {}
        for rec in recognizers:
            for ent in rec.supported_entities:
                self._by_entity.setdefault(ent, []).append(rec)
        lean = score_threshold == 0
        self._matchers = {e: [LeanPatterns.matcher(r, lean) for r in recs] for e, recs in self._by_entity.items()}
        self._phone = next((r for r in self._by_entity.get("PHONE_NUMBER", ())
                            if isinstance(r, PhoneRecognizer)), None)
        self._region_rules = self._make_region_rules(self._phone)
        self._numeric_run = _numeric_run_re()
        self._lead_chars, self._extension = _phone_lead_and_extension()
        self._run_screens = {e: _run_screen(self._by_entity.get(e, ())) for e in _RUN_ENTITIES}
        self._custom = [(re.compile(c.regex, re.DOTALL | re.MULTILINE | re.IGNORECASE),
                         [LeanPatterns.matcher(r, lean) for r in recognizers
                          if r.name == (c.name or f"custom_{i}_{c.entity}")])
                        for i, c in enumerate(custom)]
        screened = SCREENED_ENTITIES | {c.entity for c in custom}
        self._unscreened = [LeanPatterns.matcher(r, lean) for r in dict.fromkeys(
            r for e in self.entities if e not in screened for r in self._by_entity.get(e, [])
            if isinstance(r, PatternRecognizer))]
        self._ner = [e for e in self.entities if e in NER_ENTITIES] if nlp_model else []
        self._screened_only = not (self._unscreened or self._ner or self._custom)
        self._segmentable = self._screened_only and self.threshold == 0
        self.unsupported = [e for e in self.entities if e not in self._by_entity and e not in self._ner]
        all_entities = self.entities + [c.entity for c in custom]
        self._operator_names = {e: operator_for(e) for e in all_entities}
        self._mask_char = mask_char
        self._substitutes = {e: self._substitute(e, op, mask_char, hash_secret)
                             for e, op in self._operator_names.items()}
        self._anonymizer: tuple[Any, dict[str, Any]] | None = None  # built when findings first overlap
        self._drop = frozenset(e for e, op in self._operator_names.items() if op == "drop")
        # Whole texts and sentences: functools' LRU, in C (a hit costs a dict lookup, not a Python call).
        self._redact_cached = functools.lru_cache(maxsize=cache_size)(self._redact_uncached)
        self.known_clean: dict[str, bool] = {}  # short texts seen clean (roles, part types): skip them
        self._windows = LruCache(cache_size)
        self._group_regions = LruCache(max(cache_size, 1024))

    # -- configuration helpers ------------------------------------------------------------------

    @staticmethod
    def _make_region_rules(phone) -> list[tuple[str, re.Pattern, re.Pattern | None, re.Pattern | None, str]]:
        """Per phone region: the national number patterns of every number type (a valid number
        matches one, in some region of its country code: validity is decided over all of them, e.g.
        the 25 regions of +1), and the national and international prefixes parsing may strip."""
        if phone is None:
            return []
        import phonenumbers
        from phonenumbers import PhoneMetadata

        rules = []
        for region in phone.supported_regions:
            md = PhoneMetadata.metadata_for_region(region)
            patterns = [desc.national_number_pattern
                        for sibling in phonenumbers.region_codes_for_country_code(md.country_code)
                        for desc in _number_type_descs(PhoneMetadata.metadata_for_region(sibling))]
            national = md.national_prefix_for_parsing or md.national_prefix
            rules.append((region, re.compile("|".join(f"(?:{p})" for p in patterns)),
                          re.compile(national) if national else None,
                          re.compile(md.international_prefix) if md.international_prefix else None,
                          str(md.country_code)))
        return rules

    @staticmethod
    def _substitute(entity: str, operator: str, mask_char: str, secret: bytes) -> Callable[[str], str]:
        """The text that replaces a value (``drop`` never gets here: the attribute goes)."""
        if operator == "mask":
            return lambda value: mask_char * len(value)
        if operator == "hash":
            return lambda value: f"<{entity}:{hmac_hex(secret, value)}>"
        placeholder = f"<{entity}>"
        return lambda value: placeholder

    @staticmethod
    def _operator_config(entity: str, operator: str, mask_char: str, substitute: Callable[[str], str]):
        """The same operator for presidio-anonymizer (used when findings overlap)."""
        from presidio_anonymizer.entities import OperatorConfig

        if operator == "mask":
            return OperatorConfig("mask", {"masking_char": mask_char, "chars_to_mask": 1 << 30,
                                           "from_end": False})
        if operator == "hash":
            return OperatorConfig("custom", {"lambda": substitute})
        return OperatorConfig("replace", {"new_value": f"<{entity}>"})

    # -- detection ---------------------------------------------------------------------------------

    def analyze(self, text: str) -> list[Finding]:
        """Every finding above the threshold, not on the allow list (presidio's semantics)."""
        results = self._raw_results(text)
        if self._ner:
            results += self.engine.analyze(text, language="en", entities=self._ner)
        if not results:
            return []
        if self.threshold > 0 and any(r.score < self.threshold for r in results):
            recognizers = self.engine.registry.recognizers
            results = self.engine._enhance_using_context(
                text, results, self.nlp.process_text(text, "en"), recognizers, None)
        from presidio_analyzer import EntityRecognizer

        results = EntityRecognizer.remove_duplicates([r for r in results if r.score >= self.threshold])
        return [Finding(r.entity_type, r.start, r.end, r.score) for r in results
                if text[r.start:r.end] not in self.allow]

    def _raw_results(self, text: str) -> list:
        """Run each recognizer whose screen says it may match: e-mail and IBAN on the text, cards,
        SSNs and IPv4 addresses on the numeric runs their patterns match, phones on windows."""
        wanted = self._matchers
        results: list = []
        runs, iban = self._numeric_runs(text) if _has_digits(text) else ((), False)
        if "@" in text and "EMAIL_ADDRESS" in wanted:
            results += self._on_windows(text, "EMAIL_ADDRESS", _at_tokens(text))
        whole = (("IBAN_CODE", iban), ("IP_ADDRESS", ":" in text and _IPV6_SCREEN.search(text) is not None))
        for entity, possible in whole:
            if possible and entity in wanted:
                for match in wanted[entity]:
                    results += match(text)
        for entity in _RUN_ENTITIES:
            if runs and entity in wanted and not (entity == "IP_ADDRESS" and whole[1][1]):
                results += self._on_runs(text, entity, runs)
        if runs and self._phone is not None:
            covered = [r for r in results if r.score >= max(self.threshold, self._phone.SCORE)
                       and text[r.start:r.end] not in self.allow]
            results += self._phone_results(text, runs, covered)
        for pattern, matchers in self._custom:
            if pattern.search(text):
                for match in matchers:
                    results += match(text)
        for match in self._unscreened:
            results += match(text)
        return results

    def _on_runs(self, text: str, entity: str, runs) -> list:
        """The entity's recognizers on each run one of their own patterns matches.  Their matches
        consist of digits and separators only, so each lies inside one run."""
        screen = self._run_screens.get(entity)
        spans = [(s, e) for s, e, _, run in runs if screen is None or screen.search(run)]
        return self._on_windows(text, entity, spans)

    def _on_windows(self, text: str, entity: str, spans) -> list:
        """The entity's recognizers on ``text[s-1:e+1]`` for each (s, e), results shifted back.  With
        one character of context either side, ``\\b`` and one-character look-behinds see the same
        neighbours as in the whole text, so every match inside a span is found as it would be
        there, at a fraction of the cost of scanning the whole text with every pattern."""
        out = []
        for s, e in spans:
            ws = max(0, s - 1)
            window = text[ws:e + 1]
            for match in self._matchers[entity]:
                for r in match(window):
                    r.start += ws
                    r.end += ws
                    out.append(r)
        return out

    def _numeric_runs(self, text: str) -> tuple[list[tuple[int, int, int, str]], bool]:
        """Numeric runs of >= 4 digits as (start, end, digits, run), and whether an IBAN may start
        here (two letters right before a run: presidio's IBAN pattern begins ``[A-Z]{2}[0-9]{2}``)."""
        runs = []
        iban = False
        for m in self._numeric_run.finditer(text):
            start, run = m.start(), m.group()
            if not iban and start >= 2 and text[start - 2:start].isalpha() and len(text) - start >= 10:
                iban = True
            if len(run) >= _PHONE_MIN_DIGITS:
                n = len(_DIGIT.findall(run))
                if n >= _PHONE_MIN_DIGITS:
                    runs.append((start, m.end(), n, run))
        return runs, iban

    def _phone_results(self, text: str, runs: list[tuple[int, int, int, str]], covered: list) -> list:
        """Phone matches from windows around numeric runs, shifted back to text offsets.

        A run entirely inside a finding that will be redacted anyway (a card, an IBAN, an SSN, an IP
        address) is skipped: a phone match there could only change the placeholder's label.
        """
        from presidio_analyzer import RecognizerResult

        runs = [r for r in runs if not any(c.start <= r[0] and r[1] <= c.end for c in covered)]
        out = []
        for ws, we, spans in self._phone_windows(text, runs):
            window = text[ws:we]
            found = self._windows.get(window)
            if found is None:
                found = self._phone_in_window(window, [(s - ws, e - ws, n, run) for s, e, n, run in spans])
                self._windows.put(window, found)
            for s, e, score in found:
                if (s == 0 and ws > 0) or (e == len(window) and we < len(text)):
                    return self._phone.analyze(text, ["PHONE_NUMBER"], None)  # window too small
                out.append(RecognizerResult("PHONE_NUMBER", s + ws, e + ws, score,
                                            analysis_explanation=self._phone._get_analysis_explanation("any"),
                                            recognition_metadata={
                                                RecognizerResult.RECOGNIZER_NAME_KEY: self._phone.name,
                                                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self._phone.id}))
        return out

    def _phone_windows(self, text: str, runs):
        """Windows as small as phonenumbers' matcher needs, so that they repeat and cache well: the
        run, the lead characters its candidate pattern allows before it (brackets, plus signs,
        punctuation), an extension after it, and one character either side (the VALID leniency looks
        at them)."""
        windows: list[list] = []
        lead = self._lead_chars
        for s, e, n, run in runs:
            ws = s
            while ws > 0 and s - ws < _MAX_LEAD and text[ws - 1] in lead:
                ws -= 1
            ws = max(0, ws - 1)
            extension = self._extension.match(text, e)
            we = min(len(text), (extension.end() if extension else e) + 1)
            if windows and ws <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], we)
                windows[-1][2].append((s, e, n, run))
            else:
                windows.append([ws, we, [(s, e, n, run)]])
        return windows

    def _phone_in_window(self, window: str, spans) -> tuple[tuple[int, int, float], ...]:
        """presidio's PhoneRecognizer, region by region, only for regions that can validate some
        digit group of the runs, stopping once every run is inside a match."""
        from phonenumbers import PhoneNumberMatcher

        phone = self._phone
        regions = self._plausible_regions([run for _, _, _, run in spans])
        if not regions and ("+" in window or "\uff0b" in window):
            regions = [phone.supported_regions[0]]  # "+" numbers parse the same in every region
        found: dict[tuple[int, int], float] = {}
        for region in regions:
            for match in PhoneNumberMatcher(window, region, leniency=phone.leniency):
                found[(match.start, match.end)] = phone.SCORE
            if found and all(any(a <= s and e <= b for a, b in found) for s, e, _, _ in spans):
                break
        return tuple((s, e, score) for (s, e), score in found.items())

    def _plausible_regions(self, runs: list[str]) -> list[str]:
        """Regions in which some contiguous group of digit blocks of a run could be a valid number:
        the group, or the group without up to 6 national-prefix digits when the region's national
        prefix starts it, matches the national number pattern; or it starts with the region's
        international prefix.  Every candidate and inner candidate phonenumbers' matcher parses is
        such a group, and a valid number must match that pattern, so no match is lost."""
        groups: set[str] = set()
        for run in runs:
            blocks = _DIGITS.findall(run)
            if len(blocks) > _MAX_BLOCKS:
                return list(self._phone.supported_regions)
            for i in range(len(blocks)):
                for j in range(i + 1, len(blocks) + 1):
                    group = "".join(blocks[i:j])
                    if len(group) >= _PHONE_MIN_DIGITS:
                        groups.add(group if group.isascii() else _ascii_digits(group))
        plausible: set[str] = set()
        for group in groups:
            regions = self._group_regions.get(group)
            if regions is None:
                regions = frozenset(rule[0] for rule in self._region_rules if _plausible(group, rule))
                self._group_regions.put(group, regions)
            plausible |= regions
        return [region for region in self._phone.supported_regions if region in plausible]

    # -- replacement -------------------------------------------------------------------------------

    def surely_clean(self, text: str) -> bool:
        """True when no recognizer can match ``text`` nor a string it encodes as JSON: with only
        the default (screened) entities, text without a digit, "@", IPv6-like colons or a JSON
        ``\\u`` escape.  About a microsecond for a typical ASCII message."""
        return (self._screened_only and "@" not in text and not _has_digits(text)
                and (":" not in text or _IPV6_SCREEN.search(text) is None) and "\\u" not in text)

    def redact(self, text: str) -> Outcome:
        """Redact one text (cached): replace/mask/hash each finding; ``drop`` asks to remove it.

        A long text is looked up before it is screened: the same message is seen twice per span
        (the raw attribute and the normalised messages), and a lookup costs less than a scan."""
        if len(text) < _LOOKUP_FIRST:
            if text in self.known_clean:  # "user", "text", "stop": one dict lookup
                return CLEAN
            if self.surely_clean(text):
                if len(self.known_clean) >= _SHORT_CLEAN_ENTRIES:
                    self.known_clean.clear()
                self.known_clean[text] = True
                return CLEAN
        elif len(text) > _MAX_CACHED_CHARS:
            return self._redact_uncached(text)
        return self._redact_cached(text)

    def _redact_uncached(self, text: str) -> Outcome:
        """:meth:`redact` without the whole-text cache (sentences are still looked up one by one)."""
        if self.surely_clean(text):
            return CLEAN
        bounds = self._segment_bounds(text)
        return self._redact_segments(text, bounds) if bounds else self._redact_text(text)

    def _redact_text(self, text: str) -> Outcome:
        """Analyze and redact ``text`` as one piece (no cache)."""
        findings = self.analyze(text)
        if not findings:
            return CLEAN
        types = tuple(sorted({f.entity_type for f in findings}))
        if self._drop.intersection(types):
            return Outcome(None, types, len(findings), True)
        return Outcome(self._replace(text, findings), types, len(findings), False)

    def _segment_bounds(self, text: str) -> list[int] | None:
        """Sentence starts where ``text`` may be cut, or None to analyze it whole.

        Prompts are made of sentences that recur across calls (templates, instructions, earlier
        turns re-sent, retrieved passages) even when the whole text never does, so sentences are
        analyzed and cached one by one.  A cut is made after ``.``, ``!`` or ``?`` and whitespace,
        before an upper-case letter: no default entity can contain that sequence (e-mail addresses
        hold no whitespace; card, SSN, IP and phone numbers no letters; IBANs no full stop), the
        whitespace stays with the first piece, so ``\\b`` and phonenumbers' one-character
        neighbourhood see the same characters as in the whole text.  Only for the default
        (screened) entities at threshold 0: context words and custom patterns may cross sentences.
        """
        if not self._segmentable or len(text) < _MIN_SEGMENTED:
            return None
        bounds = [m.end() for m in _SENTENCE_END.finditer(text)]
        return bounds or None

    def _redact_segments(self, text: str, bounds: list[int]) -> Outcome:
        """:meth:`redact` piece by piece (each piece cached), joined back into one outcome."""
        parts: list[str] = []
        types: set[str] = set()
        count, drop, changed, start = 0, False, False, 0
        for end in bounds + [len(text)]:
            piece = text[start:end]
            start = end
            outcome = self._redact_cached(piece)
            if outcome.count:
                count += outcome.count
                types.update(outcome.types)
                drop = drop or outcome.drop
                changed = True
            parts.append(piece if outcome.text is None else outcome.text)
        if not changed:
            return CLEAN
        return Outcome(None if drop else "".join(parts), tuple(sorted(types)), count, drop)

    def _replace(self, text: str, findings: list[Finding]) -> str:
        """Apply the operators.  Findings that do not overlap (nearly always) are replaced here, with
        exactly presidio-anonymizer's output for replace/mask/custom and a fraction of its cost;
        overlapping ones go to presidio-anonymizer, whose conflict resolution then decides."""
        findings = sorted(findings, key=lambda f: f.start)
        if any(a.end > b.start for a, b in zip(findings, findings[1:])):
            return self._anonymize(text, findings)
        parts, pos = [], 0
        for f in findings:
            parts.append(text[pos:f.start])
            parts.append(self._substitutes[f.entity_type](text[f.start:f.end]))
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts)

    def _anonymize(self, text: str, findings: list[Finding]) -> str:
        """presidio-anonymizer for overlapping findings; it (and the cryptography package it
        imports, ~6 MB) is loaded the first time findings overlap, which most texts never do."""
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import RecognizerResult

        if self._anonymizer is None:
            self._anonymizer = (AnonymizerEngine(), {
                e: self._operator_config(e, op, self._mask_char, self._substitutes[e])
                for e, op in self._operator_names.items()})
        anonymizer, configs = self._anonymizer
        results = [RecognizerResult(f.entity_type, f.start, f.end, f.score) for f in findings]
        operators = {f.entity_type: configs[f.entity_type] for f in findings}
        return anonymizer.anonymize(text, results, operators).text
