"""``otlphttp`` exporter: forward traces, logs and metrics over OTLP/HTTP, protobuf-encoded.

Config, queue and retries are shared with ``otlp`` (see :mod:`exporters.otlp_common`).  A request
goes to ``traces_endpoint`` / ``logs_endpoint`` / ``metrics_endpoint``, or ``endpoint`` +
``/v1/traces`` / ``/v1/logs`` / ``/v1/metrics``, as the OTel Collector's otlphttp exporter does.  Answers, per the OTLP/HTTP spec: 2xx is success (a body may carry a
partial success); 429, 502, 503 and 504 are retried, honouring ``Retry-After`` (seconds or an
HTTP date); every other status is permanent, with the ``google.rpc.Status`` message from the body
in the log.  Connection errors and timeouts are retried.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import urllib3
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from collector import __version__
from collector.component import ALL_SIGNALS, ComponentContext, Factory, PermanentError, RetryableError
from collector.model import LOGS, METRICS, TRACES
from collector.otlp import OTLP_SIGNALS
from config.schema import ConfigError, setting
from exporters.otlp_common import UpstreamConfig, UpstreamExporter, read_tls_file

__all__ = ["OtlpHttpExporterConfig", "HttpSender", "parse_retry_after"]

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_RESPONSE_BYTES = 1 << 20
_URL = r"^$|^https?://\S+$"


@dataclass
class OtlpHttpExporterConfig(UpstreamConfig):
    traces_endpoint: str = setting("", pattern=_URL, doc="full URL for traces; default: endpoint + /v1/traces")
    logs_endpoint: str = setting("", pattern=_URL, doc="full URL for logs; default: endpoint + /v1/logs")
    metrics_endpoint: str = setting("", pattern=_URL, doc="full URL for metrics; default: endpoint + /v1/metrics")

    def validate(self) -> list:
        problems = self.header_problems()
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            problems.append(ConfigError("endpoint", f"invalid URL {self.endpoint!r} (expected http://host:port "
                                                    "or https://...)"))
        if not self.endpoint and not any(self.urls().values()):
            problems.append(ConfigError("endpoint", "required (base URL such as http://host:4318), or set "
                                                    "traces_endpoint, logs_endpoint or metrics_endpoint"))
        return problems

    def urls(self) -> dict[str, str]:
        """Signal -> URL ("" when neither ``endpoint`` nor the signal's own URL is set)."""
        own = {TRACES: self.traces_endpoint, LOGS: self.logs_endpoint, METRICS: self.metrics_endpoint}
        base = self.endpoint.rstrip("/")
        return {signal: url or (base + OTLP_SIGNALS[signal].http_path if base else "") for signal, url in own.items()}


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, from delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_text(resp: urllib3.BaseHTTPResponse, body: bytes) -> str:
    """The message of the ``google.rpc.Status`` an OTLP server puts in an error body, else the text."""
    ctype = (resp.headers.get("Content-Type") or "").lower()
    if "protobuf" in ctype:
        try:
            return status_pb2.Status.FromString(body).message or f"HTTP {resp.status}"
        except DecodeError:
            pass
    if "json" in ctype:
        try:
            return str(json.loads(body).get("message") or body[:200].decode("utf-8", "replace"))
        except (ValueError, AttributeError):
            pass
    return body[:200].decode("utf-8", "replace").strip() or f"HTTP {resp.status}"


def _read_capped(resp: urllib3.BaseHTTPResponse) -> bytes:
    """The body, up to ``MAX_RESPONSE_BYTES``: an upstream's answer must not be able to exhaust memory."""
    try:
        body = resp.read(MAX_RESPONSE_BYTES + 1)
    except urllib3.exceptions.HTTPError:
        resp.close()
        return b""
    if len(body) > MAX_RESPONSE_BYTES:
        resp.close()  # not returned to the pool: the rest is never read
        return body[:MAX_RESPONSE_BYTES]
    resp.release_conn()
    return body


def _response(signal: str, resp: urllib3.BaseHTTPResponse, body: bytes):
    """Partial success from a 2xx body (protobuf, or JSON from servers that answer in JSON)."""
    if not body:
        return None
    sig = OTLP_SIGNALS[signal]
    out = sig.response_class()
    ctype = (resp.headers.get("Content-Type") or "").lower()
    try:
        if "json" in ctype:
            json_format.ParseDict({"partialSuccess": json.loads(body).get("partialSuccess") or {}}, out,
                                  ignore_unknown_fields=True)
        else:
            out.ParseFromString(body)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, AttributeError):
        return None  # the data was accepted; an unreadable body is not a reason to resend it
    return out


class HttpSender:
    def __init__(self, cfg: OtlpHttpExporterConfig, connections: int) -> None:
        self.urls = cfg.urls()
        self.endpoint = cfg.endpoint or next(url for url in self.urls.values() if url)
        self.timeout = cfg.timeout
        self.gzip = cfg.compression == "gzip"
        self.headers = {"User-Agent": f"genai-collector/{__version__}", **cfg.headers,
                        "Content-Type": "application/x-protobuf"}
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        t = cfg.tls
        tls: dict = {}
        if any(url.startswith("https://") for url in self.urls.values()):
            tls = {"cert_reqs": "CERT_NONE" if t.insecure_skip_verify else "CERT_REQUIRED",
                   "ca_certs": t.ca_file or None, "cert_file": t.cert_file or None, "key_file": t.key_file or None}
        for key in ("ca_file", "cert_file", "key_file"):  # fail at start, naming the key
            if getattr(t, key):
                read_tls_file(getattr(t, key), key)
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=connections, block=False, retries=False,
                                        timeout=urllib3.Timeout(total=cfg.timeout), **tls)

    def send(self, signal: str, payload: bytes):
        url = self.urls[signal]
        if not url:
            raise PermanentError(f"no URL for {signal}: set endpoint or {signal}_endpoint")
        body = gzip.compress(payload, compresslevel=1) if self.gzip else payload
        try:
            resp = self.pool.request("POST", url, body=body, headers=self.headers, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from None
        answer = _read_capped(resp)
        if 200 <= resp.status < 300:
            return _response(signal, resp, answer)
        text = f"HTTP {resp.status}: {_error_text(resp, answer)}"
        if resp.status in RETRYABLE_STATUS:
            raise RetryableError(text, retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        raise PermanentError(text)

    def close(self) -> None:
        self.pool.clear()


def create(cfg: OtlpHttpExporterConfig, ctx: ComponentContext) -> UpstreamExporter:
    q = cfg.sending_queue
    return UpstreamExporter(cfg, ctx, HttpSender(cfg, q.num_consumers if q.enabled else 1))


FACTORY = Factory("otlphttp", OtlpHttpExporterConfig, create, signals=ALL_SIGNALS,
                  doc="OTLP/HTTP (protobuf) to an upstream collector or backend, with retries and a sending queue",
                  example="""\
endpoint: http://127.0.0.1:6006      # Phoenix; /v1/traces is appended
headers: {authorization: "Bearer ${env:UPSTREAM_TOKEN}"}
sending_queue:
  storage: {directory: /var/lib/genai-collector/otlphttp-queue}
""")
