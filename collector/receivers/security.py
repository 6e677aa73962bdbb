"""Receiver-side TLS and bearer-token authentication, shared by the gRPC and HTTP servers.

Config keys mirror the OTel Collector's ``configtls`` (``cert_file``, ``key_file``,
``client_ca_file``, ``min_version``) and its ``bearertokenauth`` extension (a static token or a
token file, ``scheme`` ``Bearer``), but live directly under each protocol as ``tls:`` / ``auth:``.
"""

from __future__ import annotations

import hmac
import os
import ssl
import threading
from dataclasses import dataclass
from typing import Literal

from config.files import read_config_file
from config.schema import ConfigError, setting

__all__ = ["AuthConfig", "TlsConfig", "BearerAuth", "server_ssl_context"]


@dataclass
class TlsConfig:
    cert_file: str = setting(doc="PEM server certificate (chain)")
    key_file: str = setting(doc="PEM private key of cert_file")
    client_ca_file: str = setting("", doc="PEM CA bundle; when set, clients must present a certificate it signed")
    min_version: Literal["1.2", "1.3"] = setting("1.2", doc="oldest TLS version accepted")


@dataclass
class AuthConfig:
    bearer_token: str = setting("", doc="the token clients must send as 'Authorization: Bearer <token>' "
                                  "(gRPC metadata authorization); set this or bearer_token_file")
    bearer_token_file: str = setting("", doc="file with one token per line (any of them is accepted); "
                                             "re-read when it changes, so tokens rotate without a restart")
    scheme: str = setting("Bearer", pattern=r"^\S*$", doc="the scheme word before the token (\"\": the whole header is the token)")

    def validate(self) -> list:
        if bool(self.bearer_token) == bool(self.bearer_token_file):
            return [ConfigError("", "set exactly one of bearer_token, bearer_token_file")]
        return []


class BearerAuth:
    """Checks an ``Authorization`` header value in constant time against the configured tokens."""

    def __init__(self, cfg: AuthConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._tokens: list[bytes] = [cfg.bearer_token.encode()] if cfg.bearer_token else []
        if cfg.bearer_token_file:
            self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        path = self.cfg.bearer_token_file
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            if force:
                read_config_file(path, "auth bearer_token_file")  # raises with the reason
            return  # keep the tokens we have while the file is being replaced
        if mtime == self._mtime and not force:
            return
        tokens = [line.strip() for line in read_config_file(path, "auth bearer_token_file").splitlines() if line.strip()]
        if not tokens and force:
            raise OSError(f"auth bearer_token_file {path!r} holds no token")
        with self._lock:
            self._tokens, self._mtime = tokens or self._tokens, mtime

    def check(self, header: str | None) -> bool:
        if self.cfg.bearer_token_file:
            self._reload()
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if self.cfg.scheme and scheme.lower() != self.cfg.scheme.lower():
            return False
        presented = (token.strip() if self.cfg.scheme else header.strip()).encode()
        ok = False
        for expected in self._tokens:  # no early exit: the time taken does not depend on which matched
            ok |= hmac.compare_digest(presented, expected)
        return ok

    @property
    def challenge(self) -> str:
        return f'{self.cfg.scheme or "Bearer"} realm="otlp"'


def server_ssl_context(cfg: TlsConfig) -> ssl.SSLContext:
    """An SSLContext for a server socket; OSError naming the setting when a file is unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if cfg.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    read_config_file(cfg.cert_file, "tls cert_file")
    read_config_file(cfg.key_file, "tls key_file")
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except ssl.SSLError as exc:
        raise OSError(f"tls cert_file/key_file {cfg.cert_file!r}/{cfg.key_file!r}: {exc.reason or exc}") from None
    if cfg.client_ca_file:
        read_config_file(cfg.client_ca_file, "tls client_ca_file")
        try:
            ctx.load_verify_locations(cfg.client_ca_file)
        except ssl.SSLError as exc:
            raise OSError(f"tls client_ca_file {cfg.client_ca_file!r}: {exc.reason or exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
