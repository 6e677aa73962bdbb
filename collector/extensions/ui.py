"""``ui``: the web UI and the HTTP API (``/api/v1``) over the store this collector writes.

It reads the database of a storage exporter of the same config (``storage:``, or the first
``sqlite`` / ``postgres`` exporter), read-only, through the query CLI's layer.  Loopback by
default; a non-loopback ``endpoint`` needs ``auth`` (see :mod:`collector.web.server`).
FastAPI and uvicorn are imported when the extension is created, so configs without it never pay
for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.component import ComponentContext, Factory
from collector.web.server import DEFAULT_ENDPOINT  # light: uvicorn loads when a server is made
from config.schema import setting


@dataclass
class UiAuthConfig:
    bearer_token: str | None = setting(None, doc="the token API clients send as `Authorization: Bearer "
                                                 "TOKEN` and the pages ask for once (at least 16 "
                                                 "characters; prefer bearer_token_file)")
    bearer_token_file: str | None = setting(None, doc="a file whose first line is the token (keeps it "
                                                      "out of the config)")
    write_token: str | None = setting(None, doc="a second token that API writes (POST/DELETE feedback, "
                                                "docs/feedback.md) need, and that also opens everything "
                                                "bearer_token does (at least 16 characters; prefer "
                                                "write_token_file); unset: writes need what reads need")
    write_token_file: str | None = setting(None, doc="a file whose first line is the write token")

    def validate(self) -> list[str]:
        errors = []
        if self.bearer_token is not None and self.bearer_token_file is not None:
            errors.append("set bearer_token or bearer_token_file, not both")
        if self.write_token is not None and self.write_token_file is not None:
            errors.append("set write_token or write_token_file, not both")
        return errors


@dataclass
class UiConfig:
    endpoint: str = setting(DEFAULT_ENDPOINT, pattern=r"^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$",
                            doc="HOST:PORT of the web UI and the HTTP API; without auth only a "
                                "loopback address is accepted")
    storage: str | None = setting(None, doc="id of the sqlite / postgres exporter whose store to read "
                                            "(default: the first one under exporters)")
    auth: UiAuthConfig = setting(default_factory=UiAuthConfig,
                                 doc="bearer-token auth for the API and the pages (none by default)")


def storage_location(config: UiConfig, collector_config) -> str:
    """The database (file or URL) of the storage exporter the UI reads."""
    from collector.query.store import STORAGE_TYPES

    exporters = collector_config.exporters if collector_config is not None else {}
    if config.storage is not None:
        spec = exporters.get(config.storage)
        if spec is None or spec.type not in STORAGE_TYPES:
            raise ValueError(f"storage: {config.storage!r} is not a sqlite or postgres exporter of this config")
    else:
        spec = next((s for s in exporters.values() if s.type in STORAGE_TYPES), None)
        if spec is None:
            raise ValueError("no sqlite or postgres exporter in this config: nothing to show")
    return str(getattr(spec.config, STORAGE_TYPES[spec.type]))


class UiExtension:
    def __init__(self, config: UiConfig, ctx: ComponentContext) -> None:
        from collector.query.store import open_store
        from collector.web.api import StoreSource
        from collector.web.app import create_app
        from collector.web.server import UiServer, allowed_hosts, check_exposure, read_token, split_endpoint

        location = storage_location(config, ctx.config)
        token = read_token(config.auth.bearer_token, config.auth.bearer_token_file)
        write_token = read_token(config.auth.write_token, config.auth.write_token_file, "write_token")
        host, _ = split_endpoint(config.endpoint)
        check_exposure(host, token)
        # Reads are pooled read-only connections; a feedback write opens its own short transaction
        # (collector.query.store.Store.writer), waiting out the exporter's batch on SQLite.
        self.stores = StoreSource(lambda: open_store(location, ""))
        from exporters.storage.erase import state_locations

        processors = ctx.config.processors.values() if ctx.config is not None else ()
        self.server = UiServer(create_app(self.stores, token, allowed_hosts(host, token), write_token,
                                          state_locations(processors)), config.endpoint)

    def start(self) -> None:
        self.server.start()

    def shutdown(self) -> None:
        self.server.shutdown()
        self.stores.close()


FACTORY = Factory("ui", UiConfig, lambda cfg, ctx: UiExtension(cfg, ctx),
                  doc="web UI and HTTP API (/api/v1) over the store of this config's storage exporter "
                      "(docs/web-ui.md, docs/http-api.md)",
                  example="""\
endpoint: 127.0.0.1:8890
storage: sqlite
auth:
  bearer_token_file: /etc/genai-collector/ui-token
""")
