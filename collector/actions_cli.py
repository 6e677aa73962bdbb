"""The commands that act on stored data: ``replay`` (send a stored call again) and ``delete``
(erase a person's data).  ``register(subparsers)`` adds them beside the query commands.

Exit codes: 0 done; 1 not found, the endpoint failed, or the database failed; 2 bad input;
3 the call cannot be replayed faithfully (content expired, sampled out or redacted: the one line
on stderr says which).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from collector.query import render
from collector.query.args import UsageError, non_negative_float, one_line_errors, time_arg
from collector.query.cli import _command, _store_args
from collector.query.render import Column, fmt_cost, fmt_ms, fmt_tokens

if TYPE_CHECKING:
    from collector.query.store import Store

__all__ = ["register", "erase", "EraseFailed", "state_locations_of", "REFUSED_EXIT"]

REFUSED_EXIT = 3
_USAGE_KINDS = ("bad_id",)
_NOT_FOUND_KINDS = ("not_found",)


# -- replay ---------------------------------------------------------------------------------------

COMPARE_COLUMNS = [
    Column("", "what", min_width=8),
    Column("stored", "stored", min_width=10),
    Column("replay", "replay", min_width=10),
]


def _comparison(result: dict) -> list[dict]:
    old, new = result["original"], result["replay"]
    tokens = lambda r: f"{fmt_tokens(r['input_tokens'])}/{fmt_tokens(r['output_tokens'])}"  # noqa: E731
    return [
        {"what": "model", "stored": old["model"] or "-", "replay": new["model"] or "-"},
        {"what": "tok in/out", "stored": tokens(old), "replay": tokens(new)},
        {"what": "latency", "stored": fmt_ms(old["latency_ms"]), "replay": fmt_ms(new["latency_ms"])},
        {"what": "cost", "stored": fmt_cost(old["cost_usd"]), "replay": fmt_cost(new["cost_usd"])},
    ]


def _print_replay(result: dict) -> None:
    out = sys.stdout
    old, new = result["original"], result["replay"]
    out.write(render.safe(f"replay of span {old['span_id']} (trace {old['trace_id']})") + "\n")
    render.table(COMPARE_COLUMNS, _comparison(result)).write(out)
    for title, text in (("stored answer", old["answer"]), ("replay answer", new["answer"])):
        out.write(f"\n── {title} ──\n{render.safe(text, multiline=True)}\n")
    out.write("\n── diff ──\n")
    out.write(render.safe(result["diff"], multiline=True) if result["diff"] else "(same answer)\n")
    if "recorded" in result:
        rec = result["recorded"]
        out.write(f"\nrecorded as trace {rec['trace_id']} span {rec['span_id']} (replay.of {old['span_id']})\n")


@_command
def cmd_replay(args: argparse.Namespace, store: Store) -> int:
    from collector.replay import ReplayFailed, ReplayOptions, ReplayRefused, record, replay

    options = ReplayOptions(model=args.model, system=args.system, temperature=args.temperature,
                            base_url=ReplayOptions.base_url_from_env(args.base_url),
                            api_key=os.environ.get(args.api_key_env) or None, timeout=args.timeout,
                            allow_redacted=args.allow_redacted)
    try:
        result = replay(store, args.id, options, args.span)
        if args.record:
            record(store, result)
    except ReplayRefused as exc:
        if exc.kind in _USAGE_KINDS:
            raise UsageError(str(exc)) from None
        sys.stderr.write(f"{args.prog}: {'' if exc.kind in _NOT_FOUND_KINDS else 'refused: '}"
                         f"{render.safe(str(exc))}\n")
        return 1 if exc.kind in _NOT_FOUND_KINDS else REFUSED_EXIT
    except ReplayFailed as exc:
        sys.stderr.write(f"{args.prog}: error: replay failed: {render.safe(str(exc))}\n")
        return 1
    result.pop("_span", None)
    if args.json:
        render.write_json(result, sys.stdout)
    else:
        _print_replay(result)
    return 0


# -- delete ---------------------------------------------------------------------------------------

def state_locations_of(config_path: str) -> list:
    """The session-grouping state of the config's ``genai_session`` processors (none without
    a config file)."""
    from pathlib import Path

    from config.schema import ConfigErrors
    from config.service import load_section
    from exporters.storage.erase import state_locations

    if not Path(config_path).is_file():
        return []
    try:
        return state_locations(load_section(config_path, "processors").values())
    except ConfigErrors as exc:
        raise UsageError(f"{config_path}: {exc.errors[0]}") from None


def erase(target_url: str, sel, states: list, dry_run: bool, who: str) -> dict:
    """Erase (or count) ``sel`` in the store and the session-grouping state, then write the
    audit line; the report as a dict.  The CLI and ``DELETE /api/v1/users/{id}`` both run it."""
    from collector.query.store import error_reason
    from exporters.storage.erase import audit_line, erase_user, forget_in_session_state
    from exporters.storage.store import open_writer

    try:
        writer = open_writer(target_url)
        try:
            report = erase_user(writer, sel, dry_run)
        finally:
            writer.close()
        report.session_state_rows = forget_in_session_state(states, sel, dry_run)
    except Exception as exc:  # noqa: BLE001 - a database / state failure: one line, nothing half-claimed
        raise EraseFailed(f"delete failed: {error_reason(exc)}") from None
    audit_line(report, sel, who)
    return report


class EraseFailed(Exception):
    """The store or the session-grouping state could not be changed (one line)."""


def _confirmed(args: argparse.Namespace, summary: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("refusing to delete without --yes (stdin is not a terminal); try --dry-run first")
    sys.stderr.write(f"{args.prog}: this deletes {summary}. Continue? [y/N] ")
    return sys.stdin.readline().strip().lower() in ("y", "yes")


@_command
def cmd_delete(args: argparse.Namespace, store: Store) -> int:
    import getpass

    from exporters.storage.erase import Selection

    if not args.user:
        raise UsageError("--user must not be empty")
    sel = Selection(args.user, args.session, args.before)
    states = state_locations_of(args.config)
    who = f"{getpass.getuser()} (cli)"
    url = store.target.sqlalchemy_url
    store.close()  # the read-only connections must not hold the snapshot the writer vacuums
    try:
        if not args.dry_run:
            preview = erase(url, sel, states, True, who)
            if not _confirmed(args, preview.summary()):
                sys.stderr.write(f"{args.prog}: nothing deleted\n")
                return 1
        report = erase(url, sel, states, args.dry_run, who)
    except EraseFailed as exc:
        sys.stderr.write(f"{args.prog}: error: {render.safe(str(exc))}\n")
        return 1
    if args.json:
        render.write_json(report.as_dict(), sys.stdout)
    else:
        verb = "would delete" if args.dry_run else "deleted"
        sys.stdout.write(render.safe(f"{verb} for user {args.user}: {report.summary()}") + "\n")
    return 0


# -- registration ---------------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``replay`` and ``delete`` to ``subparsers``."""
    help_text = ("send a stored LLM call again (optionally another model / system prompt) to an "
                 "OpenAI-compatible endpoint and compare the answers")
    p = one_line_errors(subparsers.add_parser("replay", help=help_text, description=help_text))
    _store_args(p)
    p.add_argument("id", metavar="TRACE_OR_SPAN_ID",
                   help="a span id (16 hex), or a trace id / unique prefix whose trace has one LLM call")
    p.add_argument("--span", metavar="SPAN_ID", help="which call of the trace (with a trace id)")
    p.add_argument("--model", help="model to send to (default: the stored request model)")
    p.add_argument("--system", metavar="TEXT", help="replace the system prompt ('' removes it)")
    p.add_argument("--temperature", type=non_negative_float, metavar="T",
                   help="sampling temperature (default: the stored one, if any)")
    p.add_argument("--base-url", metavar="URL",
                   help="OpenAI-compatible API base (default: $OPENAI_BASE_URL, else https://api.openai.com/v1)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (default: OPENAI_API_KEY); "
                        "the key is never printed, logged or stored")
    p.add_argument("--timeout", type=non_negative_float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the answer (default: 60)")
    p.add_argument("--allow-redacted", action="store_true",
                   help="replay content whose PII was replaced by placeholders (as stored)")
    p.add_argument("--record", action="store_true",
                   help="store the replay as a new trace linked to the original (replay.of)")
    p.add_argument("--json", action="store_true", help="the comparison as JSON")
    p.set_defaults(func=cmd_replay, prog=p.prog)

    help_text = ("erase a person's data: their traces, sessions, log records, scores, full-text entries "
                 "and session-grouping state")
    p = one_line_errors(subparsers.add_parser("delete", help=help_text, description=help_text))
    _store_args(p)
    p.add_argument("--user", required=True, help="the user id as stored (after any hashing by redaction)")
    p.add_argument("--session", metavar="ID", help="only this session of theirs")
    p.add_argument("--before", type=time_arg, metavar="WHEN",
                   help="only what started before: a duration ago (30d) or an ISO 8601 date/time")
    p.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="the counts as JSON")
    p.set_defaults(func=cmd_delete, prog=p.prog)
