"""Self-telemetry: counters and gauges, served as Prometheus text with a health endpoint.

Names echo the OTel Collector's own (``otelcol_receiver_accepted_spans`` ...) so dashboards built
for it read ours.  Counters are incremented per batch, never per span, so a lock is cheap.
``GET /metrics`` serves the text format; ``GET /healthz`` answers 200 once every component started
and 503 before that, while shutting down, and while a component that reports health
(an exporter that ``reports_health``, registered with :meth:`Telemetry.watch_health`) is
not ready, with the reasons: ``{"status": "unavailable", "reasons": {"exporter sqlite": "..."}}``.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from collector.component import Exporter

from collector.netserver import DEADLINES, BoundedHTTPServer, shut_reading

__all__ = ["Telemetry", "Counter", "Gauge", "TelemetryServer", "parse_address"]

log = logging.getLogger("genai_collector.telemetry")

IDLE_TIMEOUT = 10.0  # seconds a metrics/health connection may stay silent (a scrape takes milliseconds)
MAX_CONNECTIONS = 256  # scrapers and probes served at once (a thread each); more are closed on accept


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    __slots__ = ("value", "_lock")

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, amount: int | float = 1) -> None:
        if amount:
            with self._lock:
                self.value += amount


class Gauge:
    __slots__ = ("value", "fn")

    def __init__(self, fn: Callable[[], float] | None = None) -> None:
        self.value: float = 0
        self.fn = fn

    def set(self, value: float) -> None:
        self.value = value

    def read(self) -> float:
        if self.fn is not None:
            try:
                return float(self.fn())
            except Exception:  # a broken callback must not break /metrics
                return float("nan")
        return self.value


class Telemetry:
    """All metrics of one collector process.  Same name + labels returns the same instrument."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], Counter | Gauge] = {}
        self.ready = False
        self._health: dict[str, "Exporter"] = {}

    def watch_health(self, name: str, component: "Exporter") -> None:
        """Make ``/healthz`` (and the health_check extension) report ``component``'s readiness."""
        self._health[name] = component

    def health_problems(self) -> dict[str, str]:
        """Component name -> reason, for every watched component that is not ready."""
        problems = {}
        for name, component in list(self._health.items()):
            health = component.health()
            if not health.ready:
                problems[name] = health.reason
        return problems

    def _get(self, kind: str, name: str, help: str, labels: dict[str, str], make):
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            inst = self._series.get(key)
            if inst is None:
                self._help.setdefault(name, (kind, help))
                inst = self._series[key] = make()
            return inst

    def counter(self, name: str, help: str = "", **labels: str) -> Counter:
        return self._get("counter", name, help, labels, Counter)

    def gauge(self, name: str, help: str = "", fn: Callable[[], float] | None = None, **labels: str) -> Gauge:
        return self._get("gauge", name, help, labels, lambda: Gauge(fn))

    def value(self, name: str, **labels: str) -> float:
        """Current value of one series (0 when it does not exist); for tests and logs."""
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        inst = self._series.get(key)
        if inst is None:
            return 0
        return inst.read() if isinstance(inst, Gauge) else inst.value

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        with self._lock:
            series = sorted(self._series.items(), key=lambda kv: kv[0])
            helps = dict(self._help)
        out: list[str] = []
        last = None
        for (name, labels), inst in series:
            if name != last:
                kind, help = helps[name]
                out.append(f"# HELP {name} {help}")
                out.append(f"# TYPE {name} {kind}")
                last = name
            value = inst.read() if isinstance(inst, Gauge) else inst.value
            out.append(f"{name}{_label_text(labels)} {_format(value)}")
        return "\n".join(out) + "\n"


def _format(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    return repr(float(value))


def parse_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"127.0.0.1:8888"`` / ``":8888"`` / ``"[::1]:8888"`` -> (host, port); ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {address!r} (expected host:port)")
    host = host.strip("[]") or default_host
    return host, int(port)


class TelemetryServer:
    """Serves ``/metrics`` and ``/healthz`` from a daemon thread."""

    def __init__(self, telemetry: Telemetry, address: str) -> None:
        self.telemetry = telemetry
        self.address = address
        self._server: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.status = "starting"  # starting | ready | stopping

    def start(self) -> None:
        host, port = parse_address(self.address)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = IDLE_TIMEOUT  # a silent connection gives its thread back after this

            def handle_one_request(self) -> None:
                """One request per connection (HTTP/1.0), read within IDLE_TIMEOUT as a whole: a
                client dripping header bytes holds its thread no longer than a silent one."""
                deadline = DEADLINES.arm(IDLE_TIMEOUT, lambda: shut_reading(self.connection))
                try:
                    super().handle_one_request()
                except (TimeoutError, ConnectionError):
                    self.close_connection = True
                finally:
                    deadline.cancel()

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, outer.telemetry.render(), "text/plain; version=0.0.4; charset=utf-8")
                elif path in ("/healthz", "/health", "/"):
                    problems = outer.telemetry.health_problems() if outer.status == "ready" else {}
                    ok = outer.status == "ready" and not problems
                    body = json.dumps({"status": "unavailable", "reasons": problems} if problems
                                      else {"status": outer.status})
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, json.dumps({"error": "not found"}), "application/json")

            def _send(self, code: int, body: str, ctype: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt, *args) -> None:  # keep access logs out of the collector log
                log.debug("telemetry %s", fmt % args)

        try:
            self._server = BoundedHTTPServer((host, port), Handler, max_connections=MAX_CONNECTIONS)
        except OSError as exc:
            raise OSError(f"telemetry: cannot listen on {self.address}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="telemetry", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else 0

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
