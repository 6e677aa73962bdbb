"""``/api/v1``: the query CLI's questions over HTTP, answered by the same functions.

Parameters are the CLI's flags with underscores (``--min-cost`` -> ``?min_cost=``), read by the
same parsers (:data:`collector.query.args.FILTER_PARAMS`): a value the CLI refuses is a 400 here,
``{"error": "min_cost: '-1' must be a finite number >= 0"}``, and so is a parameter nobody
defined (a typo must not silently mean "no filter").  Items carry the CLI's ``--format json``
field names.  The endpoints are plain functions: FastAPI runs them in its thread pool, so a slow
query never blocks another request.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterator, Sequence

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from collector.query import feedback, queries
from collector.query.args import (
    DEFAULT_LIMIT, FILTER_PARAMS, Param, UsageError, by_arg, non_negative_int, positive_int,
)
from collector.query.cli import export_chunks
from collector.query.daystats import DayCache
from collector.query.filters import Filters
from collector.query.store import Store, error_reason

__all__ = ["router", "ApiError", "json_response", "StoreSource", "MAX_LIMIT"]

MAX_LIMIT = 1000


class ApiError(Exception):
    """An answer that is not a result: ``status`` and a one-line message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StoreSource:
    """Where the API's store comes from, opened on first use and again after a failure: the
    collector's own SQLite file may not exist until its exporter starts, and a Postgres server may
    be restarting.  ``opener`` raises :class:`UsageError` with a message for the user."""

    def __init__(self, opener: Callable[[], Store]) -> None:
        self._opener = opener
        self._store: Store | None = None
        self.day_cache = DayCache()  # stats answers per past day: see collector.query.daystats

    def get(self) -> Store:
        if self._store is None:
            try:
                self._store = self._opener()
            except UsageError as exc:
                raise ApiError(503, f"store unavailable: {exc}") from None
        return self._store

    def failed(self) -> None:
        """Forget the store after a driver error, so the next request connects anew."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def close(self) -> None:
        self.failed()


def json_response(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


# -- parameters -----------------------------------------------------------------------------------

def _limit(text: str) -> int:
    value = positive_int(text)
    if value > MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_LIMIT}")
    return value


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _page_params(sorts: Sequence[str]) -> tuple[Param, ...]:
    return (Param("sort", str, "largest / newest first (default: time)", choices=tuple(sorts)),
            Param("limit", _limit, f"rows per page, 1 to {MAX_LIMIT} (default: {DEFAULT_LIMIT})"),
            Param("offset", non_negative_int, "rows to skip (default: 0)"))


TRACES_PARAMS = FILTER_PARAMS + _page_params(list(queries.TRACE_SORTS))
SESSIONS_PARAMS = FILTER_PARAMS + _page_params(list(queries.SESSION_SORTS))
CALLS_PARAMS = FILTER_PARAMS + _page_params(list(queries.CALL_SORTS))
STATS_PARAMS = FILTER_PARAMS + (
    Param("by", by_arg, "comma-separated grouping: model,provider,service,user,session,day,hour or "
          "attr:KEY (default: model)"),
    Param("top", positive_int, "top users by spend (default: 10)"))
EXPORT_PARAMS = FILTER_PARAMS + (
    Param("format", str, "csv (one row per call, preview columns) or jsonl (one span per line; default)",
          choices=("csv", "jsonl")),
    Param("all_spans", _flag, "every span, not only GenAI calls (true/false)"),
    Param("limit", positive_int, "at most this many spans (oldest first)"))


def parse(request: Request, params: Sequence[Param]) -> dict[str, Any]:
    """The request's query parameters, each read by its :class:`Param`; ApiError(400) names the
    first bad one."""
    known = {p.name: p for p in params}
    for name in request.query_params:
        if name not in known:
            raise ApiError(400, f"unknown parameter {name!r} (known: {', '.join(known)})")
    out: dict[str, Any] = {}
    for name, param in known.items():
        values = request.query_params.getlist(name)
        if not values:
            continue
        if len(values) > 1 and not param.repeat:
            raise ApiError(400, f"{name}: given more than once")
        parsed = []
        for text in values:
            if "\x00" in text:  # argv cannot hold one; Postgres text cannot either
                raise ApiError(400, f"{name}: contains a NUL character")
            if param.choices and text not in param.choices:
                raise ApiError(400, f"{name}: {text!r} is not one of {', '.join(param.choices)}")
            try:
                parsed.append(param.parse(text))
            except argparse.ArgumentTypeError as exc:
                raise ApiError(400, f"{name}: {exc}") from None
        out[name] = tuple(parsed) if param.repeat else parsed[0]
    since, until = out.get("since"), out.get("until")
    if since is not None and until is not None and since >= until:
        raise ApiError(400, "since: must be earlier than until")
    return out


def _filters(args: dict[str, Any]) -> Filters:
    return Filters(**{name: args.get(name) for name in Filters.__dataclass_fields__})


def openapi_parameters(params: Sequence[Param]) -> dict[str, Any]:
    """The OpenAPI description of ``params`` (the document is generated from the same specs)."""
    out = []
    for p in params:
        schema: dict[str, Any] = {"type": "string"}
        if p.choices:
            schema["enum"] = list(p.choices)
        if p.repeat:
            schema = {"type": "array", "items": schema}
        out.append({"name": p.name, "in": "query", "required": False, "description": p.help,
                    "schema": schema, **({"explode": True} if p.repeat else {})})
    return {"parameters": out}


# -- endpoints ------------------------------------------------------------------------------------

router = APIRouter(prefix="/api/v1")


def _store(request: Request) -> Store:
    return request.app.state.stores.get()


def _run(request: Request, fn: Callable[[Store], Any]) -> Any:
    """``fn(store)``; a driver error is a 503 (and the next request reconnects)."""
    source: StoreSource = request.app.state.stores
    store = source.get()
    try:
        return fn(store)
    except store.errors as exc:
        source.failed()
        raise ApiError(503, f"query failed: {error_reason(exc)}") from None


def _listing(request: Request, params: Sequence[Param], lister: Callable) -> Response:
    args = parse(request, params)
    sort, limit, offset = args.get("sort", "time"), args.get("limit", DEFAULT_LIMIT), args.get("offset", 0)
    items = _run(request, lambda store: lister(store, _filters(args), sort, limit, offset))
    return json_response({"items": items, "sort": sort, "limit": limit, "offset": offset,
                          "next_offset": offset + limit if len(items) == limit else None})


@router.get("/traces", openapi_extra=openapi_parameters(TRACES_PARAMS),
            summary="Traces, newest (or costliest, slowest, biggest) first: `genai-collector traces`")
def traces(request: Request) -> Response:
    return _listing(request, TRACES_PARAMS, queries.list_traces)


@router.get("/calls", openapi_extra=openapi_parameters(CALLS_PARAMS),
            summary="GenAI calls (spans with a model), newest first: `export`'s records, paged")
def calls(request: Request) -> Response:
    return _listing(request, CALLS_PARAMS, queries.list_calls)


def _one(request: Request, what: str, ident: str, find: Callable[[Store, str], dict | None]) -> Response:
    """One trace / session: 400 for a malformed or ambiguous id, 404 when unknown."""
    parse(request, ())

    def run(store: Store) -> dict | None:
        try:
            return find(store, ident)
        except queries.BadId as exc:
            raise ApiError(400, f"{what}_id: {exc}") from None

    found = _run(request, run)
    if found is None:
        raise ApiError(404, f"{what} {ident} not found")
    return json_response(found)


def _trace_detail(store: Store, text: str) -> dict | None:
    trace_id = queries.resolve_trace_id(store, text)
    return queries.trace_detail(store, trace_id) if trace_id else None


@router.get("/traces/{trace_id}", summary="One trace: spans with messages, attributes, events; its logs")
def trace(request: Request, trace_id: str) -> Response:
    return _one(request, "trace", trace_id, _trace_detail)


@router.get("/sessions", openapi_extra=openapi_parameters(SESSIONS_PARAMS),
            summary="Sessions with turns, duration, tokens, cost: `genai-collector sessions`")
def sessions(request: Request) -> Response:
    return _listing(request, SESSIONS_PARAMS, queries.list_sessions)


@router.get("/sessions/{session_id}", summary="One session and its turns in order: `genai-collector session`")
def session(request: Request, session_id: str) -> Response:
    return _one(request, "session", session_id, queries.find_session)


@router.get("/stats", openapi_extra=openapi_parameters(STATS_PARAMS),
            summary="Volume, errors, tokens, cost, latency/TTFT percentiles: `genai-collector stats`")
def stats(request: Request) -> Response:
    args = parse(request, STATS_PARAMS)
    cache = request.app.state.stores.day_cache
    return json_response(_run(request, lambda store: cache.stats(
        store, _filters(args), args.get("by", ["model"]), args.get("top", 10))))


@router.get("/export", openapi_extra=openapi_parameters(EXPORT_PARAMS),
            summary="Matching spans as CSV or JSON Lines, streamed: `genai-collector export`")
def export(request: Request) -> StreamingResponse:
    args = parse(request, EXPORT_PARAMS)
    fmt = args.get("format", "jsonl")
    store = _store(request)
    spans = queries.export_spans(store, _filters(args), args.get("all_spans", False), args.get("limit"))
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(_guarded(export_chunks(spans, fmt), store), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="genai-export.{fmt}"'})


# -- feedback (the only writes: docs/feedback.md) --------------------------------------------------

MAX_FEEDBACK_BYTES = 64 * 1024
"""A score is a few short fields and a comment of at most 10,000 characters."""


def _writable(store: Store) -> None:
    with store.connect() as conn:
        if not feedback.scores_present(conn):
            raise ApiError(503, "this store has no scores table yet: start the collector (this version) "
                                "once to migrate it")


@router.post("/feedback", status_code=201, openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {"schema": feedback.JSON_SCHEMA}}}},
             summary="Record a score (thumbs, rating, ...) for a trace or one of its calls; the trace "
                     "need not be stored yet")
async def add_feedback(request: Request) -> Response:
    # Only JSON: a cross-site form cannot send it without a CORS preflight, which is never granted.
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "send the score as Content-Type: application/json")
    body = await request.body()
    if len(body) > MAX_FEEDBACK_BYTES:
        raise ApiError(413, f"body: larger than {MAX_FEEDBACK_BYTES} bytes")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body: not valid JSON ({exc})") from None
    try:
        row = feedback.parse_score(document, default_source="api")
    except feedback.BadScore as exc:
        raise ApiError(400, str(exc)) from None

    def write(store: Store) -> int:
        _writable(store)
        with store.writer() as conn:
            return feedback.add_score(conn, row)

    score_id = await run_in_threadpool(_run, request, write)
    return json_response(feedback.score_record({"id": score_id, **row}), 201)


@router.get("/traces/{trace_id}/feedback", summary="The scores given to a trace (stored or not yet), oldest first")
def trace_feedback(request: Request, trace_id: str) -> Response:
    parse(request, ())
    try:
        trace_id = feedback.parse_id("trace_id", trace_id)
    except feedback.BadScore as exc:
        raise ApiError(400, str(exc)) from None

    def read(store: Store) -> list[dict]:
        with store.connect() as conn:
            return feedback.trace_scores(conn, trace_id)

    return json_response({"trace_id": trace_id, "items": _run(request, read)})


@router.delete("/feedback/{score_id}", status_code=204, summary="Remove one score (404 when unknown)")
def delete_feedback(request: Request, score_id: str) -> Response:
    parse(request, ())
    if not score_id.isdigit() or len(score_id) > 18:
        raise ApiError(400, f"id: {score_id!r} is not a score id (a positive integer)")

    def delete(store: Store) -> bool:
        _writable(store)
        with store.writer() as conn:
            return feedback.delete_score(conn, int(score_id))

    if not _run(request, delete):
        raise ApiError(404, f"score {score_id} not found")
    return Response(status_code=204)


def _guarded(chunks: Iterator[str], store: Store) -> Iterator[str]:
    """A failure after the first byte cannot become a status code: the stream ends with a line
    saying why (a truncated file must not pass for a complete one)."""
    try:
        yield from chunks
    except store.errors as exc:
        yield f"\nerror: export failed: {error_reason(exc)}\n"
