"""Output: tables that fit an 80-column terminal, JSON, CSV, and (with rich) the trace tree and transcripts.

Tables are for people (short numbers: ``1.2k``, ``850ms``, ``$0.0123``); JSON and CSV are for
programs and carry the exact values under the documented field names.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TextIO

if TYPE_CHECKING:  # rich is imported only for the trace tree and transcripts
    from rich.console import Console
    from rich.text import Text

__all__ = [
    "Column", "Listing", "console", "styled", "safe", "table", "note", "emit", "write_json", "json_line", "write_csv", "fmt_ms", "fmt_tokens", "fmt_cost",
    "fmt_pct", "fmt_time", "message_text", "transcript_lines", "render_trace_tree", "csv_value",
]


def console(file: TextIO | None = None) -> "Console":
    """No markup / emoji / highlighting: cells hold user data, and ``[bold]`` in a prompt is text."""
    from rich.console import Console

    return Console(file=file or sys.stdout, markup=False, emoji=False, highlight=False,
                   soft_wrap=False)


def styled(text: str, style: str = "") -> "Text":
    """One line of plain text with a style: never parsed as markup, control characters shown
    escaped (it is user data: see :func:`safe`)."""
    from rich.text import Text

    return Text(safe(text), style=style)


_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPED = {cp: f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" for cp in _CONTROLS}
_ESCAPED_ONE_LINE = str.maketrans(_ESCAPED)
_ESCAPED_MULTILINE = str.maketrans({cp: e for cp, e in _ESCAPED.items() if cp not in (0x09, 0x0A)})


def safe(text: str, multiline: bool = False) -> str:
    """``text`` with control characters (C0, DEL, C1, bidi overrides) written as ``\\x1b``-style
    escapes: span data comes from any OTLP client, and an ESC sequence in a user id must not
    clear the terminal, nor a newline in a model name break a table row.  ``multiline`` keeps
    newlines and tabs (transcripts)."""
    return text.translate(_ESCAPED_MULTILINE if multiline else _ESCAPED_ONE_LINE)


# -- number formats (tables only) ------------------------------------------------------------------

def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms:.2f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f}s"
    minutes, seconds = divmod(int(ms / 1000), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def fmt_tokens(n: float | None) -> str:
    if n is None:
        return "-"
    if n < 1000:
        return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def fmt_cost(usd: float | None) -> str:
    if usd is None:
        return "-"
    if usd == 0:
        return "$0"
    if usd < 0.01:
        return f"${usd:.5f}"
    if usd < 1:
        return f"${usd:.4f}"
    return f"${usd:,.2f}"


def fmt_pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def fmt_time(iso_time: str | None) -> str:
    """``2026-11-25T04:05:40.123456Z`` -> ``11-25 04:05:40`` (UTC; the year rarely matters here)."""
    return "-" if not iso_time else f"{iso_time[5:10]} {iso_time[11:19]}"


def fmt_text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


# -- listings ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One table column: header, record key (or a function of the record), formatter."""

    header: str
    key: str | Callable[[dict], Any]
    fmt: Callable[[Any], str] = fmt_text
    numeric: bool = False
    min_width: int | None = None
    optional: bool = False
    """Dropped (last first) when the table would not fit the terminal; still in JSON / CSV."""

    def cell(self, record: dict) -> str:
        value = self.key(record) if callable(self.key) else record.get(self.key)
        return safe(self.fmt(value))


COLUMN_GAP = 2
"""Characters between two columns (box divider + padding)."""


def _fit(columns: Sequence[Column], cells: list[list[str]], width: int) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide: numbers keep their full width, optional columns go
    first when that does not fit, then text columns shrink toward their ``min_width``."""
    natural = [max([len(col.header)] + [len(row[i]) for row in cells])
               for i, col in enumerate(columns)]
    floor = [natural[i] if col.numeric else min(natural[i], max(col.min_width or 0, len(col.header)))
             for i, col in enumerate(columns)]
    keep = list(range(len(columns)))

    def total(widths: Sequence[int]) -> int:
        return sum(widths[i] for i in keep) + COLUMN_GAP * (len(keep) - 1)

    while total(floor) > width and any(columns[i].optional for i in keep):
        keep.remove([i for i in keep if columns[i].optional][-1])
    widths = list(natural)
    excess = total(widths) - width
    texts = [i for i in keep if not columns[i].numeric]
    while excess > 0:
        shrinkable = [i for i in texts if widths[i] > floor[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return keep, widths


_SGR = {"bold": "1", "dim": "2", "italic": "3"}


def _paint(text: str, style: str, out: TextIO) -> str:
    """``text`` in ``style`` when ``out`` is a terminal that takes colours (not ``NO_COLOR``,
    not ``TERM=dumb``), else plain, as rich decides."""
    if not style or not out.isatty() or "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return text
    return f"\x1b[{_SGR[style]}m{text}\x1b[0m"


@dataclass(frozen=True)
class Listing:
    """A laid-out table: a title, a header, a rule and the rows, all as lines of text."""

    title: str | None
    header: str
    rule: str
    rows: list[str]

    def write(self, out: TextIO | None = None) -> None:
        out = out or sys.stdout
        lines = ([_paint(self.title, "italic", out)] if self.title else []) + \
            [_paint(self.header, "bold", out), self.rule, *self.rows]
        out.write("\n".join(lines) + "\n")


def table(columns: Sequence[Column], records: Iterable[dict], title: str | None = None,
          width: int | None = None) -> Listing:
    """A table that fits ``width`` (the terminal's; 80, or ``$COLUMNS``, when not a terminal).

    Numbers are never cut; optional columns are dropped when even the numbers do not fit, and text
    columns (names, ids) give way with an ellipsis, widest first; a terminal narrower than the
    numbers gets whole lines.  The look is rich's ``SIMPLE_HEAD`` box (bold header, a rule, two
    spaces between columns), laid out here: :func:`_fit` already knows every width, and rich's
    ``Table`` measuring and wrapping each cell again took 0.25 s for the 240 rows of
    ``stats --by model,day --since 30d`` (and importing rich 0.05 s more).
    """
    cells = [[col.cell(r) for col in columns] for r in records]
    keep, widths = _fit(columns, cells, width or shutil.get_terminal_size().columns)
    gap = " " * COLUMN_GAP

    def line(row: Sequence[str]) -> str:
        return gap.join(_aligned(row[i], widths[i], columns[i].numeric) for i in keep)

    total = sum(widths[i] for i in keep) + COLUMN_GAP * (len(keep) - 1)
    return Listing(title.ljust(total) if title else None, line([col.header for col in columns]),
                   "\u2500" * total, [line(row) for row in cells])


def _aligned(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        text = text[:max(width - 1, 0)] + "\u2026"
    return text.rjust(width) if right else text.ljust(width)


def note(text: str, out: TextIO | None = None) -> None:
    """A dim line in place of an empty listing ("no matches")."""
    out = out or sys.stdout
    out.write(_paint(text, "dim", out) + "\n")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP "CSV injection")."""


def csv_value(value: Any) -> Any:
    """Lists and objects go into one CSV cell as JSON; None is an empty cell.  A text cell that a
    spreadsheet would run as a formula (a prompt is anyone's text: ``=HYPERLINK(...)``) gets a
    leading ``'``, OWASP's advice, so it opens inert; numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    elif isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(records: Sequence[dict], out: TextIO, fields: Sequence[str] | None = None) -> None:
    fields = list(fields or (records[0].keys() if records else []))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for record in records:
        writer.writerow([csv_value(record.get(f)) for f in fields])


def write_json(document: Any, out: TextIO) -> None:
    """Indented JSON (orjson: the stdlib's indenting encoder is pure Python, 0.04 s for a month
    of ``stats --by model,day``)."""
    import orjson

    out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    out.write("\n")


def json_line(document: Any) -> str:
    """One compact JSON document (a JSONL line, without its newline)."""
    import orjson

    return orjson.dumps(document).decode()


def emit(fmt: str, document: Any, records: Sequence[dict], columns: Sequence[Column],
         title: str | None = None, empty: str = "no matches", out: TextIO | None = None) -> None:
    """The one output switch every listing goes through (``--format table|json|csv``)."""
    out = out or sys.stdout
    if fmt == "json":
        write_json(document, out)
    elif fmt == "csv":
        write_csv(records, out)
    elif not records:
        note(empty, out)
    else:
        table(columns, records, title).write(out)


# -- messages ---------------------------------------------------------------------------------------

def _part_text(part: Any) -> str:
    if not isinstance(part, dict):
        return str(part)
    kind = part.get("type")
    if kind == "tool_call":
        args = part.get("arguments")
        args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        return f"[tool call {part.get('name', '?')}] {args}"
    if kind == "tool_call_response":
        response = part.get("response", part.get("result"))
        return response if isinstance(response, str) else json.dumps(response, ensure_ascii=False)
    for key in ("content", "text", "value"):
        if isinstance(part.get(key), str):
            return part[key]
    return json.dumps(part, ensure_ascii=False)


def message_text(message: Any) -> str:
    """The readable text of one message in the OTel shape (``{"role", "parts": [...]}``) or the
    looser shapes older dialects store (``{"role", "content"}``, a bare string)."""
    if isinstance(message, str):
        return message
    if not isinstance(message, dict):
        return json.dumps(message, ensure_ascii=False)
    parts = message.get("parts")
    if isinstance(parts, list):
        return "\n".join(_part_text(p) for p in parts)
    content = message.get("content")
    if isinstance(content, str):
        return content
    return json.dumps(message, ensure_ascii=False)


def _messages(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def transcript_lines(span: dict) -> list[tuple[str, str]]:
    """(role, text) for the system instructions, input messages and output messages of a call."""
    lines: list[tuple[str, str]] = []
    system = _messages(span.get("system_instructions"))
    if system:
        lines.append(("system", "\n".join(message_text(m) for m in system)))
    for message in _messages(span.get("input_messages")) + _messages(span.get("output_messages")):
        role = message.get("role", "?") if isinstance(message, dict) else "?"
        lines.append((str(role), message_text(message)))
    return lines


ROLE_STYLES = {"system": "magenta", "user": "cyan", "assistant": "green", "tool": "yellow"}


def print_transcript(con: "Console", span: dict) -> None:
    for role, text in transcript_lines(span):
        line = styled(f"{role}: ", f"bold {ROLE_STYLES.get(role, 'white')}")
        line.append(safe(text, multiline=True))
        con.print(line)


# -- log records ------------------------------------------------------------------------------------

SEVERITY_NAMES = ("-", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
LEVEL_STYLES = {"WARN": "yellow", "ERROR": "red", "FATAL": "bold red"}


def severity_name(number: int | None) -> str:
    """OTLP SeverityNumber -> its short name (1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20
    ERROR, 21-24 FATAL), for records that sent no severity text."""
    return SEVERITY_NAMES[(min(max(number or 0, 0), 24) + 3) // 4]


def log_text(record: dict) -> str:
    """A log record in one readable piece: its event name, then its body (JSON when structured)."""
    body = record["body"]
    text = body if isinstance(body, str) else "" if body is None else json.dumps(body, ensure_ascii=False)
    return " ".join(x for x in (record["event_name"], text) if x)


# -- trace tree -------------------------------------------------------------------------------------

BAR_WIDTH = 20


MAX_INDENT = 60
"""Characters of tree indentation (20 levels); a deeper chain would otherwise cost O(depth²)."""


def _tree_order(span_list: list[dict]) -> list[tuple[dict, str]]:
    """Depth-first order with box-drawing prefixes.  Spans whose parent is missing are roots;
    iterative (a 10,000-deep chain must not hit the recursion limit) and cycle-proof (spans that
    only reach each other are shown as roots at the end, never lost)."""
    ids = {s["span_id"] for s in span_list}
    children: dict[str | None, list[dict]] = {}
    for s in span_list:
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(s)
    out: list[tuple[dict, str]] = []
    seen: set[str] = set()
    roots = children.get(None, [])
    stack: list[tuple[dict, str, str]] = [(r, "", "") for r in reversed(roots)]
    while True:
        while stack:
            span, line, indent = stack.pop()
            if span["span_id"] in seen:
                continue
            seen.add(span["span_id"])
            out.append((span, line))
            kids = children.get(span["span_id"], [])
            deep = len(indent) >= MAX_INDENT  # past it, deeper levels share one indent
            for i in range(len(kids) - 1, -1, -1):
                last = i == len(kids) - 1
                stack.append((kids[i], indent + ("└─ " if last else "├─ "),
                              indent if deep else indent + ("   " if last else "│  ")))
        rest = [s for s in span_list if s["span_id"] not in seen]
        if not rest:
            return out
        stack.append((rest[0], "", ""))


def _bar(start: float, duration: float, t0: float, total: float) -> str:
    if total <= 0:
        return "█" * BAR_WIDTH
    begin = int((start - t0) / total * BAR_WIDTH)
    begin = min(max(begin, 0), BAR_WIDTH - 1)
    length = max(1, round(duration / total * BAR_WIDTH))
    length = min(length, BAR_WIDTH - begin)
    return "·" * begin + "█" * length + "·" * (BAR_WIDTH - begin - length)


def _start_ms(span: dict) -> float:
    from datetime import datetime

    moment = datetime.fromisoformat(span["start_time"].replace("Z", "+00:00"))
    return moment.timestamp() * 1000


def render_trace_tree(con: "Console", span_list: list[dict]) -> None:
    """The span tree with start/duration bars on a shared time axis, tokens and cost per span."""
    from rich.table import Table

    starts = [_start_ms(s) for s in span_list]
    t0 = min(starts)
    total = max(st + s["duration_ms"] for st, s in zip(starts, span_list)) - t0
    start_of = {s["span_id"]: st for st, s in zip(starts, span_list)}
    t = Table(box=None, pad_edge=False, padding=(0, 1), collapse_padding=True, show_header=True,
              header_style="bold")
    t.add_column("span", overflow="ellipsis", no_wrap=True, ratio=1, min_width=16)
    t.add_column("timeline", no_wrap=True, width=BAR_WIDTH)
    t.add_column("dur", justify="right", no_wrap=True)
    t.add_column("tokens", justify="right", no_wrap=True)
    t.add_column("cost", justify="right", no_wrap=True)
    for span, prefix in _tree_order(span_list):
        label = styled(prefix)
        label.append(safe(span["name"] or "(unnamed)"), style="red" if span["status"] == "error" else "")
        model = span.get("response_model") or span.get("request_model")
        if model and model not in (span["name"] or ""):
            label.append(safe(f" {model}"), style="dim")
        tokens = "-"
        if span["input_tokens"] is not None or span["output_tokens"] is not None:
            tokens = f"{fmt_tokens(span['input_tokens'] or 0)}/{fmt_tokens(span['output_tokens'] or 0)}"
        bar = styled(_bar(start_of[span["span_id"]], span["duration_ms"], t0, total),
                     "red" if span["status"] == "error" else "blue")
        t.add_row(label, bar, fmt_ms(span["duration_ms"]), tokens,
                  fmt_cost(span["cost_usd"]) if span["cost_usd"] is not None else "-")
    con.print(t)
