"""Where the extension's calls go, and what a failed call tells the experiment's author.

The address and token come from the experiment, defaulting like the CLI does
(`faultplane.cli.connection`): `configuration.faultplane_api`, else $FAULTPLANE_API, else
127.0.0.1:18001; the bearer token from the secret `faultplane_token`, else
$FAULTPLANE_TOKEN; TLS when `configuration.faultplane_ca` is set (with `faultplane_cert`
and `faultplane_key` for mutual TLS). Each activity opens its own channel and closes it:
Chaos Toolkit runs activities minutes apart, in threads of its own, and a channel kept
between them would outlive the control server it was opened to.

Every failure becomes chaoslib's ActivityFailed carrying the API's own message (the
field and the reason), and, when the address is the problem, which address it was and
which configuration key sets it: gRPC's "failed to connect to all addresses" does not.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from chaoslib.exceptions import ActivityFailed

from faultplane.cli.connection import DEFAULT_API, fault_stub, open_channel
from faultplane.v1 import faultplane_pb2_grpc

API_KEY = "faultplane_api"
TOKEN_KEY = "faultplane_token"
TLS_KEYS = {"ca": "faultplane_ca", "cert": "faultplane_cert", "key": "faultplane_key"}
# host:port, [v6]:port, or a gRPC target with a scheme (dns:///host:port, unix:path).
_ADDRESS = re.compile(r"^(?:[a-z][a-z0-9+.-]*:.+|(?:\[[0-9a-fA-F:.]+\]|[^\s:/]+):\d{1,5})$")

T = TypeVar("T")
Stub = faultplane_pb2_grpc.FaultServiceStub


@dataclass(frozen=True)
class Connection:
    """One control plane, as an experiment names it; `source` says where the address
    came from, in the words the author would use to change it."""

    address: str
    source: str
    token: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def connection_from(
    configuration: Mapping[str, Any] | None, secrets: Mapping[str, Any] | None
) -> Connection:
    """The connection an activity's configuration and secrets describe; a malformed
    address is refused here, before any call, naming the key it came from."""
    configuration = configuration or {}
    if configuration.get(API_KEY):
        address, source = str(configuration[API_KEY]), f"configuration {API_KEY}"
    elif os.environ.get("FAULTPLANE_API"):
        address, source = os.environ["FAULTPLANE_API"], "$FAULTPLANE_API"
    else:
        address, source = DEFAULT_API, f"the default; neither {API_KEY} nor $FAULTPLANE_API set"
    if not _ADDRESS.match(address):
        raise ActivityFailed(
            f"{API_KEY}: {address!r} ({source}) is not an address: give host:port of "
            "`faultplane serve`'s operator API, e.g. 127.0.0.1:18001"
        )
    tls = {name: _text(configuration.get(key)) for name, key in TLS_KEYS.items()}
    return Connection(address, source, token=_secret_token(secrets), **tls)


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _secret_token(secrets: Mapping[str, Any] | None) -> str | None:
    """The token from the secrets an activity was given (flat), or from any secrets scope
    (a control gets the experiment's whole `secrets`, scoped), else $FAULTPLANE_TOKEN."""
    secrets = secrets or {}
    if secrets.get(TOKEN_KEY):
        return str(secrets[TOKEN_KEY])
    for scope in secrets.values():
        if isinstance(scope, Mapping) and scope.get(TOKEN_KEY):
            return str(scope[TOKEN_KEY])
    return os.environ.get("FAULTPLANE_TOKEN") or None


@contextmanager
def _stub(connection: Connection) -> Iterator[Stub]:
    args = argparse.Namespace(
        api=connection.address,
        token=connection.token,
        ca=connection.ca,
        cert=connection.cert,
        key=connection.key,
    )
    with open_channel(args) as channel:
        yield fault_stub(channel)


def call(connection: Connection, work: Callable[[Stub], T]) -> T:
    """`work(stub)` on a channel of its own; a gRPC error becomes ActivityFailed."""
    try:
        with _stub(connection) as stub:
            return work(stub)
    except grpc.RpcError as exc:
        raise ActivityFailed(error_message(exc, connection)) from None


def error_message(exc: grpc.RpcError, connection: Connection) -> str:
    """`CODE: the API's message`, and for an unreachable or wrong address, which address
    it was and which configuration key sets it."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or ""  # type: ignore[attr-defined]
    where = f"{connection.address} ({connection.source})"
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"UNAVAILABLE: cannot reach the faultplane API at {where}: {details}; "
            f"set {API_KEY} in the experiment's configuration (or $FAULTPLANE_API) to "
            "`faultplane serve`'s operator API"
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return (
            f"UNIMPLEMENTED: {where} answers gRPC but is not the faultplane API "
            f"({details}); check {API_KEY}"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (
            f"UNAUTHENTICATED: {details} (the token comes from the secret {TOKEN_KEY} "
            "or $FAULTPLANE_TOKEN; `faultplane token create` issues one)"
        )
    return f"{code.name}: {details}"
