"""Operator-side connection: the API address, TLS, the bearer token, and what a failed
call means to the person who typed the command.

Address from --api or $FAULTPLANE_API; token from --token or $FAULTPLANE_TOKEN; TLS when
--ca is given (with --cert/--key for mutual TLS). gRPC's own words for a wrong address
("failed to connect to all addresses", "Method not found!") do not tell an operator that
the address is the problem, nor which flag sets it: `rpc_error_message` does.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import grpc

from faultplane.auth.tls import channel_credentials
from faultplane.v1 import faultplane_pb2_grpc

DEFAULT_API = "127.0.0.1:18001"
RPC_TIMEOUT = 30.0  # seconds for one unary call
# A dropped connection is retried at most this often: `watch` must find a restarted
# server within seconds, not after gRPC's default backoff has grown to two minutes.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
_WHERE = "point --api or $FAULTPLANE_API at `faultplane serve`'s operator API"


def api_address(explicit: str | None) -> str:
    return explicit or os.environ.get("FAULTPLANE_API") or DEFAULT_API


def api_source(explicit: str | None) -> str:
    """Where the address came from, as the operator would change it."""
    if explicit:
        return "from --api"
    if os.environ.get("FAULTPLANE_API"):
        return "from $FAULTPLANE_API"
    return "the default; neither --api nor $FAULTPLANE_API is set"


def fault_stub(channel: grpc.Channel) -> faultplane_pb2_grpc.FaultServiceStub:
    return faultplane_pb2_grpc.FaultServiceStub(channel)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", help="operator API address (default: $FAULTPLANE_API)")
    parser.add_argument("--token", help="bearer token (default: $FAULTPLANE_TOKEN)")
    parser.add_argument("--ca", help="CA certificate: connect with TLS")
    parser.add_argument("--cert", help="client certificate, for mutual TLS")
    parser.add_argument("--key", help="client key, for mutual TLS")


def _token(args: argparse.Namespace) -> str | None:
    return getattr(args, "token", None) or os.environ.get("FAULTPLANE_TOKEN") or None


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    address = api_address(args.api)
    if args.ca:
        credentials = channel_credentials(args.ca, args.cert, args.key)
        channel = grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
    else:
        channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    token = _token(args)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel


def rpc_error_message(exc: grpc.RpcError, args: argparse.Namespace | None = None) -> str:
    """`faultplane: CODE: details`, and, when the code says the address or the credentials
    are wrong, which address it was and which flag or variable to change: the server
    speaks of headers and methods, the operator types flags."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or ""  # type: ignore[attr-defined]
    message = f"faultplane: {code.name}: "
    explicit = getattr(args, "api", None)
    address = f"{api_address(explicit)} ({api_source(explicit)})"
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            message
            + f"cannot reach the faultplane API at {address}: {_cause(details)}; "
            + (f"is `faultplane serve` running? {_WHERE} (`faultplane mesh up` prints it)")
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return message + (
            f"{address} is not the faultplane API: it answers gRPC but not "
            f"faultplane.v1.FaultService ({details}); {_WHERE}"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return message + f"{details}: the faultplane API at {address} did not answer in time"
    message += details
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if args is not None and _token(args) is None:
            message += (
                " (no token given: pass --token or set $FAULTPLANE_TOKEN; "
                "`faultplane token create` issues one; with mutual TLS, pass --ca, --cert "
                "and --key)"
            )
        else:
            message += (
                " (the token from --token or $FAULTPLANE_TOKEN was refused: revoked, "
                "mistyped, or issued on another server's store)"
            )
    return message


def _cause(details: str) -> str:
    """gRPC's connection error, in words that point at the address."""
    lowered = details.lower()
    if "connection refused" in lowered:
        return "nothing is listening there"
    if "http/2" in lowered or "http1" in lowered or "settings frame" in lowered:
        return "something answers there, but not gRPC (an HTTP server?)"
    if "ssl" in lowered or "handshake" in lowered or "tls" in lowered:
        return f"the TLS handshake failed ({details}): --ca is for a server that serves TLS"
    return details or "no answer"


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call (TLS or not)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)
