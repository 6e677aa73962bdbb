"""The web UI served for tests: the real app on uvicorn on a free loopback port, in this process."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from typing import Any, Iterator

from tests.conftest import free_port


@contextlib.contextmanager
def serve(db: str, token: str | None = None) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``db`` (a SQLite path or a Postgres URL) until exit."""
    from collector.query.store import open_store
    from collector.web.api import StoreSource
    from collector.web.app import create_app
    from collector.web.server import UiServer, allowed_hosts

    stores = StoreSource(lambda: open_store(db, ""))
    server = UiServer(create_app(stores, token, allowed_hosts("127.0.0.1", token)), f"127.0.0.1:{free_port()}")
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        stores.close()


def request(url: str, token: str | None = None, headers: dict | None = None,
            data: bytes | None = None, method: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one real HTTP request; redirects are not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url, data=data, method=method, headers={**(headers or {}),
                                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    status, _, body = request(url, token)
    return status, json.loads(body)
