"""Argument types for the query commands: times, durations, ``--by`` keys, numbers.

Every type raises :class:`argparse.ArgumentTypeError` with a message a user can act on; the parsers
made by :func:`collector.query.cli.register` print it as ONE line and exit 2 (argparse's default
prints the whole usage block first, which buries the message).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, NoReturn

from config.schema import parse_duration

__all__ = [
    "UsageError", "POLARITIES", "SCORE_SOURCES", "time_arg", "by_arg", "attr_arg", "ATTR_KEY_MAX", "non_negative_float", "positive_int", "non_negative_int",
    "BY_KEYS", "Param", "FILTER_PARAMS", "DEFAULT_LIMIT", "one_line_errors", "now_ns", "clamp_int64", "INT64_MIN", "INT64_MAX",
]

POLARITIES = ("negative", "positive")
SCORE_SOURCES = ("user", "api", "eval")
"""Who gave a score (``--source``; the CLI's parser is built before the store layer loads)."""
"""``--feedback``: which scores a listing keeps (defined in :mod:`collector.query.feedback`)."""

DEFAULT_LIMIT = 20
"""Rows per page of a listing when no limit is given (CLI and HTTP API alike)."""

BY_KEYS = ("model", "provider", "service", "user", "session", "day", "hour")

_RELATIVE = re.compile(r"^\s*\d+(?:\.\d+)?\s*(ms|s|m|h|d|w)\s*$")


class UsageError(Exception):
    """Bad input found after parsing (a missing database, a malformed URL): exit code 2."""


def now_ns() -> int:
    return time.time_ns()


INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
"""The stores keep times as 64-bit integers: a value bound outside this range is an error."""


def clamp_int64(value: int) -> int:
    """``--until 9999-12-31`` or ``--since 0001-01-01`` mean "no bound": the nearest int64."""
    return max(INT64_MIN, min(INT64_MAX, value))


def time_arg(text: str) -> int:
    """``24h`` / ``30d`` / ``90m`` (that long ago) or an ISO 8601 date/time -> unix nanoseconds.

    A date or time without an offset is UTC: the store keeps UTC and a query that meant something
    different on every laptop would be a trap.
    """
    if _RELATIVE.match(text):
        ago = parse_duration(text.strip()) * 1e9
        return clamp_int64(now_ns() - int(ago)) if ago < 2 ** 64 else INT64_MIN
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration ago (90m, 24h, 30d, 2w) nor an ISO 8601 date/time "
            f"(2026-11-01, 2026-11-01T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return clamp_int64(int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000)


def by_arg(text: str) -> list[str]:
    """``model,day`` -> ["model", "day"]; ``attr:KEY`` groups by a span or resource attribute
    (the key keeps its case).  Unknown or repeated keys are errors, not ignored."""
    keys = [_by_key(k.strip()) for k in text.split(",") if k.strip()]
    if not keys:
        raise argparse.ArgumentTypeError(f"expected one or more of {','.join(BY_KEYS)},attr:KEY")
    if len(set(keys)) != len(keys):
        raise argparse.ArgumentTypeError(f"repeated grouping key in {text!r}")
    return keys


ATTR_KEY_MAX = 256
"""Longest attribute key accepted by ``--attr`` / ``attr:KEY`` (OTel keys are short names)."""


def _by_key(text: str) -> str:
    if text[:5].lower() == "attr:":
        return "attr:" + _attr_key(text[5:], text)
    key = text.lower()
    if key not in BY_KEYS:
        raise argparse.ArgumentTypeError(
            f"unknown grouping key {key!r} (valid: {', '.join(BY_KEYS)}, attr:KEY)")
    return key


def _attr_key(key: str, text: str) -> str:
    if not key or len(key) > ATTR_KEY_MAX or not key.isprintable():
        raise argparse.ArgumentTypeError(
            f"{text!r}: an attribute key must be 1 to {ATTR_KEY_MAX} printable characters")
    return key


def attr_arg(text: str) -> tuple[str, str]:
    """``app.feature=search`` -> ("app.feature", "search"): a span or resource attribute, compared
    as text (JSON booleans as ``true`` / ``false``)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return _attr_key(key.strip(), text), value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low or value > 10_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} must be between {low} and 10000000")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report errors as one line (``prog: error: message``) with exit code 2."""

    def error(message: str) -> NoReturn:
        sys.stderr.write(f"{parser.prog}: error: {message}\n")
        raise SystemExit(2)

    parser.error = error  # type: ignore[method-assign]
    return parser


@dataclass(frozen=True)
class Param:
    """One query parameter, defined once for the CLI (``--min-cost``) and the HTTP API
    (``?min_cost=``): its :class:`collector.query.filters.Filters` field, how a value is read
    (raising ``ArgumentTypeError``), and its help."""

    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    repeat: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _text(text: str) -> str:
    return text


FILTER_PARAMS = (
    Param("since", time_arg, "from this time: a duration ago (90m, 24h, 30d, 2w) or ISO 8601 "
          "(UTC if no offset)", "WHEN"),
    Param("until", time_arg, "before this time (same forms)", "WHEN"),
    Param("model", _text, "model (response or request model, exact)"),
    Param("provider", _text, "provider, e.g. openai, anthropic, aws.bedrock"),
    Param("service", _text, "service.name of the emitting app"),
    Param("status", _text, "error = status ERROR", choices=("ok", "error")),
    Param("session", _text, "session id"),
    Param("user", _text, "user id"),
    Param("min_cost", non_negative_float, "cost at least USD", "USD"),
    Param("min_latency_ms", non_negative_float, "duration at least MS milliseconds", "MS"),
    Param("search", _text, "case-insensitive text in prompts, responses or system instructions", "TEXT"),
    Param("attr", attr_arg, "a span or resource attribute equals VALUE (as text), e.g. "
          "app.feature=search; repeat for several", "KEY=VALUE", repeat=True),
    Param("feedback", _text, "has a negative / positive score (thumbs down / up, a low / high value "
          "or label: docs/feedback.md)", choices=POLARITIES),
)
"""The filters every listing shares (the fields of ``Filters``), in the order help shows them."""
