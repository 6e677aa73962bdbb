"""The ASGI application: the API router, the pages, their static assets, auth and headers.

The pages are static HTML shells plus small scripts (``static/``) that call ``/api/v1`` and build
the DOM with ``textContent`` only: span data is attacker-controlled (any OTLP client writes it),
so it is never parsed as HTML, and a strict Content-Security-Policy (scripts from this origin
only, no inline script or handler) stops whatever might slip through.  No build step: what is in
the package is what runs.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from importlib import resources
from pathlib import Path
from typing import Sequence
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.staticfiles import StaticFiles

from collector import __version__
from collector.web.actions import router as actions_router
from collector.web.api import ApiError, StoreSource, json_response, router

__all__ = ["create_app", "COOKIE", "STATIC"]

STATIC = Path(str(resources.files("collector.web") / "static"))
COOKIE = "genai_ui_session"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}

PAGES = {"/calls": "calls.html", "/sessions": "sessions.html", "/analytics": "analytics.html"}
DETAIL_PAGES = {"/traces/": "trace.html", "/sessions/": "session.html"}
OPEN_PATHS = ("/login", "/static/")
"""Reachable without a token: the login form and the assets it needs (all public, in the package)."""


def session_value(token: str) -> str:
    """The session cookie's value: an HMAC of the token, so the cookie works until the token
    changes and never holds the token itself."""
    return hmac.new(token.encode(), b"genai-collector-ui-session", hashlib.sha256).hexdigest()


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Guard(BaseHTTPMiddleware):
    """Auth (``Authorization: Bearer`` or the session cookie), allowed ``Host`` names (a page on
    another site must not reach a token-less loopback UI through DNS rebinding), and the security
    headers on every answer.

    With a ``write_token``, the API's writes (feedback) need it (as the bearer token, or a session
    begun with it at the login form); it also opens everything the read token opens."""

    def __init__(self, app, token: str | None, hosts: frozenset[str] | None,
                 write_token: str | None = None) -> None:
        super().__init__(app)
        self.token = token
        self.write_token = write_token
        self.hosts = hosts

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        response = self._refusal(request) or await call_next(request)
        response.headers.update(HEADERS)
        # the browser's devtools and bench/bench_ui.py read the server's own time from here
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    def _refusal(self, request: Request) -> Response | None:
        host = request.url.hostname or ""
        if self.hosts is not None and host not in self.hosts:
            return json_response({"error": f"host {host!r} not allowed"}, 421)
        path = request.url.path
        if path.startswith(OPEN_PATHS):
            return None
        if self.write_token is not None and request.method not in SAFE_METHODS and path.startswith("/api/"):
            if holds(request, self.write_token):
                return None
            return _unauthorized("writing needs the write token: Authorization: Bearer WRITE_TOKEN",
                                 403 if self.token is None or holds(request, self.token) else 401)
        if self.token is None or holds(request, self.token) or holds(request, self.write_token):
            return None
        if path.startswith("/api/"):
            return _unauthorized("authentication required: Authorization: Bearer TOKEN", 401)
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _unauthorized(message: str, status: int) -> Response:
    response = json_response({"error": message}, status)
    response.headers["WWW-Authenticate"] = 'Bearer realm="genai-collector"'
    return response


def holds(request: Request, token: str | None) -> bool:
    """The request carries ``token``: as its bearer token, or a session cookie made from it."""
    if token is None:
        return False
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def _safe_next(target: str | None) -> str:
    """Only a path on this site: ``next=//evil.example`` must not turn login into a redirector."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/calls"
    return target


def create_app(stores: StoreSource, token: str | None = None,
               hosts: frozenset[str] | None = None, write_token: str | None = None,
               session_states: Sequence = ()) -> FastAPI:
    """The UI and API over ``stores``; ``token`` (or None: no auth), ``hosts`` (the ``Host``
    names accepted, or None: any) and ``write_token`` (or None: writes need only what reads
    need) as :class:`Guard` enforces them; ``session_states``: where the config's
    ``genai_session`` processors keep state (``DELETE /api/v1/users/{id}`` erases there too)."""
    app = FastAPI(title="genai-collector HTTP API", version=__version__,
                  description="The query CLI's questions over HTTP: see docs/http-api.md.",
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None)
    app.state.stores = stores
    app.state.session_states = list(session_states)
    app.include_router(router)
    app.include_router(actions_router)
    app.add_middleware(Guard, token=token, hosts=hosts, write_token=write_token)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return json_response({"error": exc.message}, exc.status)

    @app.exception_handler(404)
    async def not_found(request: Request, _exc: Exception) -> Response:
        return json_response({"error": f"no such page: {request.url.path}"}, 404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, _exc: Exception) -> Response:
        return json_response({"error": f"method {request.method} not allowed here"}, 405)

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/calls", status_code=303)

    for path, page in PAGES.items():
        app.add_api_route(path, _page(page), include_in_schema=False)
    for prefix, page in DETAIL_PAGES.items():
        app.add_api_route(prefix + "{item_id:path}", _page(page), include_in_schema=False)

    @app.get("/login", include_in_schema=False)
    def login_form() -> Response:
        return FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-store"})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0].strip()
        target = _safe_next(request.query_params.get("next"))
        if token is None and write_token is None:
            return RedirectResponse(target, status_code=303)
        # the write token first: a session begun with it may also write
        matched = next((t for t in (write_token, token) if t and hmac.compare_digest(given.encode(), t.encode())),
                       None)
        if matched is None:
            return RedirectResponse(f"/login?failed=1&next={quote(target, safe='')}", status_code=303)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, session_value(matched), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    return app


def _page(name: str):
    def page() -> Response:
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return page
