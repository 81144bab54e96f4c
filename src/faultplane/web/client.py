"""The dashboard's side of the operator API: one loopback channel, each call made with
the session's own credentials, and gRPC's answer turned into an HTTP one.

Going through the API (not around it) is the point: the gate authenticates the user,
checks the role table, refuses and audits exactly as it does for the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from faultplane.v1 import faultplane_pb2_grpc
from faultplane.web.sessions import Session

Metadata = Sequence[tuple[str, str]]
CALL_TIMEOUT = 30.0  # seconds; an abort waits for every target's answer
# gRPC's answer -> the HTTP status the browser gets, with the API's own message.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class ApiRefused(Exception):
    """The API refused or failed a call: `status` for HTTP, `code` and `message` as gRPC
    said them (the message names the field or the role, as the CLI would show it)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.status = HTTP_STATUS.get(code, 502)


class ApiClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(address)
        self.stub = faultplane_pb2_grpc.FaultServiceStub(self._channel)

    async def call(self, method: str, request: Message, session: Session | None) -> Any:
        """`method` (FaultService's name for it) as the session's user; raises ApiRefused."""
        return await self.call_as(method, request, session.metadata() if session else ())

    async def call_as(self, method: str, request: Message, metadata: Metadata) -> Any:
        """`method` with these credentials (a token that is not a session's yet, logging
        in); raises ApiRefused."""
        try:
            return await getattr(self.stub, method)(
                request, metadata=tuple(metadata), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise ApiRefused(exc.code(), exc.details() or "") from None

    def watch(self, request: Message, session: Session) -> Any:
        """WatchInjections as the session's user: a stream call, cancelled by the caller."""
        return self.stub.WatchInjections(request, metadata=session.metadata())

    async def close(self) -> None:
        await self._channel.close()
