"""Serve the UI with uvicorn: in a thread of the collector (the ``ui`` extension) or in the
foreground (``genai-collector ui``).

The socket is bound here, before uvicorn runs, so a taken port is an ``OSError`` at start-up with
the address in it (uvicorn alone logs it in its thread and the collector would carry on without
its UI).  Without a token the UI binds loopback only: a non-loopback address without a token is
refused, not warned about (a warning scrolls by; the captured prompts would be open to the LAN).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path

__all__ = ["UiServer", "read_token", "split_endpoint", "check_exposure", "DEFAULT_ENDPOINT"]

DEFAULT_ENDPOINT = "127.0.0.1:8890"
"""The UI's port: next to the collector's 8888/8889 and clear of 4317/4318/13133 and of the
peers' 6006 (Phoenix), 3000 (Langfuse) and 16686 (Jaeger)."""

log = logging.getLogger("genai_collector.ui")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``[::1]:PORT`` -> (host, port); ValueError with a message otherwise."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{endpoint!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve captured prompts beyond this machine without a token."""
    if token is None and not is_loopback(host):
        raise ValueError(f"refusing to listen on {host} without a bearer token: anyone who can reach it "
                         f"would read every captured prompt (set auth.bearer_token_file, or listen "
                         f"on 127.0.0.1)")


def read_token(inline: str | None, file: str | None, what: str = "bearer_token") -> str | None:
    """A token (``what``: bearer_token, write_token) from the config value or from a file
    (first line, trimmed)."""
    if file:
        try:
            text = Path(file).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {what}_file {file}: {exc.strerror}") from None
        inline = text.strip().splitlines()[0] if text.strip() else ""
    if inline is not None and len(inline.strip()) < 16:
        raise ValueError(f"the {what.replace('_', ' ')} must be at least 16 characters")
    return inline.strip() if inline is not None else None


def allowed_hosts(host: str, token: str | None) -> frozenset[str] | None:
    """Without a token, only loopback names may appear in ``Host`` (DNS rebinding); with a token,
    any (the token is the check, and a proxy may use any name)."""
    if token is not None:
        return None
    return frozenset({"127.0.0.1", "localhost", "::1", host})


class UiServer:
    """uvicorn serving the app on a socket bound at :meth:`start`."""

    def __init__(self, app, endpoint: str) -> None:
        import uvicorn

        self.host, self.port = split_endpoint(endpoint)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    lifespan="off", timeout_graceful_shutdown=2))
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        sock.listen(128)
        sock.set_inheritable(True)
        self.sock = sock
        self.port = sock.getsockname()[1]
        return sock

    def start(self, timeout: float = 20.0) -> None:
        """Bind, then serve in a daemon thread; returns once uvicorn accepts connections."""
        sock = self.bind()
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="ui-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"ui server on {self.host}:{self.port} did not start")
            time.sleep(0.02)
        log.info("web UI on %s", self.url)

    @property
    def url(self) -> str:
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}/"

    def serve_forever(self) -> None:
        """In the foreground until SIGINT / SIGTERM (uvicorn's own handlers)."""
        sock = self.bind()
        print(f"genai-collector ui: serving {self.url}", file=sys.stderr, flush=True)
        # uvicorn re-raises the signal that stopped it once it has restored these handlers: let
        # that be a no-op, so a requested stop exits 0 rather than "killed by SIGTERM"
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: None)
        self.server.run(sockets=[sock])

    def shutdown(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.sock is not None:
            self.sock.close()
