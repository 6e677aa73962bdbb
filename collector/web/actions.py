"""``/api/v1`` endpoints that act on stored data rather than read it: ``POST /replay`` (the
``replay`` command) and ``DELETE /users/{user_id}`` (``delete --user``).

They run the CLI's code (:mod:`collector.replay`) behind the same auth as every API route.  A
POST must be ``application/json``: a page on another site cannot send that without a CORS
preflight, which this server never grants.  The API key for replays comes from the server's
environment (``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` for the endpoint), never from the request.
"""

from __future__ import annotations

import math
import os
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from collector.query.args import Param, time_arg
from collector.web.api import ApiError, _flag, _run, json_response, openapi_parameters, parse

__all__ = ["router", "REPLAY_TIMEOUT", "DELETE_USER_PARAMS"]

router = APIRouter(prefix="/api/v1")

REPLAY_TIMEOUT = 60.0
"""Seconds a replay waits for the model (the browser waits as long)."""
_REFUSED_STATUS = {"bad_id": 400, "not_found": 404}
"""ReplayRefused kinds answered other than 422 (the call cannot be replayed as stored)."""


async def _json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "send the body as Content-Type: application/json")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


_KIND_NAMES = {(str,): "string", (bool,): "boolean", (int, float): "number"}


def _field(body: dict, name: str, kinds: tuple[type, ...], required: bool = False) -> Any:
    """``body[name]`` if it has one of ``kinds`` (JSON true is not a number here), else 400."""
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name}: required")
        return None
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
        raise ApiError(400, f"{name}: must be a {_KIND_NAMES[kinds]}")
    if isinstance(value, str) and "\x00" in value:
        raise ApiError(400, f"{name}: contains a NUL character")
    return value


REPLAY_FIELDS = ("trace_id", "span_id", "model", "system", "temperature", "record", "allow_redacted")


@router.post("/replay", summary="Send a stored LLM call again (maybe another model / system prompt) "
                                "and compare the answers: `genai-collector replay`")
async def replay_call(request: Request) -> Response:
    body = await _json_body(request)
    unknown = sorted(set(body) - set(REPLAY_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (known: {', '.join(REPLAY_FIELDS)})")
    trace_id = _field(body, "trace_id", (str,), required=True)
    span_id = _field(body, "span_id", (str,))
    temperature = _field(body, "temperature", (int, float))
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise ApiError(400, "temperature: must be a finite number >= 0")
    from collector.replay import ReplayOptions

    options = ReplayOptions(model=_field(body, "model", (str,)) or None, system=_field(body, "system", (str,)),
                            temperature=temperature, base_url=ReplayOptions.base_url_from_env(None),
                            api_key=os.environ.get("OPENAI_API_KEY") or None, timeout=REPLAY_TIMEOUT,
                            allow_redacted=bool(_field(body, "allow_redacted", (bool,))))
    record = bool(_field(body, "record", (bool,)))
    from starlette.concurrency import run_in_threadpool

    return json_response(await run_in_threadpool(_replay, request, trace_id, span_id, options, record))


def _replay(request: Request, trace_id: str, span_id: str | None, options, record: bool) -> dict:
    from collector.replay import RecordFailed, ReplayFailed, ReplayRefused, record as record_replay, replay

    def run(store) -> dict:
        try:
            result = replay(store, trace_id, options, span_id)
            if record:
                record_replay(store, result)
        except ReplayRefused as exc:
            raise ApiError(_REFUSED_STATUS.get(exc.kind, 422), str(exc)) from None
        except RecordFailed as exc:
            raise ApiError(503, str(exc)) from None
        except ReplayFailed as exc:
            raise ApiError(502, f"replay failed: {exc}") from None
        result.pop("_span", None)
        return result

    return _run(request, run)


DELETE_USER_PARAMS = (
    Param("session", str, "only this session of theirs"),
    Param("before", time_arg, "only what started before: a duration ago (30d) or an ISO 8601 date/time"),
    Param("dry_run", _flag, "count what would go, change nothing (true/false)"),
)


@router.delete("/users/{user_id:path}", openapi_extra=openapi_parameters(DELETE_USER_PARAMS),
               summary="Erase a person's data (traces, sessions, log records, scores, full-text entries, "
                       "session-grouping state): `genai-collector delete --user`")
def delete_user(request: Request, user_id: str) -> Response:
    args = parse(request, DELETE_USER_PARAMS)
    if not user_id or "\x00" in user_id:
        raise ApiError(400, "user_id: must be a non-empty string without NUL")
    from exporters.storage.erase import Selection

    sel = Selection(user_id, args.get("session"), args.get("before"))
    client = request.client.host if request.client else "?"
    report = _run(request, lambda store: _erase(store, sel, request, args.get("dry_run", False), client))
    return json_response(report.as_dict())


def _erase(store, sel, request: Request, dry_run: bool, client: str):
    from collector.actions_cli import EraseFailed, erase

    try:
        return erase(store.target.sqlalchemy_url, sel, request.app.state.session_states, dry_run,
                     f"http api client {client}")
    except EraseFailed as exc:
        raise ApiError(503, str(exc)) from None
