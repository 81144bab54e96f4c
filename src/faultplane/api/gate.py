"""Every operator call passes one gate: who is calling, may they, and a record of it.

`@rpc` wraps each servicer method: it authenticates the caller (bearer token, mTLS
subject, or local mode), checks the role, runs the method, maps domain errors to gRPC
status codes, and appends one audit entry per call with its outcome, refused calls
included. Methods raise exceptions; nothing below this module calls context.abort.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message

from faultplane.api.validate import InvalidRequest
from faultplane.auth.principal import Authenticator, Principal, Unauthenticated
from faultplane.auth.roles import PermissionDenied, check_call
from faultplane.scheduler.journal import Journal
from faultplane.scheduler.scheduler import NotFound, Refused
from faultplane.scheduler.watch import WatchLagged

log = structlog.get_logger("faultplane.api")


class ApiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _status(exc: Exception) -> ApiError | None:
    if isinstance(exc, ApiError):
        return exc
    for kind, code in (
        (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (Refused, grpc.StatusCode.FAILED_PRECONDITION),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (WatchLagged, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ):
        if isinstance(exc, kind):
            return ApiError(code, str(exc))
    if isinstance(exc, NotFound):
        return ApiError(grpc.StatusCode.NOT_FOUND, f"id: no injection {exc.args[0]!r}")
    return None


class Gate:
    def __init__(self, authenticator: Authenticator, journal: Journal) -> None:
        self.authenticator = authenticator
        self._journal = journal

    async def authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        """The caller; raises Unauthenticated. (Token lookups read the store: off-loop,
        on a reader thread, so they never queue behind the lifecycle's writes.)"""
        return await self._journal.read(
            self.authenticator.authenticate,
            tuple(context.invocation_metadata() or ()),
            context.auth_context(),
        )

    async def record(
        self,
        method: str,
        request: Message,
        principal: Principal | None,
        outcome: str,
        detail: str = "",
        injection_id: str = "",
        refused_as: str = "",
    ) -> None:
        entry = {
            "kind": "call",
            "at": time.time(),
            "method": method,
            "principal": principal.name if principal else refused_as or "unknown",
            "via": principal.via if principal else "",
            "request": json_format.MessageToDict(request, preserving_proto_field_name=True),
            "outcome": outcome,
            "detail": detail,
            "injection_id": injection_id or getattr(request, "id", "") or "",
        }
        await self._journal.audit(entry)


Handler = Callable[[Any, Any, grpc.aio.ServicerContext, Principal], Awaitable[Any]]


def rpc(handler: Handler) -> Callable[..., Awaitable[Any]]:
    """A unary method behind the gate: authenticated, authorised, audited. The gRPC
    method is the handler's name."""
    method = handler.__name__

    @functools.wraps(handler)
    async def call(self: Any, request: Message, context: grpc.aio.ServicerContext) -> Any:
        gate: Gate = self.gate
        principal: Principal | None = None
        try:
            principal = await gate.authenticate(context)
            check_call(principal.role, method)
            reply = await handler(self, request, context, principal)
        except Exception as exc:
            error = _status(exc)
            if error is None:
                raise
            who = getattr(exc, "principal", None) or ""
            await gate.record(method, request, principal, error.code.name, error.message,
                              refused_as=who)  # fmt: skip
            await context.abort(error.code, error.message)
        injection_id = getattr(reply, "id", "") if method == "CreateInjection" else ""
        await gate.record(method, request, principal, "OK", injection_id=injection_id)
        return reply

    return call


StreamHandler = Callable[[Any, Any, grpc.aio.ServicerContext, Principal], AsyncIterator[Any]]


def stream_rpc(handler: StreamHandler) -> Callable[..., AsyncIterator[Any]]:
    """A server-streaming method behind the gate; the audit records the stream's opening."""
    method = handler.__name__

    @functools.wraps(handler)
    async def call(
        self: Any, request: Message, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        gate: Gate = self.gate
        principal: Principal | None = None
        try:
            principal = await gate.authenticate(context)
            check_call(principal.role, method)
        except (Unauthenticated, PermissionDenied) as exc:
            error = _status(exc)
            assert error is not None
            who = getattr(exc, "principal", None) or ""
            await gate.record(method, request, principal, error.code.name, error.message,
                              refused_as=who)  # fmt: skip
            await context.abort(error.code, error.message)
        await gate.record(method, request, principal, "OK")
        try:
            async for item in handler(self, request, context, principal):
                yield item
        except Exception as exc:
            error = _status(exc)
            if error is None:
                raise
            await context.abort(error.code, error.message)

    return call
