"""``otlp`` receiver: OTLP/gRPC and OTLP/HTTP (protobuf and JSON), as the OTel Collector's.

Traces, logs and metrics take the same path (:class:`_Ingest` is generic over the signal; what
differs per signal is in :data:`collector.otlp.OTLP_SIGNALS`): gRPC ``TraceService``,
``LogsService`` and ``MetricsService``; HTTP ``traces_url_path``, ``logs_url_path`` and
``metrics_url_path``.  A signal no pipeline takes from this receiver is refused (gRPC
``UNIMPLEMENTED``, HTTP 404, as before it was supported), counted, and logged once with the
config that would take it.

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
from http.server import BaseHTTPRequestHandler

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from collector.component import (ALL_SIGNALS, ComponentContext, Consumers, Factory, Overloaded, PermanentError,
                                 Receiver, Unavailable)
from collector.model import LOGS, METRICS, SIGNALS, TRACES, UNITS, Batch
from collector.memtrim import after_large_request
from collector.netserver import DEADLINES, BoundedHTTPServer, shut_reading
from collector.otlp import OTLP_SIGNALS, DecodeFailure, decode, response_bytes, status_bytes
from collector.receivers.journal import IntakeJournal, StorageConfig
from collector.receivers.security import AuthConfig, BearerAuth, TlsConfig, server_ssl_context
from config.files import read_config_file
from collector.telemetry import parse_address
from config.schema import ByteSize, ConfigError, Duration, setting

__all__ = ["OtlpReceiver", "OtlpReceiverConfig"]

_ADDRESS = r"^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$"
_ABSENT: Any = object()


@dataclass
class GrpcConfig:
    endpoint: str = setting("127.0.0.1:4317", pattern=_ADDRESS,
                            doc="host:port to listen on (0.0.0.0:4317 for every interface)")
    max_recv_msg_size_mib: int = setting(16, min=1, max=2047, doc="larger messages get RESOURCE_EXHAUSTED")
    max_concurrent_requests: int = setting(64, min=1, max=4096, doc=(
        "requests handled at once (after their message is in); up to 4x this many calls may be open, "
        "beyond that gRPC answers RESOURCE_EXHAUSTED"))
    read_timeout: Duration = setting(30.0, min=0.001, doc=(
        "longest a call may take to deliver its request message once it started; a call that "
        "stalls is cancelled (CANCELLED) and its slot freed"))
    max_concurrent_streams: int = setting(16, min=1, max=4096, doc="calls one connection may have open at once")
    max_connection_idle: Duration = setting(300.0, min=0.001, doc="a connection without calls for this long is closed (GOAWAY)")
    tls: TlsConfig | None = setting(None, doc="serve TLS (plaintext when unset)")
    auth: AuthConfig | None = setting(None, doc="require a bearer token (none when unset)")


@dataclass
class HttpConfig:
    endpoint: str = setting("127.0.0.1:4318", pattern=_ADDRESS,
                            doc="host:port to listen on (0.0.0.0:4318 for every interface)")
    traces_url_path: str = setting("/v1/traces", pattern=r"^/\S*$", doc="path of the traces endpoint")
    logs_url_path: str = setting("/v1/logs", pattern=r"^/\S*$", doc="path of the logs endpoint")
    metrics_url_path: str = setting("/v1/metrics", pattern=r"^/\S*$", doc="path of the metrics endpoint")
    max_request_body_size: ByteSize = setting(20 * 1024 * 1024, min=1, doc="cap on the body, before and "
                                              "after decompression (413 beyond)")
    max_concurrent_requests: int = setting(64, min=1, max=4096, doc="requests processed at once, once their "
                                           "body is read; beyond, 429")
    read_timeout: Duration = setting(30.0, min=0.001, doc=(
        "longest a client may take to send a whole request, headers and body (not per read); "
        "slower ones get 408 and the connection is closed"))
    idle_timeout: Duration = setting(60.0, min=0.001, doc="a keep-alive connection silent for this long is closed")
    max_connections: int = setting(512, min=1, max=65536, doc=(
        "connections served at once (a thread each); one more is closed on accept"))
    tls: TlsConfig | None = setting(None, doc="serve TLS (plaintext when unset)")
    auth: AuthConfig | None = setting(None, doc="require a bearer token (none when unset)")

    def paths(self) -> dict[str, str]:
        """URL path -> signal."""
        return {self.traces_url_path: TRACES, self.logs_url_path: LOGS, self.metrics_url_path: METRICS}

    def validate(self) -> list:
        if len(self.paths()) < 3:
            return [ConfigError("", "traces_url_path, logs_url_path and metrics_url_path must differ")]
        return []


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


_TAGS = {tag: (sig.name, as_json) for sig in OTLP_SIGNALS.values()
         for tag, as_json in zip(sig.journal_tags, (False, True))}


def _tag(signal: str, as_json: bool) -> bytes:
    return OTLP_SIGNALS[signal].journal_tags[as_json]


def _decode_record(tag: bytes, body: bytes) -> Batch:
    """The valid items of a journaled request (validation is deterministic, so same as at intake)."""
    signal, as_json = _TAGS[tag]
    return decode(body, as_json, signal).batch


class _Ingest:
    """Transport-independent handling: decode, validate, hand over (or journal), count."""

    def __init__(self, ctx: ComponentContext, ack_timeout: float, journal: IntakeJournal | None) -> None:
        self.ctx = ctx
        self.log = ctx.logger
        self.ack_timeout = ack_timeout
        self.journal = journal
        self.consumers: Consumers | None = None
        self._counters: dict[tuple[str, str], tuple] = {}

    def bad_request(self, transport: str) -> None:
        self.ctx.counter("bad_requests", "Requests refused before decoding or undecodable.",
                         transport=transport).add(1)

    def repaired(self, transport: str, count: int) -> None:
        self.ctx.counter("repaired_values", "String values with invalid UTF-8 stored with U+FFFD "
                         "(their items are kept).", transport=transport).add(count)

    def counters(self, transport: str, signal: str):
        """(accepted, refused, rejected) counters of ``signal`` on ``transport``."""
        c = self._counters.get((transport, signal))
        if c is None:
            unit = UNITS[signal]
            c = self._counters[(transport, signal)] = (
                self.ctx.counter(f"accepted_{unit}", "Items accepted and stored durably.", transport=transport),
                self.ctx.counter(f"refused_{unit}", "Items refused (overload, error); the client may retry.",
                                 transport=transport),
                self.ctx.counter(f"rejected_{unit}", "Invalid items rejected with partial success.",
                                 transport=transport),
            )
        return c

    def unrouted(self, signal: str) -> str | None:
        """None when a pipeline takes ``signal``; else the refusal message (counted, logged once)."""
        if self.consumers.get(signal) is not None:
            return None
        return self.consumers.unrouted(signal)

    def reserve(self, nbytes: int, signal: str):
        """Admit ``nbytes`` against the memory limit of ``signal``'s pipelines now (Overloaded when
        full), as a context that gives them back unless handed to the pipelines; a no-op context
        with the journal (which admits when it feeds)."""
        if self.journal is not None:
            return contextlib.nullcontext()
        return self.consumers.get(signal).reserve(nbytes)

    def handle(self, body: bytes, as_json: bool, transport: str, timeout: float | None, signal: str,
               reservation=None):
        """Returns the Decoded result; raises DecodeFailure / Overloaded / PermanentError / TimeoutError.

        ``reservation``: the transport already admitted ``len(body)`` (before reading it)."""
        accepted, refused, rejected = self.counters(transport, signal)
        consumer = self.consumers.get(signal)
        # Admit the encoded size before decoding, so a refused request is never decoded and the
        # decoded items of every handler thread count against the memory limit.
        with reservation if reservation is not None else self.reserve(len(body), signal) as reservation:
            decoded = decode(body, as_json, signal)
            rejected.add(decoded.rejected)
            if decoded.repaired:
                self.repaired(transport, decoded.repaired)
            if decoded.error_message:
                self.log.debug("partial success: %s", decoded.error_message)
            batch = decoded.batch
            if len(batch):
                wait = self.ack_timeout if timeout is None else max(0.0, min(timeout, self.ack_timeout))
                try:
                    if self.journal is not None:
                        self.journal.append(_tag(signal, as_json), body, batch, wait)
                    else:
                        consumer.consume(batch, timeout=wait, reservation=reservation)
                except (Overloaded, PermanentError, TimeoutError):
                    refused.add(len(batch))
                    raise
                accepted.add(len(batch))
        return decoded


# -- gRPC --------------------------------------------------------------------------------------

_GRPC_CALLS_PER_SLOT = 4  # calls admitted (each a worker thread) per max_concurrent_requests slot
_GRPC_FAST_RECEIVE = 0.5  # seconds a message may take to arrive while holding a receive slot
_GRPC_STREAM_WINDOW = 1 << 20  # HTTP/2 flow-control window per stream: what is buffered before asked for
_GRPC_SLOT_WAIT = 1.0  # seconds a call may queue for a slot before RESOURCE_EXHAUSTED + RetryInfo
_GRPC_HANDSHAKE_TIMEOUT = 10.0
_GRPC_KEEPALIVE_TIME, _GRPC_KEEPALIVE_TIMEOUT = 60.0, 20.0


def _receive_slots(cfg: GrpcConfig) -> int:
    """Messages being received at once: a quarter of the handling slots.  Each is buffered twice
    (by grpcio, then as bytes) before admission can look at its size, so this is what bounds
    un-admitted memory: receive slots x 2 x max_recv_msg_size.  Measured on
    bench/hostile_memory.py (shipped config, 48 x 15 MB): 8 slots peaked at 419 MB, 4 at 349 MB,
    2 at 338 MB (398 MB with presidio redaction)."""
    return max(1, cfg.max_concurrent_requests // 4)


class _ReleaseOnce:
    """A semaphore slot given back exactly once, by whichever of two threads comes first."""

    __slots__ = ("_semaphore", "_lock", "_held")

    def __init__(self, semaphore: threading.Semaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._semaphore.release()


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
        self._slots = threading.BoundedSemaphore(cfg.max_concurrent_requests)
        self._receiving_slots = threading.BoundedSemaphore(_receive_slots(cfg))
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
        credentials = self._credentials() if self.cfg.tls else None
        calls = self.cfg.max_concurrent_requests * _GRPC_CALLS_PER_SLOT
        # one worker per call admitted: a stalled call holds a worker (for read_timeout at most),
        # never one of the max_concurrent_requests slots that handle requests
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=calls, thread_name_prefix="otlp-grpc"),
                                  options=self._server_options(), maximum_concurrent_rpcs=calls)
        self.server.add_generic_rpc_handlers(tuple(  # raw bytes in and out
            grpc.method_handlers_generic_handler(OTLP_SIGNALS[signal].grpc_service, {
                "Export": self._receiving(lambda body, context, signal=signal: self._export(body, context, signal))})
            for signal in SIGNALS))
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

    def _server_options(self) -> list[tuple[str, int]]:
        """Channel args against slow and idle peers (grpcio has no such defaults: a handshake may
        take 120 s, an idle connection lives forever, streams per connection are unlimited)."""
        ms = lambda seconds: int(seconds * 1000)  # noqa: E731
        return [
            ("grpc.max_receive_message_length", self.cfg.max_recv_msg_size_mib << 20),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", self.cfg.max_concurrent_streams),
            ("grpc.max_connection_idle_ms", ms(self.cfg.max_connection_idle)),
            ("grpc.server_handshake_timeout_ms", ms(_GRPC_HANDSHAKE_TIMEOUT)),
            ("grpc.keepalive_time_ms", ms(_GRPC_KEEPALIVE_TIME)),  # pings find peers that vanished
            ("grpc.keepalive_timeout_ms", ms(_GRPC_KEEPALIVE_TIMEOUT)),
            # BDP probing grows a stream's window to many MB, and grpcio then buffers that much of
            # every incoming message before the handler asks for it (measured: 24 x 15 MB calls
            # held ~200 MB unasked for); a fixed 1 MiB window bounds that and keeps throughput
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", _GRPC_STREAM_WINDOW),
        ]

    def _receiving(self, behaviour):
        """A handler that receives the request message under the transport's limits, then runs
        ``behaviour(body, context)`` like a unary handler.

        Registered as stream-unary (the same on the wire as unary: one message, then half-close)
        so that the handler runs *before* the message is received.  grpcio's unary handlers are
        called only after it, with the worker blocked until then without a deadline -- a call
        that sends its headers and never its message held a worker forever.  Here receiving is
        bounded (see :meth:`_receive`), a message must arrive within ``read_timeout`` (else the
        call is cancelled), and the handling slots are taken only once the message is in.
        """
        def handler(requests, context: grpc.ServicerContext) -> bytes:
            body = self._receive(requests, context)
            try:
                if not self._slots.acquire(timeout=self._slot_wait(context)):
                    self._overloaded(context, "too many concurrent requests", 1.0)
                try:
                    return behaviour(body, context)
                finally:
                    self._slots.release()
            finally:
                after_large_request(len(body))

        return grpc.stream_unary_rpc_method_handler(handler)

    def _receive(self, requests, context: grpc.ServicerContext) -> bytes:
        """The call's one request message, received within ``read_timeout``; aborts otherwise.

        Receiving holds one of :func:`_receive_slots` receive slots -- that bounds the
        messages being buffered at once, hence memory before admission -- but only for
        ``_GRPC_FAST_RECEIVE``: a message not in by then is slow or never coming, and waits on
        without a slot (still bounded by ``read_timeout`` and the worker pool), so stalled calls
        cannot keep others from being received.
        """
        if not self._receiving_slots.acquire(timeout=self._slot_wait(context)):
            self._overloaded(context, "too many requests being received", 1.0)
        slot = _ReleaseOnce(self._receiving_slots)
        demote = DEADLINES.arm(_GRPC_FAST_RECEIVE, slot.release)
        deadline = DEADLINES.arm(self.cfg.read_timeout, context.cancel)
        try:
            body = next(requests, None)
            # and the client's half-close: until it is read the stream stays open in grpcio and
            # counts against max_concurrent_streams after the call has been answered
            extra = next(requests, None) if body is not None else None
        except grpc.RpcError:  # cancelled: by read_timeout, the client, or its deadline
            body = extra = None
        finally:
            deadline.cancel()
            demote.cancel()
            slot.release()
        if body is None or extra is not None:
            self.ingest.bad_request("grpc")
            why = (f"request message not received within read_timeout ({self.cfg.read_timeout:g}s)"
                   if deadline.expired else "expected exactly one request message")
            context.abort(grpc.StatusCode.CANCELLED if deadline.expired else grpc.StatusCode.INVALID_ARGUMENT, why)
        return body

    def _slot_wait(self, context: grpc.ServicerContext) -> float:
        """How long a call may queue for a slot: a little, within its own deadline."""
        remaining = context.time_remaining()
        return max(0.0, min(_GRPC_SLOT_WAIT, remaining if remaining is not None else _GRPC_SLOT_WAIT))

    @staticmethod
    def _overloaded(context: grpc.ServicerContext, message: str, retry_after: float) -> None:
        context.set_trailing_metadata(_retry_trailers(code_pb2.RESOURCE_EXHAUSTED, message, retry_after))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def _export(self, body: bytes, context: grpc.ServicerContext, signal: str) -> bytes:
        if self.auth is not None:
            header = next((v for k, v in context.invocation_metadata() if k == "authorization"), None)
            if not self.auth.check(header if isinstance(header, str) else None):
                self.ingest.bad_request("grpc")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        refusal = self.ingest.unrouted(signal)
        if refusal is not None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, refusal)
        remaining = context.time_remaining()
        timeout = None if remaining is None or math.isinf(remaining) else max(0.0, remaining - 0.05)
        try:
            decoded = self.ingest.handle(body, False, "grpc", timeout, signal)
        except DecodeFailure as exc:
            self.ingest.bad_request("grpc")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Unavailable as exc:
            context.set_trailing_metadata(_retry_trailers(code_pb2.UNAVAILABLE, str(exc), exc.retry_after))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Overloaded as exc:
            self._overloaded(context, str(exc), exc.retry_after)
        except TimeoutError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except PermanentError as exc:  # as the Collector: permanent means "do not retry this data"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:  # noqa: BLE001 - a bug must cost one request, not the server
            self.ingest.log.exception("otlp grpc: unexpected error")
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        return response_bytes(decoded, False, signal)

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.stop(grace=self.ingest.ack_timeout).wait()
            self.server = None


# -- HTTP --------------------------------------------------------------------------------------

_CONTENT_TYPES = {"application/x-protobuf": False, "application/json": True}
_UNSUPPORTED_MEDIA = b"415 unsupported media type, supported: [application/json, application/x-protobuf]"
_DECOMPRESSORS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS,
                  "zlib": zlib.MAX_WBITS}
_DRAIN_LIMIT = 16 << 20  # refused bodies up to this size (over the limit) are read (and dropped)


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


def _content_encoding(h: BaseHTTPRequestHandler) -> str:
    encoding = (h.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in _DECOMPRESSORS and encoding != "identity":
        h.close_connection = True
        raise _Unsupported(f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or identity)")
    return encoding


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
        self.paths = cfg.paths()
        self.httpd: BoundedHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        host, port = parse_address(self.cfg.endpoint)
        context = server_ssl_context(self.cfg.tls) if self.cfg.tls else None
        outer = self
        log = self.ingest.log

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = self.cfg.idle_timeout  # the socket timeout: how long a read may wait at all
            read_deadline = None

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
                    if not self.rfile.peek(1):  # idle until the next request's first byte (or EOF)
                        self.close_connection = True
                        return
                    self.read_deadline = outer.arm_read_deadline(self.connection)
                    try:
                        super().handle_one_request()
                    finally:
                        self.read_deadline.cancel()
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

        class Server(BoundedHTTPServer):
            def handle_error(self, request, client_address) -> None:
                log.debug("otlp http: connection from %s failed", client_address, exc_info=True)

        try:
            self.httpd = Server((host, port), Handler, max_connections=self.cfg.max_connections)
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
            self.ingest.bad_request("http")
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
        signal = self.paths.get(path)
        refusal = self.ingest.unrouted(signal) if signal is not None else None
        if signal is None or refusal is not None:
            h.close_connection = True
            text = f"404 page not found: {refusal}\n" if refusal else "404 page not found\n"
            return self.reply(h, 404, text.encode(), "text/plain; charset=utf-8")
        if h.command != "POST":
            return self.reply(h, 405, b"405 method not allowed, supported: [POST]", "text/plain",
                              {"Allow": "POST"})
        if ctype not in _CONTENT_TYPES:
            return self.reply(h, 415, _UNSUPPORTED_MEDIA, "text/plain")
        self._ingest(h, as_json, signal)

    def arm_read_deadline(self, sock):
        """The whole-request read deadline: once it passes, reads on ``sock`` see EOF."""
        return DEADLINES.arm(self.cfg.read_timeout, lambda: shut_reading(sock))

    def _ingest(self, h: BaseHTTPRequestHandler, as_json: bool, signal: str) -> None:
        try:
            self._ingest_body(h, as_json, signal)
        finally:
            length = h.headers.get("Content-Length", "")
            after_large_request(int(length) if length.isdigit() else 0)

    def _ingest_body(self, h: BaseHTTPRequestHandler, as_json: bool, signal: str) -> None:
        try:
            with contextlib.ExitStack() as admitted:
                encoding = _content_encoding(h)
                length = self._content_length(h, self.cfg.max_request_body_size)
                reservation = admitted.enter_context(self._admit_body(h, length, signal))
                body = self._read_body(h, length)
                if not self._read_done(h, body, as_json):
                    return
                if encoding != "identity":
                    admitted.close()  # the inflated size is admitted instead, by handle()
                    reservation = None
                    body = _decompress(body, _DECOMPRESSORS[encoding], self.cfg.max_request_body_size)
                if not self.slots.acquire(blocking=False):  # bounds decoding and waiting, not reading
                    return self.error(h, 429, code_pb2.RESOURCE_EXHAUSTED, "too many concurrent requests", as_json,
                                      {"Retry-After": "1"})
                try:
                    decoded = self.ingest.handle(body, as_json, "http", None, signal, reservation)
                finally:
                    self.slots.release()
        except _TooLarge as exc:
            return self.error(h, 413, code_pb2.RESOURCE_EXHAUSTED, str(exc), as_json)
        except _Unsupported as exc:
            return self.error(h, 415, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        except DecodeFailure as exc:
            return self.error(h, 400, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        except Unavailable as exc:
            return self.error(h, 503, code_pb2.UNAVAILABLE, str(exc), as_json,
                              {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
        except Overloaded as exc:
            return self.error(h, 429, code_pb2.RESOURCE_EXHAUSTED, str(exc), as_json,
                              {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
        except TimeoutError as exc:
            return self.error(h, 503, code_pb2.UNAVAILABLE, str(exc), as_json, {"Retry-After": "1"})
        except PermanentError as exc:
            return self.error(h, 400, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        self.reply(h, 200, response_bytes(decoded, as_json, signal),
                   "application/json" if as_json else "application/x-protobuf")

    def _admit_body(self, h: BaseHTTPRequestHandler, length: int | None, signal: str):
        """Admit the announced body against the memory limit *before* reading it, so bodies being
        read never hold memory that admission has not seen; refused, it is drained (up to a
        limit, so the client reads the 429) or the connection closed.  A chunked body has no
        announced size: it is admitted once read (``handle``), at most max_request_body_size."""
        if not length:
            return contextlib.nullcontext()
        try:
            return self.ingest.reserve(length, signal)
        except Overloaded:
            if length <= _DRAIN_LIMIT:
                _discard(h.rfile, length)
            else:
                h.close_connection = True
            raise

    def _read_done(self, h: BaseHTTPRequestHandler, body: bytes | None, as_json: bool) -> bool:
        """End the read deadline; False (after a 408 if the deadline cut the body short) when
        there is no whole body to handle."""
        h.read_deadline.cancel()
        if h.read_deadline.expired:  # reads are shut: this connection serves no further request
            h.close_connection = True
        if body is not None:
            return True
        h.close_connection = True
        if h.read_deadline.expired:
            self.error(h, 408, code_pb2.DEADLINE_EXCEEDED,
                       f"request not received within read_timeout ({self.cfg.read_timeout:g}s)", as_json)
        return False

    def _read_body(self, h: BaseHTTPRequestHandler, length: int | None) -> bytes | None:
        """The raw request body (``length`` None: chunked); None when it ended early (the client
        went away or the read deadline passed)."""
        if length is None:
            h.close_connection = True  # on any error below, the rest of the body is unread
            try:
                body = _read_chunked(h.rfile, self.cfg.max_request_body_size)
            except DecodeFailure:
                if h.read_deadline.expired:
                    return None
                raise
            h.close_connection = False
            return body
        body = h.rfile.read(length)
        return body if len(body) == length else None

    @staticmethod
    def _content_length(h: BaseHTTPRequestHandler, limit: int) -> int | None:
        """The announced body size (None: chunked), refused when over ``limit``."""
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            return None
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


class OtlpReceiver(Receiver):
    def __init__(self, config: OtlpReceiverConfig, ctx: ComponentContext) -> None:
        journal = IntakeJournal(config.storage, ctx, _decode_record) if config.storage else None
        self.ingest = _Ingest(ctx, config.ack_timeout, journal)
        p = config.protocols
        self.grpc = _GrpcServer(p.grpc, self.ingest) if p.grpc is not None else None
        self.http = _HttpServer(p.http, self.ingest) if p.http is not None else None

    def start(self, consumers: Consumers) -> None:
        self.ingest.consumers = consumers
        if self.ingest.journal is not None:
            self.ingest.journal.start(consumers)
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
            self.ingest.log.info("OTLP/HTTP listening on %s (%s)%s", self.http.cfg.endpoint,
                                 ", ".join(self.http.paths), " (TLS)" if self.http.cfg.tls else "")

    def shutdown(self) -> None:
        for server in (self.http, self.grpc):
            if server is not None:
                server.shutdown()
        if self.ingest.journal is not None:
            self.ingest.journal.shutdown(self.ingest.ack_timeout)


FACTORY = Factory("otlp", OtlpReceiverConfig, lambda cfg, ctx: OtlpReceiver(cfg, ctx), signals=ALL_SIGNALS,
                  doc="OTLP traces, logs and metrics over gRPC and HTTP (protobuf and JSON); acknowledges only "
                      "what is safely written",
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
