"""Test support for the upstream exporters: a controllable fake OTLP upstream, spans, subprocesses.

``FakeUpstream`` serves OTLP/gRPC and OTLP/HTTP on free 127.0.0.1 ports, records every request,
and fails on command: ``fail("unavailable")``, ``fail("resource_exhausted", retry_after=2)``,
``fail("503")``, ``fail("429", retry_after=3)``, ``fail("400")``..., for ``times`` requests or
until ``ok()``.
"""

from __future__ import annotations

import gzip
import random
import signal
import subprocess
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.conftest import REPO, collector_cmd, free_port, http_get, metric_value

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# kind -> (gRPC code or None, HTTP status or None)
_FAILURES = {
    "unavailable": (grpc.StatusCode.UNAVAILABLE, 503),
    "resource_exhausted": (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    "invalid_argument": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "503": (grpc.StatusCode.UNAVAILABLE, 503),
    "502": (grpc.StatusCode.UNAVAILABLE, 502),
    "504": (grpc.StatusCode.UNAVAILABLE, 504),
    "429": (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    "400": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "401": (grpc.StatusCode.UNAUTHENTICATED, 401),
}


class FakeUpstream:
    def __init__(self, tls: tuple[bytes, bytes] | None = None, client_ca: bytes | None = None) -> None:
        """``tls``: (certificate PEM, key PEM) to serve both protocols over TLS; ``client_ca``: require
        client certificates signed by it (mutual TLS)."""
        self.lock = threading.Lock()
        self.requests: list[ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.span_ids: list[bytes] = []
        self.attempts = 0
        self._failure: tuple[str, float | None] | None = None
        self._times: int | None = None
        self.partial_reject = 0
        self.received: dict[str, list[bytes]] = {"logs": [], "metrics": []}  # raw requests of other signals
        self.grpc_port = free_port()
        self.http_port = 0
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        handler = grpc.unary_unary_rpc_method_handler(self._grpc_export)
        self._grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}),) + tuple(
            grpc.method_handlers_generic_handler(f"opentelemetry.proto.collector.{sig}.v1.{service}", {
                "Export": grpc.unary_unary_rpc_method_handler(
                    lambda body, context, sig=sig: self._record_signal(sig, body))})
            for sig, service in (("logs", "LogsService"), ("metrics", "MetricsService"))))
        if tls:
            creds = grpc.ssl_server_credentials([(tls[1], tls[0])], root_certificates=client_ca,
                                                require_client_auth=client_ca is not None)
            self._grpc.add_secure_port(f"127.0.0.1:{self.grpc_port}", creds)
        else:
            self._grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        self._grpc.start()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                signal = self.path.rsplit("/", 1)[-1]
                if signal in outer.received:
                    code, payload, extra = 200, outer._record_signal(signal, body), {}
                else:
                    code, payload, extra = outer._http_export(body, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.scheme = "http"
        if tls:
            self.scheme = "https"
            self._httpd.socket = _tls_context(*tls, client_ca).wrap_socket(self._httpd.socket, server_side=True)
        self.http_port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    # -- control ----------------------------------------------------------------------------------

    def fail(self, kind: str, retry_after: float | None = None, times: int | None = None) -> None:
        assert kind in _FAILURES, kind
        with self.lock:
            self._failure, self._times = (kind, retry_after), times

    def ok(self) -> None:
        with self.lock:
            self._failure, self._times = None, None

    def _next_failure(self) -> tuple[str, float | None] | None:
        with self.lock:
            self.attempts += 1
            failure = self._failure
            if failure is not None and self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._failure, self._times = None, None
            return failure

    def _record(self, body: bytes, headers: dict[str, str]) -> bytes:
        request = ExportTraceServiceRequest.FromString(body)
        ids = [s.span_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        response = ExportTraceServiceResponse()
        if self.partial_reject:
            response.partial_success.rejected_spans = min(self.partial_reject, len(ids))
            response.partial_success.error_message = "some spans were not to our liking"
        with self.lock:
            self.requests.append(request)
            self.raw.append(body)
            self.headers.append(headers)
            self.span_ids.extend(ids)
        return response.SerializeToString()

    def _record_signal(self, signal: str, body: bytes) -> bytes:
        """A logs or metrics request: kept as received, answered with an empty (full success) response."""
        with self.lock:
            self.received[signal].append(body)
        return b""

    def _grpc_export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        failure = self._next_failure()
        if failure is not None:
            kind, retry_after = failure
            code = _FAILURES[kind][0]
            if retry_after is not None:
                info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
                    seconds=int(retry_after), nanos=int(retry_after % 1 * 1e9)))
                status = status_pb2.Status(code=code.value[0], message=f"fake {kind}")
                status.details.add().Pack(info)
                context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
            context.abort(code, f"fake {kind}")
        return self._record(body, dict(context.invocation_metadata()))

    def _http_export(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict]:
        failure = self._next_failure()
        if failure is not None:
            kind, retry_after = failure
            code = _FAILURES[kind][1]
            extra = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=f"fake {kind}")
            return code, status.SerializeToString(), extra
        return 200, self._record(body, headers), {}

    def wait_for_spans(self, want: set[bytes], timeout: float) -> set[bytes]:
        """Wait until every id in ``want`` arrived; returns the missing ones."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                missing = want - set(self.span_ids)
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)

    def close(self) -> None:
        self._grpc.stop(0)
        self._httpd.shutdown()
        self._httpd.server_close()


def _tls_context(cert: bytes, key: bytes, client_ca: bytes | None):
    import ssl
    import tempfile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.decode())
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "c.pem").write_bytes(cert)
        Path(tmp, "k.pem").write_bytes(key)
        ctx.load_cert_chain(Path(tmp, "c.pem"), Path(tmp, "k.pem"))
    return ctx


def self_signed(host: str = "localhost") -> tuple[bytes, bytes]:
    """A certificate for ``host`` (and 127.0.0.1) and its key, PEM; it is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


# -- spans ------------------------------------------------------------------------------------


def make_request(n: int, service: str = "app", name: str = "chat gpt-4o") -> tuple[ExportTraceServiceRequest, set[bytes]]:
    """A request of ``n`` GenAI-looking spans with fresh random ids; returns it and the span ids."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    trace_id = random.randbytes(16)
    ids = set()
    now = time.time_ns()
    for _ in range(n):
        span = ss.spans.add()
        span.trace_id = trace_id
        span.span_id = random.randbytes(8)
        ids.add(span.span_id)
        span.name = name
        span.kind = trace_pb2.Span.SPAN_KIND_CLIENT
        span.start_time_unix_nano = now
        span.end_time_unix_nano = now + 1_000_000
        span.attributes.append(KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o")))
        span.attributes.append(KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=100)))
        span.attributes.append(KeyValue(key="payload", value=AnyValue(string_value="x" * 200)))
    return request, ids


class OtlpClient:
    """A raw gRPC OTLP client that keeps retrying a request until it is acknowledged."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.call = self.channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        self.refusals = 0

    def send(self, request: ExportTraceServiceRequest, timeout: float = 5.0) -> grpc.StatusCode:
        """One attempt: OK or the error code."""
        try:
            self.call(request.SerializeToString(), timeout=timeout)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()

    def send_until_acked(self, request: ExportTraceServiceRequest, deadline: float) -> None:
        while True:
            code = self.send(request)
            if code == grpc.StatusCode.OK:
                return
            self.refusals += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"request never acknowledged (last: {code})")
            time.sleep(0.2)

    def close(self) -> None:
        self.channel.close()


# -- collector subprocesses -------------------------------------------------------------------


class Collector:
    """``python -m collector run --config`` in a subprocess, with its ports."""

    def __init__(self, tmp: Path, name: str, exporters_yaml: str, exporter_ids: list[str],
                 processors_yaml: str = "", processor_ids: list[str] | None = None,
                 grpc_port: int | None = None, http_port: int | None = None) -> None:
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = free_port()
        self.config = tmp / f"{name}.yaml"
        self.log = tmp / f"{name}.log"
        procs = processor_ids or []
        self.config.write_text(f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{self.grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{self.http_port}"}}
processors:
{processors_yaml or "  {}"}
exporters:
{exporters_yaml}
service:
  shutdown_timeout: 10s
  telemetry:
    metrics: {{address: "127.0.0.1:{self.metrics_port}"}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{", ".join(procs)}]
      exporters: [{", ".join(exporter_ids)}]
""")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "Collector":
        """Start (or start again: same config, ports and queue directories) and wait until ready."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(collector_cmd("run", "--config", str(self.config)), cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if http_get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"collector did not become ready:\n{self.log.read_text()}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the series of ``name`` whose labels include ``labels``."""
        return metric_value(http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[1], name, **labels)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
