"""The query commands: ``traces``, ``trace``, ``sessions``, ``session``, ``stats``, ``export`` and
``eval-candidates``.  ``register(subparsers)`` adds them to any argparse parser.

Exit codes: 0 success; 1 not found / database failure during a query; 2 bad input (bad flag value,
malformed URL, missing database, not a genai-collector store), always as ONE line on stderr.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from collector.query import render
from collector.query.args import (
    DEFAULT_LIMIT, FILTER_PARAMS, SCORE_SOURCES, UsageError, by_arg, non_negative_float, non_negative_int, one_line_errors,
    positive_int,
)
from collector.query.render import Column, fmt_cost, fmt_ms, fmt_pct, fmt_time, fmt_tokens

if TYPE_CHECKING:  # the store module loads when a command runs, not when `run` starts
    from collector.query.store import Store

__all__ = ["register", "EXPORT_CSV_FIELDS", "export_chunks", "csv_row"]

Handler = Callable[[argparse.Namespace], int]
TRACE_SORTS = ("time", "cost", "latency", "tokens")  # keys of queries.TRACE_SORTS
SESSION_SORTS = TRACE_SORTS + ("turns",)


# -- argument groups ------------------------------------------------------------------------------

def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH_OR_URL",
                   help="SQLite file, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
                        "(default: the sqlite/postgres exporter of --config)")
    p.add_argument("--config", default="otel-config.yaml", metavar="FILE",
                   help="collector config whose storage exporter is the default --db "
                        "(default: ./otel-config.yaml)")


def _format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="output format (default: table)")


def _filter_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters")
    for param in FILTER_PARAMS:
        g.add_argument(param.flag, type=None if param.choices else param.parse, choices=param.choices,
                       metavar=param.metavar, help=param.help, action="append" if param.repeat else "store")


def _page_args(p: argparse.ArgumentParser, sorts: list[str], default_limit: int = DEFAULT_LIMIT) -> None:
    p.add_argument("--sort", choices=sorts, default="time", help="largest / newest first (default: time)")
    p.add_argument("--limit", type=positive_int, default=default_limit,
                   help=f"rows per page (default: {default_limit})")
    p.add_argument("--offset", type=non_negative_int, default=0, help="rows to skip (default: 0)")


# -- handler plumbing -----------------------------------------------------------------------------

def _command(fn: Callable[[argparse.Namespace, Store], int]) -> Handler:
    """Open the store, run, and turn every expected failure into one line on stderr + exit code."""

    @functools.wraps(fn)
    def handler(args: argparse.Namespace) -> int:
        from collector.query.store import error_reason, open_store

        prog = getattr(args, "prog", "genai-collector")
        try:
            _check_time_range(args)
            store = open_store(args.db, args.config)
            # No cyclic GC while a command runs: its results are plain rows, dicts and lists
            # without cycles, and the collector's passes over the growing heap were up to 40%
            # of `stats` on a 1M-span store (value scan 0.68 -> 0.41 s); the process ends soon after.
            gc.disable()
            try:
                return fn(args, store)
            except store.errors as exc:
                sys.stderr.write(f"{prog}: error: query failed: {error_reason(exc)}\n")
                return 1
            finally:
                gc.enable()
                store.close()
        except UsageError as exc:
            sys.stderr.write(f"{prog}: error: {exc}\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write(f"{prog}: interrupted\n")
            return 130
        except BrokenPipeError:  # `... | head`: the reader left, which is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
            return 0

    return handler


def _check_time_range(args: argparse.Namespace) -> None:
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be earlier than --until")


# -- traces ---------------------------------------------------------------------------------------

def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _tokens(r: dict) -> str:
    """``in/out``; ``-`` when neither is known.  Rollups (traces, sessions) sum to 0 when no call
    reported tokens, and no LLM call really uses 0 in and 0 out, so 0/0 reads as unknown too."""
    tin, tout = r["input_tokens"], r["output_tokens"]
    if not tin and not tout:
        return "-"
    return f"{fmt_tokens(tin)}/{fmt_tokens(tout)}"


def _rollup_cost(r: dict) -> str:
    """A trace's or session's cost; ``-`` when no call in it was priced (the rollup's sum is 0
    then, which must not read as a free call)."""
    return fmt_cost(r["cost_usd"] or None)


TRACE_COLUMNS = [
    Column("start (UTC)", "start_time", fmt_time, numeric=True),
    Column("trace", lambda r: r["trace_id"][:8], numeric=True),
    Column("name", "name", min_width=8),
    Column("model", lambda r: ",".join(r["models"]) or None, min_width=6),
    Column("dur", "duration_ms", fmt_ms, numeric=True),
    Column("tok in/out", _tokens, numeric=True),
    Column("cost", _rollup_cost, numeric=True),
    Column("err", "error_count", lambda n: str(n) if n else "", numeric=True),
]


@_command
def cmd_traces(args: argparse.Namespace, store: Store) -> int:
    from collector.query import queries
    from collector.query.filters import Filters

    rows = queries.list_traces(store, Filters.from_args(args), args.sort, args.limit, args.offset)
    render.emit(args.format, rows, rows, TRACE_COLUMNS, empty="no traces match")
    return 0


@_command
def cmd_trace(args: argparse.Namespace, store: Store) -> int:
    """A full id, or a unique prefix of at least 6 hex digits (the ``traces`` table shows 8)."""
    from collector.query import feedback, queries

    try:
        trace_id, span_list = queries.find_trace(store, args.trace_id)
    except queries.BadId as exc:
        raise UsageError(str(exc)) from None
    if not span_list:
        with store.connect() as conn:
            waiting = len(feedback.trace_scores(conn, trace_id))
        more = f" ({waiting} score{'s' if waiting != 1 else ''} waiting for it)" if waiting else ""
        sys.stderr.write(f"{args.prog}: trace {trace_id} not found{more}\n")
        return 1
    if args.format == "csv":
        render.write_csv(span_list, sys.stdout)
        return 0
    records = queries.get_trace_logs(store, trace_id)
    with store.connect() as conn:
        records["scores"] = feedback.trace_scores(conn, trace_id)
    if args.format == "json":
        render.write_json({"trace_id": trace_id, "spans": span_list, **records}, sys.stdout)
    else:
        _print_trace(trace_id, span_list)
        _print_trace_records(span_list, records)
        given = [s for s in records["scores"] if s["id"] > 0]  # evaluations are listed above
        if given:
            render.table(SCORE_COLUMNS, given, title="feedback and scores").write()
    return 0


SCORE_COLUMNS = [
    Column("time (UTC)", "time", fmt_time, numeric=True),
    Column("span", lambda r: r["span_id"] or "(trace)", numeric=True),
    Column("name", "name", min_width=6),
    Column("value", "value", lambda v: "-" if v is None else f"{v:g}", numeric=True),
    Column("label", "label", min_width=6),
    Column("source", "source"),
    Column("author", "author", min_width=6),
    Column("comment", "comment", min_width=10),
]


@_command
def cmd_feedback(args: argparse.Namespace, store: Store) -> int:
    """Record one score; the trace may not be stored yet (it is attached when it is)."""
    from collector.query import feedback, queries

    trace_id = args.trace_id
    if len(trace_id) < 32:  # a prefix names a stored trace, as `trace` reads it
        try:
            trace_id = queries.resolve_trace_id(store, trace_id) or ""
        except queries.BadId as exc:
            raise UsageError(str(exc)) from None
        if not trace_id:
            raise UsageError(f"no stored trace id starts with {args.trace_id} (to score a trace not "
                             f"stored yet, give all 32 hex characters)")
    document = {"trace_id": trace_id, "span_id": args.span, "session_id": args.session, "name": args.name,
                "value": args.value, "label": args.label, "comment": args.comment, "source": args.source,
                "author": args.author}
    try:
        row = feedback.parse_score(document)
    except feedback.BadScore as exc:
        raise UsageError(f"--{exc.field.replace('_id', '').replace('_', '-')}: {exc.reason}") from None
    with store.connect() as conn:
        if not feedback.scores_present(conn):
            raise UsageError(f"{store.target.shown} has no scores table yet: start the collector "
                             f"(this version) once to migrate the store")
    with store.writer() as conn:
        score_id = feedback.add_score(conn, row)
    record = {"id": score_id, **{k: row[k] for k in feedback.FIELDS}}
    if args.format == "json":
        render.write_json(record, sys.stdout)
    else:
        print(f"score {score_id} recorded for trace {row['trace_id']}"
              + (f" span {row['span_id']}" if row["span_id"] else ""))
    return 0


def _print_trace(trace_id: str, span_list: list[dict]) -> None:
    con = render.console()
    errors = sum(1 for s in span_list if s["status"] == "error")
    tokens = sum((s["input_tokens"] or 0) + (s["output_tokens"] or 0) for s in span_list) or None
    priced = [s["cost_usd"] for s in span_list if s["cost_usd"] is not None]
    cost = sum(priced) if priced else None
    services = sorted({s["service"] for s in span_list if s["service"]})
    con.print(render.styled(f"trace {trace_id}", "bold"))
    con.print(render.safe(f"{span_list[0]['start_time']}  {', '.join(services) or '-'}  "
                          f"{_count(len(span_list), 'span')}  {_count(errors, 'error')}  "
                          f"{fmt_tokens(tokens)} tokens  {fmt_cost(cost)}"))
    render.render_trace_tree(con, span_list)
    for span in span_list:
        lines = render.transcript_lines(span)
        if not lines:
            continue
        model = span["response_model"] or span["request_model"] or ""
        title = span["name"] if model in span["name"] else f"{span['name']} {model}"
        con.rule(render.styled(f"{title} · span {span['span_id']}"), align="left")
        render.print_transcript(con, span)


def _print_trace_records(span_list: list[dict], records: dict[str, list[dict]]) -> None:
    """Evaluations, then the trace's log records (GenAI content records are the transcripts above)."""
    con = render.console()
    names = {s["span_id"]: s["name"] for s in span_list}

    def where(span_id: str | None):
        return render.styled(render.safe(f"  · {names.get(span_id, span_id or 'no span')}"), "dim")

    if records["evaluations"]:
        con.rule(render.styled("evaluations"), align="left")
        for e in records["evaluations"]:
            score = "" if e["score_value"] is None else f"{e['score_value']:g}"
            line = render.styled(render.safe("  ".join(x for x in (e["name"] or "?", score, e["score_label"]) if x)),
                                 "bold")
            line.append(where(e["span_id"]))
            con.print(line)
            if e["explanation"]:
                con.print(render.safe(f"  {e['explanation']}", multiline=True))
    logs = [r for r in records["logs"] if r["kind"] != "content"]
    if logs:
        con.rule(render.styled(f"logs ({len(logs)})"), align="left")
        for r in logs:
            level = render.severity_name(r["severity_number"])
            line = render.styled(f"{r['time'][11:23]}  {render.safe(r['severity'] or level)}  ",
                                 render.LEVEL_STYLES.get(level, ""))
            line.append(render.safe(render.log_text(r), multiline=True))
            line.append(where(r["span_id"]))
            con.print(line)


# -- sessions -------------------------------------------------------------------------------------

SESSION_COLUMNS = [
    Column("start (UTC)", "start_time", fmt_time, numeric=True),
    Column("session", "session_id", min_width=10),
    Column("user", "user_id", min_width=6),
    Column("turns", "turns", numeric=True),
    Column("dur", "duration_ms", fmt_ms, numeric=True),
    Column("tok in/out", _tokens, numeric=True),
    Column("cost", _rollup_cost, numeric=True),
    Column("err", "error_count", lambda n: str(n) if n else "", numeric=True),
]


@_command
def cmd_sessions(args: argparse.Namespace, store: Store) -> int:
    from collector.query import queries
    from collector.query.filters import Filters

    rows = queries.list_sessions(store, Filters.from_args(args), args.sort, args.limit, args.offset)
    render.emit(args.format, rows, rows, SESSION_COLUMNS, empty="no sessions match")
    return 0


TURN_COLUMNS = [
    Column("start (UTC)", "start_time", fmt_time, numeric=True),
    Column("model", lambda r: r["response_model"] or r["request_model"], min_width=8),
    Column("dur", "duration_ms", fmt_ms, numeric=True),
    Column("tok in/out", _tokens, numeric=True),
    Column("cost", "cost_usd", fmt_cost, numeric=True),
    Column("status", "status", numeric=True),
    Column("trace", lambda r: r["trace_id"][:8], numeric=True),
]


@_command
def cmd_session(args: argparse.Namespace, store: Store) -> int:
    from collector.query import queries

    try:
        found = queries.find_session(store, args.session_id)
    except queries.BadId as exc:
        raise UsageError(str(exc)) from None
    if found is None:
        sys.stderr.write(f"{args.prog}: session {args.session_id} not found\n")
        return 1
    if args.format != "table":
        render.emit(args.format, found, found["turns"], TURN_COLUMNS)
        return 0
    con = render.console()
    s = found["session"]
    con.print(render.styled(f"session {s['session_id']}", "bold"))
    con.print(render.safe(f"user {s['user_id'] or '-'}  {s['start_time']}  {fmt_ms(s['duration_ms'])}  "
                          f"{_count(s['turns'], 'turn')}  {_tokens(s)} tokens  {_rollup_cost(s)}  "
                          f"{_count(s['error_count'], 'error')}"))
    render.table(TURN_COLUMNS, found["turns"]).write(con.file)
    for number, turn in enumerate(found["turns"], 1):
        con.rule(render.styled(f"turn {number} · {fmt_time(turn['start_time'])} · trace "
                             f"{turn['trace_id']}"), align="left")
        render.print_transcript(con, turn)
    return 0


# -- stats ----------------------------------------------------------------------------------------

def _stat_columns(by: list[str]) -> list[Column]:
    key_widths = {"day": 10, "hour": 17, "model": 12}
    keys = [Column(k, k, min_width=key_widths.get(k, 8)) for k in by]
    return keys + [
        Column("calls", "requests", fmt_tokens, numeric=True),
        Column("err%", "error_rate", fmt_pct, numeric=True),
        Column("tok in/out", _tokens, numeric=True, optional=True),
        Column("cost", "cost_usd", fmt_cost, numeric=True),
        Column("p50", "latency_p50_ms", fmt_ms, numeric=True),
        Column("p95", "latency_p95_ms", fmt_ms, numeric=True),
        Column("p99", "latency_p99_ms", fmt_ms, numeric=True),
        Column("ttft50", "ttft_p50_ms", fmt_ms, numeric=True, optional=True),
        Column("tok/s", "output_tokens_per_second_p50",
               lambda v: "-" if v is None else f"{v:.0f}", numeric=True, optional=True),
        Column("fb", "feedback_count", lambda n: str(n) if n else "-", numeric=True, optional=True),
        Column("score", "feedback_mean", lambda v: "-" if v is None else f"{v:.2f}", numeric=True,
               optional=True),
    ]


USER_COLUMNS = [
    Column("user", "user_id", min_width=10),
    Column("calls", "requests", fmt_tokens, numeric=True),
    Column("tok in/out", _tokens, numeric=True),
    Column("spend", "cost_usd", fmt_cost, numeric=True),
]

PER_CALL_COLUMNS = [
    Column("model", "model", min_width=10),
    Column("calls", "requests", fmt_tokens, numeric=True),
    Column("total", "cost_usd", fmt_cost, numeric=True),
    Column("avg/call", "cost_per_call_avg", fmt_cost, numeric=True),
    Column("p50/call", "cost_per_call_p50", fmt_cost, numeric=True),
    Column("p95/call", "cost_per_call_p95", fmt_cost, numeric=True),
]

STAT_SECTIONS = {"groups": "groups", "top-users": "top_users", "cost-per-call": "cost_per_call"}


@_command
def cmd_stats(args: argparse.Namespace, store: Store) -> int:
    from collector.query.filters import Filters
    from collector.query.stats import stats as compute_stats

    result = compute_stats(store, Filters.from_args(args), args.by, args.top)
    if args.format == "json":
        render.write_json(result, sys.stdout)
    elif args.format == "csv":
        render.write_csv(result[STAT_SECTIONS[args.section]], sys.stdout)
    elif not result["groups"]:
        render.note("no GenAI calls match")
    else:
        render.table(_stat_columns(args.by), result["groups"],
                     title=f"GenAI calls by {','.join(args.by)} (latency percentiles exact)").write()
        if result["top_users"]:
            render.table(USER_COLUMNS, result["top_users"], title="top users by spend").write()
        render.table(PER_CALL_COLUMNS, result["cost_per_call"], title="cost per call by model").write()
    return 0


# -- export ---------------------------------------------------------------------------------------

EXPORT_CSV_FIELDS = (
    "inference_id", "timestamp", "model_name", "prompt_preview", "response_preview",
    "input_tokens", "output_tokens", "response_time_ms", "cost", "is_success", "trace_id",
    "provider", "operation", "service", "session_id", "user_id", "ttft_ms",
    "output_tokens_per_second", "error_type",
)
PREVIEW_CHARS = 200


def _preview(messages: Any, role: str | None) -> str:
    """The text of the last message (of ``role`` if given), cut to PREVIEW_CHARS characters."""
    candidates = [m for m in (messages or []) if role is None or
                  (isinstance(m, dict) and m.get("role") == role)] or list(messages or [])
    if not candidates:
        return ""
    text = " ".join(render.message_text(candidates[-1]).split())
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"


def csv_row(span: dict) -> dict:
    return {
        "inference_id": span["span_id"], "timestamp": span["start_time"],
        "model_name": span["response_model"] or span["request_model"],
        "prompt_preview": _preview(span["input_messages"], "user"),
        "response_preview": _preview(span["output_messages"], None),
        "input_tokens": span["input_tokens"], "output_tokens": span["output_tokens"],
        "response_time_ms": span["duration_ms"], "cost": span["cost_usd"],
        "is_success": span["status"] != "error", "trace_id": span["trace_id"],
        "provider": span["provider"], "operation": span["operation"], "service": span["service"],
        "session_id": span["session_id"], "user_id": span["user_id"], "ttft_ms": span["ttft_ms"],
        "output_tokens_per_second": span["output_tokens_per_second"],
        "error_type": span["error_type"],
    }


def export_chunks(spans: Iterable[dict], fmt: str, rows_per_chunk: int = 500) -> Iterator[str]:
    """``export``'s output as text chunks: CSV (a header, then :func:`csv_row` per call) or
    JSON Lines (one span per line); the HTTP API streams the same chunks."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(EXPORT_CSV_FIELDS)
    for n, span in enumerate(spans, 1):
        if fmt == "csv":
            record = csv_row(span)
            writer.writerow([render.csv_value(record[f]) for f in EXPORT_CSV_FIELDS])
        else:
            buffer.write(render.json_line(span))
            buffer.write("\n")
        if n % rows_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


@_command
def cmd_export(args: argparse.Namespace, store: Store) -> int:
    from collector.query import queries
    from collector.query.filters import Filters

    try:
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    try:
        for chunk in export_chunks(queries.export_spans(store, Filters.from_args(args), args.all_spans,
                                                        args.limit), args.format):
            out.write(chunk)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


# -- eval candidates ------------------------------------------------------------------------------

EVAL_COLUMNS = [
    Column("start (UTC)", "start_time", fmt_time, numeric=True),
    Column("model", lambda r: r["response_model"] or r["request_model"], min_width=8),
    Column("reasons", lambda r: ",".join(r["reasons"]), min_width=8),
    Column("dur", "duration_ms", fmt_ms, numeric=True),
    Column("cost", "cost_usd", fmt_cost, numeric=True),
    Column("answer", lambda r: _preview(r["output_messages"], None) or None, min_width=10),
]


@_command
def cmd_eval_candidates(args: argparse.Namespace, store: Store) -> int:
    from collector.query import queries
    from collector.query.filters import Filters

    result = queries.eval_candidates(store, Filters.from_args(args), args.limit,
                                     args.slow_ms, args.expensive_usd)
    rows = result["candidates"]
    if args.format == "csv":
        render.write_csv([{**csv_row(r), "reasons": ",".join(r["reasons"])} for r in rows], sys.stdout,
                         fields=(*EXPORT_CSV_FIELDS, "reasons"))
        return 0
    render.emit(args.format, result, rows, EVAL_COLUMNS, empty="no candidates match",
                title=f"eval candidates (slow >= {fmt_ms(result['thresholds']['slow_ms'])}, "
                      f"expensive >= {fmt_cost(result['thresholds']['expensive_usd'])})")
    return 0


# -- registration ---------------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the query commands to ``subparsers`` (each sets ``func`` to a ``handler(args) -> int``)."""

    def add(name: str, handler: Handler, help_text: str, *, filters: bool = True,
            fmt: bool = True) -> argparse.ArgumentParser:
        p = one_line_errors(subparsers.add_parser(name, help=help_text, description=help_text))
        _store_args(p)
        if fmt:
            _format_arg(p)
        if filters:
            _filter_args(p)
        p.set_defaults(func=handler, prog=p.prog)
        return p

    p = add("traces", cmd_traces, "list recent traces")
    _page_args(p, list(TRACE_SORTS))

    p = add("trace", cmd_trace, "one trace: span tree, tokens, cost, chat transcript", filters=False)
    p.add_argument("trace_id", metavar="TRACE_ID",
                   help="32 hex characters, or a unique prefix of at least 6 (as `traces` shows)")

    p = add("sessions", cmd_sessions, "list sessions with turns, duration, tokens, cost")
    _page_args(p, list(SESSION_SORTS))

    p = add("session", cmd_session, "one session's turns in order", filters=False)
    p.add_argument("session_id", metavar="ID")

    p = add("stats", cmd_stats, "volume, errors, tokens, cost, latency/TTFT/throughput percentiles")
    p.add_argument("--by", type=by_arg, default=["model"], metavar="KEYS",
                   help="comma-separated grouping: model,provider,service,user,session,day,hour "
                        "or attr:KEY (a span or resource attribute, e.g. attr:app.feature; "
                        "default: model)")
    p.add_argument("--top", type=positive_int, default=10, help="top users by spend (default: 10)")
    p.add_argument("--section", choices=list(STAT_SECTIONS), default="groups",
                   help="which table --format csv writes (default: groups)")

    p = add("export", cmd_export, "export spans as CSV or JSON Lines", fmt=False)
    p.add_argument("--format", choices=("csv", "jsonl"), default="jsonl",
                   help="csv (one row per call, preview columns) or jsonl (one span per line; default)")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--all-spans", action="store_true",
                   help="every span, not only GenAI calls (spans with a model)")
    p.add_argument("--limit", type=positive_int, help="at most this many spans (oldest first)")

    p = add("feedback", cmd_feedback, "record feedback or a score for a trace or one of its calls "
            "(docs/feedback.md)", filters=False, fmt=False)
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.add_argument("trace_id", metavar="TRACE_ID",
                   help="32 hex characters (the trace need not be stored yet), or a unique prefix of a stored one")
    p.add_argument("--span", metavar="ID", help="the call (span id, 16 hex characters) the score is about")
    p.add_argument("--session", metavar="ID", help="session id")
    p.add_argument("--name", required=True, help="what is scored: thumbs, rating, or any name")
    p.add_argument("--value", type=float, metavar="V", help="numeric score (thumbs: 1 up, 0 down)")
    p.add_argument("--label", metavar="L", help="e.g. positive, negative, correct")
    p.add_argument("--comment", metavar="C", help="free text")
    p.add_argument("--source", choices=SCORE_SOURCES, default="api", help="who scored (default: api)")
    p.add_argument("--author", metavar="A", help="who gave it (a user id, a reviewer)")

    p = add("eval-candidates", cmd_eval_candidates,
            "calls worth turning into eval cases: errors, slow, expensive, refusals, negative feedback")
    p.add_argument("--limit", type=positive_int, default=20, help="how many (default: 20)")
    p.add_argument("--slow-ms", type=non_negative_float, metavar="MS",
                   help="slow threshold (default: p95 latency of the matching calls)")
    p.add_argument("--expensive-usd", type=non_negative_float, metavar="USD",
                   help="expensive threshold (default: p95 cost of the matching calls)")
