"""Every operator call passes one gate: who is calling, may they, and a record of it.

`@rpc` wraps each servicer method: it authenticates the caller (bearer token, mTLS
subject, or local mode), checks the role, runs the method, maps domain errors to gRPC
status codes, and appends one audit entry per call with its outcome, refused calls
included. Methods raise exceptions; nothing below this module calls context.abort.

The audit must not be a way to fill the disk. A refused call is recorded compactly —
method, peer, principal if known, outcome, a clipped reason, and the request's size and
sha256 — never its body: whoever is refused may have sent anything up to the message
limit. An accepted call's request is recorded whole, having passed validation (which
bounds every free-text field); a request still larger than MAX_AUDITED_REQUEST_BYTES
is recorded by size and hash all the same. Refusals are rate limited per caller
(`faultplane.api.ratelimit`): past the limit they are answered RESOURCE_EXHAUSTED with a
retry hint and summarised once per window instead of audited one by one.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message

from faultplane.api.ratelimit import RefusalLimiter, Summary
from faultplane.api.validate import InvalidRequest
from faultplane.auth.principal import Authenticator, Principal, Unauthenticated
from faultplane.auth.roles import PermissionDenied, check_call
from faultplane.lifecycle.admission import Refused
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.scheduler import NotFound
from faultplane.lifecycle.watch import WatchLagged

log = structlog.get_logger("faultplane.api")

# An accepted request larger than this is audited by size and hash, not body. Validation
# keeps every accepted CreateInjection below it (~50 KiB at worst, all of its text fields
# at their limits in 4-byte characters); this is the backstop for fields no validation
# bounds (a ListInjections `service` filter, say).
MAX_AUDITED_REQUEST_BYTES = 64 * 1024
# Refusal reasons can echo what was sent (an unknown id, say): clipped in the audit,
# and in the status message, which travels in a gRPC trailer of bounded size.
MAX_AUDITED_DETAIL = 1024
MAX_STATUS_MESSAGE = 2000
MAX_AUDITED_ID = 128  # injection ids are ~25 characters; a longer "id" was never one
MAX_PEER = 256
# Refusals audited one by one per window (faultplane.api.ratelimit), for anonymous callers
# (per host) and for authenticated principals; past that, RESOURCE_EXHAUSTED.
DEFAULT_PEER_LIMIT = 20
DEFAULT_PRINCIPAL_LIMIT = 100


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


def clip(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def peer_host(peer: str) -> str:
    """The caller's host from a gRPC peer string: 'ipv4:10.0.0.7:51234' -> '10.0.0.7',
    'ipv6:[::1]:51234' -> '::1'. The port is dropped on purpose: every new connection
    has a new one, and a rate limit per port would limit nothing."""
    kind, _, address = peer.partition(":")
    if kind == "ipv4":
        return address.rpartition(":")[0] or address
    if kind == "ipv6":
        return address.rpartition(":")[0].strip("[]") or address
    return clip(peer, MAX_PEER)


def request_digest(request: Message) -> dict[str, Any]:
    """The request's size in bytes and the sha256 of its (deterministic) wire form:
    enough to tell two requests apart, or to match one a client kept, without storing
    it."""
    wire = request.SerializeToString(deterministic=True)
    return {"request_bytes": len(wire), "request_sha256": hashlib.sha256(wire).hexdigest()}


class Gate:
    def __init__(
        self,
        authenticator: Authenticator,
        journal: Journal,
        peers: RefusalLimiter | None = None,
        principals: RefusalLimiter | None = None,
    ) -> None:
        """`peers` limits the refusals of callers who did not authenticate, per host;
        `principals` those of authenticated principals, per principal: a higher limit by
        default, since they are accountable (their token can be revoked) and their
        refusals are mostly races and mistakes (fifty concurrent creates of which one
        wins), while anonymous refusals are the flood anyone can send."""
        self.authenticator = authenticator
        self._journal = journal
        self.peers = peers if peers is not None else RefusalLimiter(DEFAULT_PEER_LIMIT)
        self.principals = (
            principals if principals is not None else RefusalLimiter(DEFAULT_PRINCIPAL_LIMIT)
        )

    async def admit(
        self, method: str, request: Message, context: grpc.aio.ServicerContext
    ) -> Principal:
        """The caller, authenticated and allowed to call `method`; otherwise the refusal
        is audited and answered (`refuse` ends the call)."""
        await self.write_summaries()
        principal: Principal | None = None
        try:
            principal = await self.authenticate(context)
            check_call(principal.role, method)
        except (Unauthenticated, PermissionDenied) as exc:
            error = _status(exc)
            assert error is not None
            who = getattr(exc, "principal", None) or ""
            await self.refuse(method, request, context, principal, error, refused_as=who)
        assert principal is not None
        return principal

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
        injection_id: str = "",
        peer: str = "",
    ) -> None:
        """An accepted call: the request whole, unless it is over the backstop."""
        if request.ByteSize() > MAX_AUDITED_REQUEST_BYTES:
            body: dict[str, Any] = request_digest(request)
        else:
            body = {"request": json_format.MessageToDict(request, preserving_proto_field_name=True)}
        await self._journal.audit(
            {
                "kind": "call",
                "at": time.time(),
                "method": method,
                "principal": principal.name if principal else "unknown",
                "via": principal.via if principal else "",
                "peer": peer,
                **body,
                "outcome": outcome,
                "detail": "",
                "injection_id": injection_id or _short_id(request),
            }
        )

    async def refuse(
        self,
        method: str,
        request: Message,
        context: grpc.aio.ServicerContext,
        principal: Principal | None,
        error: ApiError,
        refused_as: str = "",
    ) -> NoReturn:
        """Answer a refused call: audited compactly, or — past the caller's limit —
        RESOURCE_EXHAUSTED with a retry hint, counted for the window's summary."""
        peer = peer_host(context.peer() or "")
        if principal is not None and principal.via != "local":
            limiter, caller = self.principals, f"principal {principal.name}"
        else:  # local mode's one principal is everyone: tell callers apart by host
            limiter, caller = self.peers, f"peer {peer}"
        now = time.monotonic()
        decision = limiter.refuse(caller, method, now)
        await self.write_summaries(now)
        message = clip(error.message, MAX_STATUS_MESSAGE)
        if decision.limited:
            seconds = decision.retry_after_seconds
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many refused calls from {caller} ({limiter.limit} within "
                f"{limiter.window:g} s): retry after {seconds}s "
                f"(this call: {error.code.name}: {clip(message, 200)})",
                trailing_metadata=(("retry-after", str(seconds)),),
            )
        await self._journal.audit(
            {
                "kind": "call",
                "at": time.time(),
                "method": method,
                "principal": principal.name
                if principal
                else clip(refused_as, MAX_PEER) or "unknown",
                "via": principal.via if principal else "",
                "peer": peer,
                **request_digest(request),
                "outcome": error.code.name,
                "detail": clip(error.message, MAX_AUDITED_DETAIL),
                "injection_id": _short_id(request),
            }
        )
        await context.abort(error.code, message)

    async def write_summaries(self, now: float | None = None, *, flush: bool = False) -> None:
        """Audit one entry per closed rate-limit window (cheap when none closed); with
        `flush`, close every open window first (shutdown). A summary the store cannot
        take is logged instead: the call that happened to close the window (an abort,
        say) must not fail for it."""
        now = time.monotonic() if now is None else now
        for limiter in (self.peers, self.principals):
            for summary in limiter.flush(now) if flush else limiter.due(now):
                try:
                    await self._journal.audit(self._summary_entry(limiter, summary, now))
                except Exception as exc:
                    log.error("rate-limit summary not audited", caller=summary.caller,
                              suppressed=summary.suppressed, error=str(exc))  # fmt: skip

    async def close(self) -> None:
        """At shutdown: summarise every open window, so no suppression goes unrecorded."""
        await self.write_summaries(flush=True)

    def _summary_entry(
        self, limiter: RefusalLimiter, summary: Summary, now: float
    ) -> dict[str, Any]:
        wall = time.time()
        kind, _, name = summary.caller.partition(" ")
        return {
            "kind": "rate_limit",
            "at": wall,
            "caller": summary.caller,
            "principal": name if kind == "principal" else "unknown",
            "peer": name if kind == "peer" else "",
            "outcome": "RESOURCE_EXHAUSTED",
            "window_start": wall - (now - summary.started),
            "window_seconds": round(summary.ended - summary.started, 3),
            "refused": summary.refused,
            "suppressed": summary.suppressed,
            "methods": summary.methods,
            "detail": (
                f"{summary.suppressed} refused calls from {summary.caller} answered "
                f"RESOURCE_EXHAUSTED and not audited one by one (limit {limiter.limit} "
                f"per {limiter.window:g} s)"
            ),
            "injection_id": "",
        }


def _short_id(request: Message) -> str:
    injection_id = getattr(request, "id", "") or ""
    return injection_id if len(injection_id) <= MAX_AUDITED_ID else ""


Handler = Callable[[Any, Any, grpc.aio.ServicerContext, Principal], Awaitable[Any]]


def rpc(handler: Handler) -> Callable[..., Awaitable[Any]]:
    """A unary method behind the gate: authenticated, authorised, audited. The gRPC
    method is the handler's name."""
    method = handler.__name__

    @functools.wraps(handler)
    async def call(self: Any, request: Message, context: grpc.aio.ServicerContext) -> Any:
        gate: Gate = self.gate
        principal = await gate.admit(method, request, context)
        try:
            reply = await handler(self, request, context, principal)
        except Exception as exc:
            error = _status(exc)
            if error is None:
                raise
            who = getattr(exc, "principal", None) or ""
            await gate.refuse(method, request, context, principal, error, refused_as=who)
        injection_id = getattr(reply, "id", "") if method == "CreateInjection" else ""
        peer = peer_host(context.peer() or "")
        await gate.record(method, request, principal, "OK", injection_id, peer)
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
        principal = await gate.admit(method, request, context)
        await gate.record(method, request, principal, "OK", peer=peer_host(context.peer() or ""))
        try:
            async for item in handler(self, request, context, principal):
                yield item
        except Exception as exc:
            error = _status(exc)
            if error is None:
                raise
            await context.abort(error.code, clip(error.message, MAX_STATUS_MESSAGE))

    return call
