"""``genai-collector`` command line: run, validate, and the query commands over the store."""

from __future__ import annotations

import argparse
import logging
import gc
import os
import signal
import sys
import threading

from collector import __version__
from collector.web.server import DEFAULT_ENDPOINT as UI_ENDPOINT  # no web stack: uvicorn loads on use
from config.schema import ConfigErrors

__all__ = ["main", "build_parser"]

DEFAULT_CONFIG = "otel-config.yaml"
_MAX_ERRORS_SHOWN = 100  # a file of 80,000 unknown keys gets a screenful, not 80,000 lines
log = logging.getLogger("genai_collector")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genai-collector",
        description="An OpenTelemetry-Collector-style pipeline for LLM spans: OTLP in, GenAI "
                    "processors, SQLite/Postgres/OTLP out, and queries over the store.")
    parser.add_argument("--version", action="version", version=f"genai-collector {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="start the collector", description=(
        "Start the collector with a config file; SIGTERM/SIGINT stop it gracefully (receivers "
        "first, then the pipelines drain and exporters flush); a second signal exits at once."))
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default: ./{DEFAULT_CONFIG})")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a config file and exit", description=(
        "Load and validate a config: exit 0 when valid, otherwise print every error (one per "
        "line, with its path and line) and exit 1."))
    validate.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default: ./{DEFAULT_CONFIG})")
    validate.set_defaults(func=cmd_validate)

    ui = sub.add_parser("ui", help="serve the web UI and HTTP API over a store", description=(
        "Serve the web UI (calls, traces, conversations, analytics) and the HTTP API (/api/v1) over "
        "a store, e.g. one Postgres fed by several collectors. Without --bearer-token-file it "
        "listens on loopback only."))
    ui.add_argument("--db", metavar="PATH_OR_URL",
                    help="SQLite file, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
                         "(default: the sqlite/postgres exporter of --config)")
    ui.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                    help=f"config whose storage exporter is the default --db (default: ./{DEFAULT_CONFIG})")
    ui.add_argument("--listen", default=UI_ENDPOINT, metavar="HOST:PORT",
                    help=f"address to serve on (default: {UI_ENDPOINT})")
    ui.add_argument("--bearer-token-file", metavar="FILE",
                    help="file whose first line is the token the API and the pages require")
    ui.add_argument("--write-token-file", metavar="FILE",
                    help="file whose first line is the token API writes (feedback) require; it also "
                         "opens what the bearer token opens (default: writes need what reads need)")
    ui.set_defaults(func=cmd_ui)

    _register_query_commands(sub)
    return parser


def _register_query_commands(sub) -> None:
    from collector.actions_cli import register as register_actions
    from collector.query.cli import register

    register(sub)
    register_actions(sub)


def _load_or_report(path: str):
    """The validated config, or None after printing every error (one per line) to stderr."""
    from config.service import load_config

    try:
        return load_config(path)
    except ConfigErrors as exc:
        for error in exc.errors[:_MAX_ERRORS_SHOWN]:
            print(f"error: {error}", file=sys.stderr)
        if len(exc.errors) > _MAX_ERRORS_SHOWN:
            print(f"error: ... and {len(exc.errors) - _MAX_ERRORS_SHOWN} more", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return 1
    for name in cfg.unset_env:
        print(f"warning: environment variable {name} is not set (expanded to an empty string)", file=sys.stderr)
    pipelines = ", ".join(cfg.service.pipelines)
    print(f"{args.config}: valid ({len(cfg.service.pipelines)} pipeline(s): {pipelines})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from collector.logs import setup_logging
    from collector.memtrim import limit_arenas
    from collector.service import Service, StartupError

    cfg = _load_or_report(args.config)
    if cfg is None:
        return 1
    limit_arenas()  # before any thread starts
    logs = cfg.service.telemetry.logs
    setup_logging(logs.level, logs.encoding)
    for name in cfg.unset_env:
        log.warning("environment variable %s is not set (expanded to an empty string)", name)

    stop = threading.Event()
    signals_seen = []

    def on_signal(signum, _frame) -> None:
        signals_seen.append(signum)
        if len(signals_seen) > 1:
            log.warning("second signal: exiting at once")
            os._exit(1)
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    service = Service(cfg)
    try:
        service.start()
    except (StartupError, OSError) as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    _tune_gc()
    while not stop.wait(1.0):
        pass
    clean = service.shutdown()
    log.info("shutdown %s", "complete" if clean else "cut short by shutdown_timeout")
    return 0 if clean else 1


def cmd_ui(args: argparse.Namespace) -> int:
    """Exit 2 for bad input (store, address, token), as the query commands do."""
    from collector.query.args import UsageError
    from collector.query.store import open_store
    from collector.web.api import StoreSource
    from collector.web.app import create_app
    from collector.web.server import UiServer, allowed_hosts, check_exposure, read_token, split_endpoint

    try:
        open_store(args.db, args.config).close()  # a wrong --db is an error now, not on the first page
        host, _ = split_endpoint(args.listen)
        token = read_token(None, args.bearer_token_file)
        write_token = read_token(None, args.write_token_file, "write_token")
        check_exposure(host, token)
        stores = StoreSource(lambda: open_store(args.db, args.config))
        from collector.actions_cli import state_locations_of

        server = UiServer(create_app(stores, token, allowed_hosts(host, token), write_token,
                                     state_locations_of(args.config)), args.listen)
        server.serve_forever()
    except (UsageError, ValueError, OSError) as exc:
        print(f"genai-collector ui: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _tune_gc() -> None:
    """Fewer cyclic-GC passes: ingest allocates ~30 objects per span (dicts, strings, spans) that
    live until exported, so the default gen-0 threshold (700) runs a collection every few spans and
    promotes whole batches into older generations that are then rescanned.  Spans hold no cycles
    that need prompt collection.  Startup objects (modules, config) are frozen out of every scan."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
