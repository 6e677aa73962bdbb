"""``otlp`` receiver: OTLP/gRPC and OTLP/HTTP (protobuf and JSON), as the OTel Collector's.

Each protocol is enabled by its key under ``protocols`` (an empty key takes the defaults).  A
request is answered only after the pipelines have taken its spans durably (see
``collector/pipeline.py``), so ``OK``/200 means the spans are kept.  Overload answers
``RESOURCE_EXHAUSTED`` with ``RetryInfo`` / 429 with ``Retry-After``, which the official SDK
exporters retry.
"""

from __future__ import annotations

import gzip
import logging
import math
import threading
import zlib
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from collector.component import ComponentContext, Consumer, Factory, Overloaded, PermanentError
from collector.model import SpanBatch
from collector.otlp import DecodeFailure, decode_json, decode_protobuf, response_bytes, status_bytes, validate_spans
from collector.telemetry import parse_address
from config.schema import ByteSize, ConfigError, Duration, build, setting

__all__ = ["OtlpReceiver", "OtlpReceiverConfig"]

_ADDRESS = r"^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$"
_ABSENT: Any = object()
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@dataclass
class GrpcConfig:
    endpoint: str = setting("127.0.0.1:4317", pattern=_ADDRESS)
    max_recv_msg_size_mib: int = setting(16, min=1, max=2047)
    max_concurrent_requests: int = setting(64, min=1, max=4096, doc="requests handled at once")


@dataclass
class HttpConfig:
    endpoint: str = setting("127.0.0.1:4318", pattern=_ADDRESS)
    traces_url_path: str = setting("/v1/traces", pattern=r"^/\S*$")
    max_request_body_size: ByteSize = setting(20 * 1024 * 1024, min=1)


@dataclass
class ProtocolsConfig:
    """``grpc:`` / ``http:`` present (even empty) enables that protocol."""

    grpc: Any = _ABSENT
    http: Any = _ABSENT

    def validate(self) -> list:
        problems: list = []
        for name, cls in (("grpc", GrpcConfig), ("http", HttpConfig)):
            raw = getattr(self, name)
            if raw is _ABSENT:
                setattr(self, name, None)
                continue
            obj, errors = build(cls, raw if raw is not None else {}, (name,))
            problems.extend(errors)
            setattr(self, name, obj)
        if not problems and self.grpc is None and self.http is None:
            problems.append(ConfigError("", "must enable at least one protocol (grpc, http)"))
        return problems


@dataclass
class OtlpReceiverConfig:
    protocols: ProtocolsConfig
    ack_timeout: Duration = setting(30.0, doc="longest a request waits for its spans to be written")


class _Ingest:
    """Transport-independent handling: decode, validate, hand over, count."""

    def __init__(self, ctx: ComponentContext, ack_timeout: float) -> None:
        self.ctx = ctx
        self.log = ctx.logger
        self.ack_timeout = ack_timeout
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
                self.ctx.counter("bad_requests", "Requests that could not be decoded.", transport=transport),
            )
        return c

    def handle(self, body: bytes, as_json: bool, transport: str, timeout: float | None):
        """Returns the Decoded result; raises DecodeFailure / Overloaded / PermanentError / TimeoutError."""
        accepted, refused, rejected, bad = self.counters(transport)
        try:
            request = decode_json(body) if as_json else decode_protobuf(body)
            decoded = validate_spans(request)
        except DecodeFailure:
            bad.add(1)
            raise
        except RecursionError:
            bad.add(1)
            raise DecodeFailure("request nested too deeply") from None
        rejected.add(decoded.rejected)
        if decoded.rejected:
            self.log.debug("partial success: %s", decoded.error_message)
        if decoded.spans:
            wait = self.ack_timeout if timeout is None else max(0.0, min(timeout, self.ack_timeout))
            try:
                self.consumer.consume(SpanBatch(decoded.spans, len(body)), timeout=wait)
            except (Overloaded, PermanentError, TimeoutError):
                refused.add(len(decoded.spans))
                raise
            accepted.add(len(decoded.spans))
        return decoded


# -- gRPC --------------------------------------------------------------------------------------


def _retry_status(code: int, message: str, retry_after: float) -> bytes:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(retry_after), nanos=int((retry_after % 1) * 1e9)))
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(info)
    return status.SerializeToString()


class _GrpcServer:
    def __init__(self, cfg: GrpcConfig, ingest: _Ingest) -> None:
        self.cfg = cfg
        self.ingest = ingest
        self.server: grpc.Server | None = None
        self.port = 0

    def start(self) -> None:
        size = self.cfg.max_recv_msg_size_mib * 1024 * 1024
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
            self.port = self.server.add_insecure_port(target)
        except RuntimeError as exc:
            raise OSError(f"otlp grpc: cannot listen on {self.cfg.endpoint}: {exc}") from None
        if not self.port:
            raise OSError(f"otlp grpc: cannot listen on {self.cfg.endpoint} (address in use?)")
        self.server.start()

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        remaining = context.time_remaining()
        timeout = None if remaining is None or math.isinf(remaining) else max(0.0, remaining - 0.05)
        try:
            decoded = self.ingest.handle(body, False, "grpc", timeout)
        except DecodeFailure as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Overloaded as exc:
            context.set_trailing_metadata(
                (("grpc-status-details-bin", _retry_status(code_pb2.RESOURCE_EXHAUSTED, str(exc), exc.retry_after)),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except TimeoutError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except PermanentError as exc:
            context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return response_bytes(decoded, as_json=False)

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.stop(grace=self.ingest.ack_timeout).wait()
            self.server = None


# -- HTTP --------------------------------------------------------------------------------------

_CONTENT_TYPES = {"application/x-protobuf": False, "application/protobuf": False, "application/json": True}


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress with a cap, so a gzip bomb costs at most ``limit`` bytes of memory."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(body, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise OverflowError
    if not d.eof:
        raise DecodeFailure("truncated gzip body")
    return out


class _HttpServer:
    def __init__(self, cfg: HttpConfig, ingest: _Ingest) -> None:
        self.cfg = cfg
        self.ingest = ingest
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        host, port = parse_address(self.cfg.endpoint)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                outer.handle_post(self)

            def do_GET(self) -> None:  # noqa: N802
                outer.method_not_allowed(self)

            do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, fmt, *args) -> None:
                outer.ingest.log.debug("http %s", fmt % args)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise OSError(f"otlp http: cannot listen on {self.cfg.endpoint}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="otlp-http", daemon=True)
        self.thread.start()

    def _reply(self, h: BaseHTTPRequestHandler, code: int, body: bytes, as_json: bool,
               headers: dict[str, str] | None = None) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/json" if as_json else "application/x-protobuf")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _error(self, h, code: int, grpc_code: int, message: str, as_json: bool, headers=None) -> None:
        self._reply(h, code, status_bytes(grpc_code, message, as_json), as_json, headers)

    def method_not_allowed(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        if path != self.cfg.traces_url_path:
            self._error(h, 404, code_pb2.NOT_FOUND, f"unknown path {path}", True)
        else:
            self._error(h, 405, code_pb2.UNIMPLEMENTED, f"method {h.command} not allowed, use POST", True,
                        {"Allow": "POST"})

    def handle_post(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        ctype = (h.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        as_json = _CONTENT_TYPES.get(ctype, True)
        if path != self.cfg.traces_url_path:
            h.close_connection = True
            return self._error(h, 404, code_pb2.NOT_FOUND, f"unknown path {path}", as_json)
        if ctype not in _CONTENT_TYPES:
            h.close_connection = True
            return self._error(h, 415, code_pb2.INVALID_ARGUMENT,
                               f"unsupported content type {ctype!r} (use application/x-protobuf or "
                               "application/json)", True)
        limit = self.cfg.max_request_body_size
        try:
            length = int(h.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            h.close_connection = True
            return self._error(h, 411, code_pb2.INVALID_ARGUMENT, "a valid Content-Length is required", as_json)
        if length > limit:
            h.close_connection = True  # don't read it: the connection is closed instead
            return self._error(h, 413, code_pb2.RESOURCE_EXHAUSTED,
                               f"request body of {length} bytes exceeds max_request_body_size {limit}", as_json)
        body = h.rfile.read(length)
        if len(body) < length:
            h.close_connection = True
            return
        encoding = (h.headers.get("Content-Encoding") or "").strip().lower()
        try:
            if encoding == "gzip":
                body = _gunzip(body, limit)
            elif encoding not in ("", "identity"):
                return self._error(h, 415, code_pb2.INVALID_ARGUMENT, f"unsupported Content-Encoding {encoding!r}",
                                   as_json)
            decoded = self.ingest.handle(body, as_json, "http", None)
        except OverflowError:
            return self._error(h, 413, code_pb2.RESOURCE_EXHAUSTED,
                               f"decompressed body exceeds max_request_body_size {limit}", as_json)
        except (DecodeFailure, zlib.error, EOFError, gzip.BadGzipFile) as exc:
            return self._error(h, 400, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        except Overloaded as exc:
            return self._error(h, 429, code_pb2.RESOURCE_EXHAUSTED, str(exc), as_json,
                               {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
        except TimeoutError as exc:
            return self._error(h, 503, code_pb2.UNAVAILABLE, str(exc), as_json, {"Retry-After": "1"})
        except PermanentError as exc:
            return self._error(h, 500, code_pb2.INTERNAL, str(exc), as_json)
        self._reply(h, 200, response_bytes(decoded, as_json), as_json)

    def shutdown(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class OtlpReceiver:
    def __init__(self, config: OtlpReceiverConfig, ctx: ComponentContext) -> None:
        self.ingest = _Ingest(ctx, config.ack_timeout)
        p = config.protocols
        self.grpc = _GrpcServer(p.grpc, self.ingest) if p.grpc is not None else None
        self.http = _HttpServer(p.http, self.ingest) if p.http is not None else None

    def start(self, consumer: Consumer) -> None:
        self.ingest.consumer = consumer
        for server in (self.grpc, self.http):
            if server is not None:
                server.start()
        if self.grpc:
            self.ingest.log.info("OTLP/gRPC listening on %s", self.grpc.cfg.endpoint)
        if self.http:
            self.ingest.log.info("OTLP/HTTP listening on %s%s", self.http.cfg.endpoint, self.http.cfg.traces_url_path)

    def shutdown(self) -> None:
        for server in (self.http, self.grpc):
            if server is not None:
                server.shutdown()


FACTORY = Factory("otlp", OtlpReceiverConfig, lambda cfg, ctx: OtlpReceiver(cfg, ctx))
