"""The commands that act on stored calls: ``replay`` (send a stored call again) and ``delete``
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

__all__ = ["register", "REFUSED_EXIT"]

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
