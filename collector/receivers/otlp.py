"""``otlp`` receiver: OTLP/gRPC and OTLP/HTTP (protobuf and JSON), as the OTel Collector's.

Each protocol is enabled by its key under ``protocols`` (an empty key takes the defaults), with
optional ``tls`` and bearer-token ``auth``.  A request is answered ``OK``/200 only once its spans
are safe: either every durable exporter of every pipeline committed them (see
``collector/pipeline.py``), or -- with ``storage`` -- the request is fsync'd in the intake journal
(``collector/receivers/journal.py``).  Overload answers ``RESOURCE_EXHAUSTED`` with ``RetryInfo``
/ 429 with ``Retry-After``, which the official SDK exporters retry.  Status codes and messages
follow the Collector's ``otlpreceiver`` (405/415 as text/plain, errors as ``google.rpc.Status`` in
the request's encoding).
"""

from __future__ import annotations

import contextlib
import math
import ssl
import threading
import zlib
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from collector.component import ComponentContext, Consumer, Factory, Overloaded, PermanentError
from collector.model import SpanBatch
from collector.otlp import DecodeFailure, decode, response_bytes, status_bytes
from collector.receivers.journal import JSON_TAG, PROTO_TAG, IntakeJournal, StorageConfig
from collector.receivers.security import AuthConfig, BearerAuth, TlsConfig, server_ssl_context
from config.files import read_config_file
from collector.telemetry import parse_address
from config.schema import ByteSize, ConfigError, Duration, setting

__all__ = ["OtlpReceiver", "OtlpReceiverConfig"]

_ADDRESS = r"^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$"
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@dataclass
class GrpcConfig:
    endpoint: str = setting("127.0.0.1:4317", pattern=_ADDRESS,
                            doc="host:port to listen on (0.0.0.0:4317 for every interface)")
    max_recv_msg_size_mib: int = setting(16, min=1, max=2047, doc="larger messages get RESOURCE_EXHAUSTED")
    max_concurrent_requests: int = setting(64, min=1, max=4096, doc="worker threads; up to 4x this many calls "
                                           "may queue, beyond that gRPC answers RESOURCE_EXHAUSTED")
    tls: TlsConfig | None = setting(None, doc="serve TLS (plaintext when unset)")
    auth: AuthConfig | None = setting(None, doc="require a bearer token (none when unset)")


@dataclass
class HttpConfig:
    endpoint: str = setting("127.0.0.1:4318", pattern=_ADDRESS,
                            doc="host:port to listen on (0.0.0.0:4318 for every interface)")
    traces_url_path: str = setting("/v1/traces", pattern=r"^/\S*$", doc="path of the traces endpoint")
    max_request_body_size: ByteSize = setting(20 * 1024 * 1024, min=1, doc="cap on the body, before and "
                                              "after decompression (413 beyond)")
    max_concurrent_requests: int = setting(64, min=1, max=4096, doc="requests processed at once (bounds "
                                           "memory); beyond, 429")
    tls: TlsConfig | None = setting(None, doc="serve TLS (plaintext when unset)")
    auth: AuthConfig | None = setting(None, doc="require a bearer token (none when unset)")


@dataclass
class ProtocolsConfig:
    """``grpc:`` / ``http:`` present (even empty) enables that protocol."""

    grpc: GrpcConfig | None = setting(None, null_enables=True, doc="OTLP/gRPC; present (even empty) enables it")
    http: HttpConfig | None = setting(None, null_enables=True, doc="OTLP/HTTP; present (even empty) enables it")

    def validate(self) -> list:
        if self.grpc is None and self.http is None:
            return [ConfigError("", "must enable at least one protocol (grpc, http)")]
        return []


@dataclass
class OtlpReceiverConfig:
    protocols: ProtocolsConfig = setting(doc="which protocols to serve (at least one)")
    ack_timeout: Duration = setting(30.0, doc="longest a request waits for its spans to be safe; then "
                                    "UNAVAILABLE / 503 (the data stays queued and is still written; a retry "
                                    "is deduplicated by the storage upsert). A shorter gRPC client deadline wins")
    storage: StorageConfig | None = setting(None, doc="intake journal: acknowledge once the request is fsync'd "
                                            "on disk instead of once exporters committed it (off when unset)")

    def validate(self) -> list:
        """A journal smaller than the largest accepted request would refuse that request forever."""
        p = self.protocols
        largest = max(p.grpc.max_recv_msg_size_mib << 20 if p.grpc else 0,
                      p.http.max_request_body_size if p.http else 0)
        if self.storage is not None and self.storage.max_size < 2 * largest:
            return [ConfigError("storage::max_size", f"must be at least twice the largest request a protocol "
                                                     f"accepts ({largest} bytes), got {self.storage.max_size}")]
        return []


def _decode_record(tag: bytes, body: bytes) -> SpanBatch:
    """The valid spans of a journaled request (validation is deterministic, so same as at intake)."""
    return decode(body, tag == JSON_TAG).batch


class _Ingest:
    """Transport-independent handling: decode, validate, hand over (or journal), count."""

    def __init__(self, ctx: ComponentContext, ack_timeout: float, journal: IntakeJournal | None) -> None:
        self.ctx = ctx
        self.log = ctx.logger
        self.ack_timeout = ack_timeout
        self.journal = journal
        self.consumer: Consumer | None = None
        self._counters: dict[str, tuple] = {}

    def counters(self, transport: str):
        c = self._counters.get(transport)
        if c is None:
            c = self._counters[transport] = (
                self.ctx.counter("accepted_spans", "Spans accepted and stored durably.", transport=transport),
                self.ctx.counter("refused_spans", "Spans refused (overload, error); the client may retry.",
                                 transport=transport),
                self.ctx.counter("rejected_spans", "Invalid spans rejected with partial success.",
                                 transport=transport),
                self.ctx.counter("bad_requests", "Requests refused before decoding or undecodable.",
                                 transport=transport),
            )
        return c

    def handle(self, body: bytes, as_json: bool, transport: str, timeout: float | None):
        """Returns the Decoded result; raises DecodeFailure / Overloaded / PermanentError / TimeoutError."""
        accepted, refused, rejected, _ = self.counters(transport)
        # Admit the encoded size before decoding, so a refused request is never decoded and the
        # decoded spans of every handler thread count against the memory limit.
        reserve = getattr(self.consumer, "reserve", None) if self.journal is None else None
        with reserve(len(body)) if reserve is not None else contextlib.nullcontext() as reservation:
            decoded = decode(body, as_json)
            rejected.add(decoded.rejected)
            if decoded.rejected:
                self.log.debug("partial success: %s", decoded.error_message)
            batch = decoded.batch
            if len(batch):
                wait = self.ack_timeout if timeout is None else max(0.0, min(timeout, self.ack_timeout))
                try:
                    if self.journal is not None:
                        self.journal.append(JSON_TAG if as_json else PROTO_TAG, body, batch, wait)
                    elif reservation is not None:
                        self.consumer.consume(batch, timeout=wait, reservation=reservation)
                    else:
                        self.consumer.consume(batch, timeout=wait)
                except (Overloaded, PermanentError, TimeoutError):
                    refused.add(len(batch))
                    raise
                accepted.add(len(batch))
        return decoded


# -- gRPC --------------------------------------------------------------------------------------


def _retry_trailers(code: int, message: str, retry_after: float) -> tuple:
    """RetryInfo both where gRPC rich status puts it and where the Python SDK exporter reads it."""
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(retry_after), nanos=int((retry_after % 1) * 1e9)))
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", info.SerializeToString()))


class _GrpcServer:
    def __init__(self, cfg: GrpcConfig, ingest: _Ingest) -> None:
        self.cfg = cfg
        self.ingest = ingest
        self.auth = BearerAuth(cfg.auth) if cfg.auth else None
        self.server: grpc.Server | None = None
        self.port = 0

    def _credentials(self) -> grpc.ServerCredentials:
        tls = self.cfg.tls
        server_ssl_context(tls)  # checks the files and says which one is wrong
        ca = read_config_file(tls.client_ca_file, "tls client_ca_file") if tls.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(read_config_file(tls.key_file, "tls key_file"), read_config_file(tls.cert_file, "tls cert_file"))],
            root_certificates=ca, require_client_auth=ca is not None)

    def start(self) -> None:
        size = self.cfg.max_recv_msg_size_mib * 1024 * 1024
        credentials = self._credentials() if self.cfg.tls else None
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.cfg.max_concurrent_requests, thread_name_prefix="otlp-grpc"),
            options=[("grpc.max_receive_message_length", size), ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=self.cfg.max_concurrent_requests * 4,
        )
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # raw bytes in and out
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
        host, port = parse_address(self.cfg.endpoint)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if credentials is not None:
                self.port = self.server.add_secure_port(target, credentials)
            else:
                self.port = self.server.add_insecure_port(target)
        except RuntimeError as exc:
            raise OSError(f"otlp grpc: cannot listen on {self.cfg.endpoint}: {exc}") from None
        if not self.port:
            raise OSError(f"otlp grpc: cannot listen on {self.cfg.endpoint} (address in use?)")
        self.server.start()

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        if self.auth is not None:
            header = next((v for k, v in context.invocation_metadata() if k == "authorization"), None)
            if not self.auth.check(header if isinstance(header, str) else None):
                self.ingest.counters("grpc")[3].add(1)
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        remaining = context.time_remaining()
        timeout = None if remaining is None or math.isinf(remaining) else max(0.0, remaining - 0.05)
        try:
            decoded = self.ingest.handle(body, False, "grpc", timeout)
        except DecodeFailure as exc:
            self.ingest.counters("grpc")[3].add(1)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Overloaded as exc:
            context.set_trailing_metadata(_retry_trailers(code_pb2.RESOURCE_EXHAUSTED, str(exc), exc.retry_after))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except TimeoutError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except PermanentError as exc:  # as the Collector: permanent means "do not retry this data"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:  # noqa: BLE001 - a bug must cost one request, not the server
            self.ingest.log.exception("otlp grpc: unexpected error")
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        return response_bytes(decoded, as_json=False)

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.stop(grace=self.ingest.ack_timeout).wait()
            self.server = None


# -- HTTP --------------------------------------------------------------------------------------

_CONTENT_TYPES = {"application/x-protobuf": False, "application/json": True}
_UNSUPPORTED_MEDIA = b"415 unsupported media type, supported: [application/json, application/x-protobuf]"
_DECOMPRESSORS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS,
                  "zlib": zlib.MAX_WBITS}
_DRAIN_LIMIT = 16 << 20  # oversized bodies up to this much over the limit are read (and dropped)
_IDLE_TIMEOUT = 30.0  # seconds a connection may stay silent mid-request or between requests


class _TooLarge(Exception):
    pass


def _decompress(body: bytes, wbits: int, limit: int) -> bytes:
    """Inflate with a cap, so a decompression bomb costs at most ``limit`` bytes of memory."""
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecodeFailure(f"invalid compressed body: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise _TooLarge(f"decompressed body exceeds max_request_body_size {limit}")
    if not d.eof:
        raise DecodeFailure("truncated compressed body")
    return out


def _discard(rfile, n: int) -> None:
    while n > 0:
        chunk = rfile.read(min(1 << 16, n))
        if not chunk:
            return
        n -= len(chunk)


def _read_chunked(rfile, limit: int) -> bytes:
    """A ``Transfer-Encoding: chunked`` body, refusing more than ``limit`` bytes."""
    out = bytearray()
    while True:
        line = rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise DecodeFailure("malformed chunked body") from None
        if size < 0:
            raise DecodeFailure("malformed chunked body")
        if size == 0:
            while rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass  # trailers: ignored
            return bytes(out)
        if len(out) + size > limit:
            raise _TooLarge(f"request body exceeds max_request_body_size {limit}")
        chunk = rfile.read(size)
        if len(chunk) < size:
            raise DecodeFailure("truncated chunked body")
        out += chunk
        rfile.readline(8)


class _HttpServer:
    def __init__(self, cfg: HttpConfig, ingest: _Ingest) -> None:
        self.cfg = cfg
        self.ingest = ingest
        self.auth = BearerAuth(cfg.auth) if cfg.auth else None
        self.slots = threading.BoundedSemaphore(cfg.max_concurrent_requests)
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        host, port = parse_address(self.cfg.endpoint)
        context = server_ssl_context(self.cfg.tls) if self.cfg.tls else None
        outer = self
        log = self.ingest.log

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = _IDLE_TIMEOUT

            def setup(self) -> None:
                super().setup()
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.do_handshake()  # here, in this connection's thread, not in accept()

            def handle_expect_100(self) -> bool:
                """Refuse an announced oversized body before the client sends it."""
                length = self.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > outer.cfg.max_request_body_size:
                    self.close_connection = True
                    outer.reply(self, 413, b"request body exceeds max_request_body_size", "text/plain")
                    return False
                return super().handle_expect_100()

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, TimeoutError, ssl.SSLError):
                    self.close_connection = True

            def _dispatch(self) -> None:
                try:
                    outer.handle(self)
                except (ConnectionError, TimeoutError, ssl.SSLError):
                    raise
                except Exception:  # noqa: BLE001 - a bug must cost one request, not the server
                    log.exception("otlp http: unexpected error")
                    self.close_connection = True
                    outer.error(self, 500, code_pb2.INTERNAL, "internal error", True)

            do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

            def log_message(self, fmt, *args) -> None:
                log.debug("http %s", fmt % args)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                log.debug("otlp http: connection from %s failed", client_address, exc_info=True)

        try:
            self.httpd = Server((host, port), Handler)
        except OSError as exc:
            raise OSError(f"otlp http: cannot listen on {self.cfg.endpoint}: {exc.strerror or exc}") from None
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True,
                                                    do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="otlp-http", daemon=True)
        self.thread.start()

    # -- responses ------------------------------------------------------------------------------

    def reply(self, h: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        if 400 <= code < 500 and code != 429:
            self.ingest.counters("http")[3].add(1)
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        if h.close_connection:
            h.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def error(self, h, code: int, grpc_code: int, message: str, as_json: bool, headers=None) -> None:
        """An OTLP error: a ``google.rpc.Status`` in the request's encoding."""
        self.reply(h, code, status_bytes(grpc_code, message, as_json),
                   "application/json" if as_json else "application/x-protobuf", headers)

    # -- request handling -------------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        ctype = (h.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        as_json = _CONTENT_TYPES.get(ctype, True)
        if h.command != "POST" or ctype not in _CONTENT_TYPES:
            h.close_connection = True  # the body, if any, is not read
        if self.auth is not None and not self.auth.check(h.headers.get("Authorization")):
            h.close_connection = True
            return self.error(h, 401, code_pb2.UNAUTHENTICATED, "missing or invalid bearer token", as_json,
                              {"WWW-Authenticate": self.auth.challenge})
        if path != self.cfg.traces_url_path:
            h.close_connection = True
            return self.reply(h, 404, b"404 page not found\n", "text/plain; charset=utf-8")
        if h.command != "POST":
            return self.reply(h, 405, b"405 method not allowed, supported: [POST]", "text/plain",
                              {"Allow": "POST"})
        if ctype not in _CONTENT_TYPES:
            return self.reply(h, 415, _UNSUPPORTED_MEDIA, "text/plain")
        if not self.slots.acquire(blocking=False):  # bounds the memory bodies in flight can take
            h.close_connection = True
            return self.error(h, 429, code_pb2.RESOURCE_EXHAUSTED, "too many concurrent requests", as_json,
                              {"Retry-After": "1"})
        try:
            self._ingest(h, as_json)
        finally:
            self.slots.release()

    def _ingest(self, h: BaseHTTPRequestHandler, as_json: bool) -> None:
        try:
            body = self._read_body(h)
            if body is None:
                return
            decoded = self.ingest.handle(body, as_json, "http", None)
        except _TooLarge as exc:
            return self.error(h, 413, code_pb2.RESOURCE_EXHAUSTED, str(exc), as_json)
        except _Unsupported as exc:
            return self.error(h, 415, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        except DecodeFailure as exc:
            return self.error(h, 400, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        except Overloaded as exc:
            return self.error(h, 429, code_pb2.RESOURCE_EXHAUSTED, str(exc), as_json,
                              {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
        except TimeoutError as exc:
            return self.error(h, 503, code_pb2.UNAVAILABLE, str(exc), as_json, {"Retry-After": "1"})
        except PermanentError as exc:
            return self.error(h, 400, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        self.reply(h, 200, response_bytes(decoded, as_json), "application/json" if as_json else "application/x-protobuf")

    def _read_body(self, h: BaseHTTPRequestHandler) -> bytes | None:
        """The decoded request body; None when the client went away mid-body."""
        limit = self.cfg.max_request_body_size
        encoding = (h.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in _DECOMPRESSORS and encoding != "identity":
            h.close_connection = True
            raise _Unsupported(f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or identity)")
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            h.close_connection = True  # on any error below, the rest of the body is unread
            body = _read_chunked(h.rfile, limit)
            h.close_connection = False
        else:
            length = self._content_length(h, limit)
            body = h.rfile.read(length)
            if len(body) < length:
                h.close_connection = True
                return None
        if encoding in _DECOMPRESSORS:
            body = _decompress(body, _DECOMPRESSORS[encoding], limit)
        return body

    @staticmethod
    def _content_length(h: BaseHTTPRequestHandler, limit: int) -> int:
        raw = h.headers.get("Content-Length")
        if raw is None:
            return 0  # no body (an empty protobuf request is valid)
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            h.close_connection = True
            raise DecodeFailure("invalid Content-Length") from None
        if length > limit:
            if length - limit <= _DRAIN_LIMIT:  # read and drop it, so the client gets to read our answer
                _discard(h.rfile, length)
            else:
                h.close_connection = True  # too much to read for nothing: close instead
            raise _TooLarge(f"request body of {h.headers.get('Content-Length')} bytes exceeds "
                            f"max_request_body_size {limit}")
        return length

    def shutdown(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class _Unsupported(Exception):
    pass


class OtlpReceiver:
    def __init__(self, config: OtlpReceiverConfig, ctx: ComponentContext) -> None:
        journal = IntakeJournal(config.storage, ctx, _decode_record) if config.storage else None
        self.ingest = _Ingest(ctx, config.ack_timeout, journal)
        p = config.protocols
        self.grpc = _GrpcServer(p.grpc, self.ingest) if p.grpc is not None else None
        self.http = _HttpServer(p.http, self.ingest) if p.http is not None else None

    def start(self, consumer: Consumer) -> None:
        self.ingest.consumer = consumer
        if self.ingest.journal is not None:
            self.ingest.journal.start(consumer)
        try:
            for server in (self.grpc, self.http):
                if server is not None:
                    server.start()
        except BaseException:
            self.shutdown()  # e.g. the HTTP port is taken: release the gRPC port and the journal
            raise
        if self.grpc:
            self.ingest.log.info("OTLP/gRPC listening on %s%s", self.grpc.cfg.endpoint, " (TLS)" if self.grpc.cfg.tls else "")
        if self.http:
            self.ingest.log.info("OTLP/HTTP listening on %s%s%s", self.http.cfg.endpoint, self.http.cfg.traces_url_path,
                                 " (TLS)" if self.http.cfg.tls else "")

    def shutdown(self) -> None:
        for server in (self.http, self.grpc):
            if server is not None:
                server.shutdown()
        if self.ingest.journal is not None:
            self.ingest.journal.shutdown(self.ingest.ack_timeout)


FACTORY = Factory("otlp", OtlpReceiverConfig, lambda cfg, ctx: OtlpReceiver(cfg, ctx),
                  doc="OTLP over gRPC and HTTP (protobuf and JSON); acknowledges only what is safely written",
                  example="""\
protocols:
  grpc:
    endpoint: 127.0.0.1:4317
  http:
    endpoint: 127.0.0.1:4318
    auth: {bearer_token_file: /etc/genai-collector/tokens}
storage:                 # optional intake journal: acknowledge on fsync
  directory: /var/lib/genai-collector/intake
  max_size: 1GiB
""")
