"""Operator-side connection: the API address, TLS, and the bearer token.

Address from --api or $FAULTPLANE_API; token from --token or $FAULTPLANE_TOKEN; TLS when
--ca is given (with --cert/--key for mutual TLS).
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


def api_address(explicit: str | None) -> str:
    return explicit or os.environ.get("FAULTPLANE_API") or DEFAULT_API


def fault_stub(channel: grpc.Channel) -> faultplane_pb2_grpc.FaultServiceStub:
    return faultplane_pb2_grpc.FaultServiceStub(channel)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", help="operator API address (default: $FAULTPLANE_API)")
    parser.add_argument("--token", help="bearer token (default: $FAULTPLANE_TOKEN)")
    parser.add_argument("--ca", help="CA certificate: connect with TLS")
    parser.add_argument("--cert", help="client certificate, for mutual TLS")
    parser.add_argument("--key", help="client key, for mutual TLS")


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    address = api_address(args.api)
    if args.ca:
        channel = grpc.secure_channel(address, channel_credentials(args.ca, args.cert, args.key))
    else:
        channel = grpc.insecure_channel(address)
    token = args.token or os.environ.get("FAULTPLANE_TOKEN")
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel


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
