"""``otlp`` exporter: forward traces, logs and metrics to an upstream over OTLP/gRPC (another collector...).

Config, queue and retries are shared with ``otlphttp`` (see :mod:`exporters.otlp_common`).  What
is gRPC-specific is the endpoint and how a status maps to a decision, following the OTLP spec:
``UNAVAILABLE``, ``CANCELLED``, ``DEADLINE_EXCEEDED``, ``ABORTED``, ``OUT_OF_RANGE`` and
``DATA_LOSS`` are retried; ``RESOURCE_EXHAUSTED`` is retried when the server sends a ``RetryInfo``
(honouring its delay; without one it means "too large", which retrying cannot fix); every other
status is permanent.  The request is sent as the raw encoded bytes the queue holds, so nothing is
decoded or re-encoded between the queue and the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from collector import __version__
from collector.component import ALL_SIGNALS, ComponentContext, Factory, PermanentError, RetryableError
from collector.otlp import OTLP_SIGNALS
from config.schema import ConfigError
from exporters.otlp_common import UpstreamConfig, UpstreamExporter, read_tls_file

__all__ = ["OtlpExporterConfig", "GrpcSender", "retry_delay_from"]

RETRYABLE = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})


@dataclass
class OtlpExporterConfig(UpstreamConfig):
    """``endpoint`` is ``host:port``; an ``https://`` / ``http://`` prefix chooses TLS / plaintext."""

    def validate(self) -> list:
        problems = self.header_problems()
        if not self.endpoint.strip():
            problems.append(ConfigError("endpoint", "required (host:port of the upstream OTLP/gRPC server)"))
        return problems


def grpc_target(endpoint: str, insecure: bool) -> tuple[str, bool]:
    """(target, use TLS) from an endpoint as the Collector accepts it."""
    for scheme, tls in (("https://", True), ("http://", False)):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme):].rstrip("/"), tls
    return endpoint, not insecure


def retry_delay_from(err: grpc.RpcError) -> float | None:
    """The delay in a ``google.rpc.RetryInfo`` detail of the error status, if the server sent one."""
    for key, value in (err.trailing_metadata() or ()):
        if key != "grpc-status-details-bin":
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # noqa: BLE001 - a malformed detail is just no hint
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class GrpcSender:
    def __init__(self, cfg: OtlpExporterConfig) -> None:
        target, use_tls = grpc_target(cfg.endpoint, cfg.tls.insecure)
        self.endpoint = cfg.endpoint
        self.timeout = cfg.timeout
        self.metadata = tuple((k.lower(), v) for k, v in cfg.headers.items())
        self.compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
        # Reconnect soon after an outage: gRPC's default backoff grows to 120 s, which would keep
        # the queue waiting long after the upstream is back.
        reconnect_ms = int(min(cfg.retry_on_failure.max_interval, 5.0) * 1000)
        options = [
            ("grpc.primary_user_agent", f"genai-collector/{__version__}"),
            ("grpc.enable_retries", 0),  # retries are ours, with the configured policy
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 16 << 20),
            ("grpc.initial_reconnect_backoff_ms", min(1000, reconnect_ms)),
            ("grpc.min_reconnect_backoff_ms", min(1000, reconnect_ms)),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms),
        ]
        if use_tls:
            t = cfg.tls
            creds = grpc.ssl_channel_credentials(
                root_certificates=read_tls_file(t.ca_file, "ca_file") if t.ca_file else None,
                private_key=read_tls_file(t.key_file, "key_file") if t.key_file else None,
                certificate_chain=read_tls_file(t.cert_file, "cert_file") if t.cert_file else None)
            self.channel = grpc.secure_channel(target, creds, options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self._calls = {
            name: self.channel.unary_unary(f"/{sig.grpc_service}/Export", request_serializer=None,
                                           response_deserializer=sig.response_class.FromString)
            for name, sig in OTLP_SIGNALS.items()}

    def send(self, signal: str, payload: bytes):
        try:
            return self._calls[signal](payload, timeout=self.timeout, metadata=self.metadata,
                                       compression=self.compression)
        except grpc.RpcError as err:
            raise self._classify(err) from None

    @staticmethod
    def _classify(err: grpc.RpcError) -> Exception:
        code = err.code()
        text = f"{code.name}: {err.details()}"
        if code in RETRYABLE:
            return RetryableError(text, retry_after=retry_delay_from(err))
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            delay = retry_delay_from(err)
            if delay is not None:
                return RetryableError(text, retry_after=delay)
        return PermanentError(text)

    def close(self) -> None:
        self.channel.close()


def create(cfg: OtlpExporterConfig, ctx: ComponentContext) -> UpstreamExporter:
    return UpstreamExporter(cfg, ctx, GrpcSender(cfg))


FACTORY = Factory("otlp", OtlpExporterConfig, create, signals=ALL_SIGNALS,
                  doc="OTLP/gRPC to an upstream collector or backend, with retries and a sending queue",
                  example="""\
endpoint: otel-collector.internal:4317
tls: {insecure: true}
sending_queue:
  storage: {directory: /var/lib/genai-collector/otlp-queue}
""")
