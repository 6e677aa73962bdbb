"""Bearer-token auth and TLS / mTLS on both protocols, and clear startup errors."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import ssl
import subprocess
import sys
import time

import grpc
import pytest

from tests.receiver_helpers import (ROOT, InProcessCollector, collector_yaml, free_port, make_request, span_keys,
                                    stored_spans)
from tests.test_receiver_protocol import EXPORT


def _cert(subject: str, issuer_key=None, issuer_name=None, ca: bool = False, server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(path, key, cert) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    key_path, cert_path = f"{path}.key", f"{path}.crt"
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _cert("test-ca", ca=True)
    srv_key, srv_cert = _cert("localhost", ca_key, ca_cert.subject, server=True)
    cli_key, cli_cert = _cert("client", ca_key, ca_cert.subject)
    paths = {"dir": str(d)}
    paths["ca_key"], paths["ca"] = _write(d / "ca", ca_key, ca_cert)
    paths["server_key"], paths["server"] = _write(d / "server", srv_key, srv_cert)
    paths["client_key"], paths["client"] = _write(d / "client", cli_key, cli_cert)
    return paths


@pytest.fixture(scope="module")
def secured(tmp_path_factory, pki):
    """gRPC: TLS + static token.  HTTP: mTLS + token file."""
    tmp = str(tmp_path_factory.mktemp("secured"))
    token_file = f"{tmp}/tokens"
    with open(token_file, "w") as f:
        f.write("file-token-1\n")
    g, h = free_port(), free_port()
    grpc_extra = f"""        tls: {{cert_file: {pki['server']}, key_file: {pki['server_key']}}}
        auth: {{bearer_token: s3cret}}"""
    http_extra = f"""        tls: {{cert_file: {pki['server']}, key_file: {pki['server_key']}, client_ca_file: {pki['ca']}}}
        auth: {{bearer_token_file: {token_file}}}"""
    c = InProcessCollector(collector_yaml(tmp, g, h, grpc_extra, http_extra))
    c.grpc_port, c.http_port, c.db, c.token_file = g, h, f"{tmp}/spans.sqlite", token_file
    yield c
    c.stop()


def _grpc_call(c, pki, token: str | None, seed: int):
    with open(pki["ca"], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    req = make_request(1, seed)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    with grpc.secure_channel(f"localhost:{c.grpc_port}", creds) as channel:
        try:
            channel.unary_unary(EXPORT).with_call(req.SerializeToString(), metadata=metadata, timeout=10)
            return grpc.StatusCode.OK, req
        except grpc.RpcError as err:
            return err.code(), req


def _https(c, pki, token: str | None, seed: int, client_cert: bool = True):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if client_cert:
        ctx.load_cert_chain(pki["client"], pki["client_key"])
    conn = http.client.HTTPSConnection("localhost", c.http_port, context=ctx, timeout=10)
    req = make_request(1, seed)
    headers = {"Content-Type": "application/x-protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/v1/traces", body=req.SerializeToString(), headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), req
    finally:
        conn.close()


def test_grpc_tls_with_the_right_token_is_accepted_and_a_wrong_or_missing_one_is_unauthenticated(secured, pki):
    assert _grpc_call(secured, pki, "wrong", 1)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_call(secured, pki, None, 2)[0] == grpc.StatusCode.UNAUTHENTICATED
    code, req = _grpc_call(secured, pki, "s3cret", 3)
    assert code == grpc.StatusCode.OK
    assert span_keys(req) <= set(stored_spans(secured.db))


def test_grpc_plaintext_client_cannot_talk_to_a_tls_port(secured):
    with grpc.insecure_channel(f"127.0.0.1:{secured.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(EXPORT)(b"", timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_sdk_grpc_exporter_with_tls_and_token_headers(secured, pki):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with open(pki["ca"], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"localhost:{secured.grpc_port}", credentials=creds, headers={"authorization": "Bearer s3cret"})))
    with provider.get_tracer("t").start_as_current_span("secure") as span:
        ctx = span.get_span_context()
    provider.shutdown()
    assert (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") in stored_spans(secured.db)


def test_http_mtls_token_is_checked_with_401_and_www_authenticate(secured, pki):
    status, headers, _ = _https(secured, pki, "nope", 10)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, headers, _ = _https(secured, pki, None, 11)
    assert status == 401
    status, _, req = _https(secured, pki, "file-token-1", 12)
    assert status == 200
    assert span_keys(req) <= set(stored_spans(secured.db))


def test_http_mtls_refuses_a_client_without_certificate_and_keeps_serving(secured, pki):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _https(secured, pki, "file-token-1", 20, client_cert=False)
    assert _https(secured, pki, "file-token-1", 21)[0] == 200


def test_token_file_rotation_takes_effect_without_restart(secured, pki):
    time.sleep(0.01)
    with open(secured.token_file, "w") as f:
        f.write("file-token-2\nfile-token-3\n")
    os.utime(secured.token_file, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert _https(secured, pki, "file-token-1", 30)[0] == 401
    assert _https(secured, pki, "file-token-3", 31)[0] == 200


def test_auth_config_needs_exactly_one_token_source():
    from collector.receivers.security import AuthConfig
    from config.schema import build

    assert build(AuthConfig, {})[1]
    assert build(AuthConfig, {"bearer_token": "a", "bearer_token_file": "/x"})[1]
    assert not build(AuthConfig, {"bearer_token": "a"})[1]


# -- startup errors -----------------------------------------------------------------------------


def _run_cli(tmp_path, yaml_text: str):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    return subprocess.run([sys.executable, "-m", "tests.receiver_helpers", "run", "--config", str(cfg)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_missing_certificate_is_one_clear_line_and_exit_1(tmp_path, pki):
    extra = f"        tls: {{cert_file: {tmp_path}/missing.crt, key_file: {pki['server_key']}}}"
    result = _run_cli(tmp_path, collector_yaml(str(tmp_path), free_port(), free_port(), grpc_extra=extra))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cert_file" in errors[0] and "missing.crt" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_line_and_exit_1(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_cli(tmp_path, collector_yaml(str(tmp_path), free_port(), port))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(port) in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_journal_smaller_than_the_largest_request_is_a_config_error():
    from collector.receivers.otlp import OtlpReceiverConfig
    from config.schema import build

    _, errors = build(OtlpReceiverConfig, {"protocols": {"http": {}}, "storage": {"directory": "/tmp/x",
                                                                                 "max_size": "16MiB"}})
    assert errors and "storage::max_size" in str(errors[0]) and "20971520" in str(errors[0])
    _, errors = build(OtlpReceiverConfig, {"protocols": {"http": {"max_request_body_size": "1MiB"}},
                                           "storage": {"directory": "/tmp/x", "max_size": "16MiB"}})
    assert not errors
