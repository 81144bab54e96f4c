"""TLS credentials for the operator API (server) and the CLI (client).

gRPC reports a bad PEM file or a key that does not match its certificate late and
vaguely (at bind or at the first handshake), so the files are read and checked here,
with errors naming the flag and the path. The stdlib `ssl` module does the checking:
it parses PEM and verifies the key/certificate pair without a new dependency.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import grpc

StrPath = str | os.PathLike[str]


class TLSConfigError(ValueError):
    """A TLS file is missing, unreadable, not PEM, encrypted, or does not match."""


def server_credentials(
    cert: StrPath, key: StrPath, client_ca: StrPath | None = None
) -> grpc.ServerCredentials:
    """Credentials for `server.add_secure_port`.

    With `client_ca` the server requires a client certificate signed by it (mutual
    TLS), which is what makes the certificate subject usable as the principal; without
    it, clients authenticate with bearer tokens over server-authenticated TLS.
    """
    cert_pem, key_pem = _load_pair(cert, key, "--tls-cert", "--tls-key", server=True)
    ca_pem = None if client_ca is None else _load_ca(client_ca, "--client-ca")
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=ca_pem,
        require_client_auth=ca_pem is not None,
    )


def channel_credentials(
    ca: StrPath | None = None, cert: StrPath | None = None, key: StrPath | None = None
) -> grpc.ChannelCredentials:
    """Credentials for the CLI's `grpc.aio.secure_channel`.

    `ca` verifies the server (default: the system roots); `cert` and `key` (together)
    present a client certificate for mutual TLS.
    """
    if (cert is None) != (key is None):
        raise TLSConfigError("--cert and --key must be given together")
    ca_pem = None if ca is None else _load_ca(ca, "--ca")
    cert_pem = key_pem = None
    if cert is not None and key is not None:
        cert_pem, key_pem = _load_pair(cert, key, "--cert", "--key", server=False)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def _read(path: StrPath, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None


def _load_ca(path: StrPath, flag: str) -> bytes:
    pem = _read(path, flag)
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise TLSConfigError(f"{flag} {path}: no PEM certificate in the file")
    try:
        ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(f"{flag} {path}: not a usable CA bundle: {exc}") from None
    return pem


def _load_pair(
    cert: StrPath, key: StrPath, cert_flag: str, key_flag: str, *, server: bool
) -> tuple[bytes, bytes]:
    cert_pem, key_pem = _read(cert, cert_flag), _read(key, key_flag)
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise TLSConfigError(f"{cert_flag} {cert}: no PEM certificate in the file")
    if b"PRIVATE KEY-----" not in key_pem:
        raise TLSConfigError(f"{key_flag} {key}: no PEM private key in the file")
    if b"ENCRYPTED" in key_pem:
        raise TLSConfigError(f"{key_flag} {key}: the key is encrypted; gRPC needs it unencrypted")
    try:
        protocol = ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT
        ssl.SSLContext(protocol).load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(
            f"{cert_flag} {cert} / {key_flag} {key}: not a matching certificate and key: {exc}"
        ) from None
    return cert_pem, key_pem


def _no_password() -> str:
    """Never let OpenSSL prompt on the terminal for a key password."""
    raise ssl.SSLError("the key is encrypted; gRPC needs it unencrypted")
