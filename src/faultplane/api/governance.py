"""The two-person rule, the freeze lever, and the audit log."""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2

from faultplane.api.convert import injection_message, timestamp
from faultplane.api.gate import ApiError, rpc
from faultplane.api.validate import validate_freeze
from faultplane.auth.principal import Principal
from faultplane.auth.roles import PermissionDenied, may_act_on
from faultplane.lifecycle.approval import Freeze
from faultplane.v1 import faultplane_pb2 as pb

if TYPE_CHECKING:
    from faultplane.lifecycle.journal import Journal
    from faultplane.lifecycle.scheduler import Scheduler
    from faultplane.store import AuditEntry, Store

Context = grpc.aio.ServicerContext
# ListAudit pages: page_size defaults to DEFAULT_AUDIT_PAGE and is capped at MAX_AUDIT_PAGE,
# and a page stops short of AUDIT_PAGE_BYTES (plus at most one entry of up to
# MAX_LISTED_ENTRY_BYTES), so it always fits the 4 MiB a gRPC client accepts by default.
DEFAULT_AUDIT_PAGE = 100
MAX_AUDIT_PAGE = 1000
AUDIT_PAGE_BYTES = 2 * 1024 * 1024
# Entries are bounded when written; one larger than this (written before they were: a
# refused call's whole request) is listed as its size and sha256. `audit verify` still
# checks it in full.
MAX_LISTED_ENTRY_BYTES = 256 * 1024


class GovernanceMethods:
    scheduler: Scheduler
    store: Store
    journal: Journal

    @rpc
    async def ApproveInjection(
        self, request: pb.ApproveInjectionRequest, context: Context, principal: Principal
    ) -> pb.Injection:
        if not request.id:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "id: required")
        injection = await self.scheduler.find(request.id)
        if not may_act_on(principal.name, principal.role, injection.owner, "ApproveInjection"):
            raise PermissionDenied(
                f"{principal.name} may not approve {injection.id}: it is their own injection"
            )
        return injection_message(self.scheduler.approve(injection.id, principal.name))

    @rpc
    async def Freeze(
        self, request: pb.FreezeRequest, context: Context, principal: Principal
    ) -> pb.FreezeState:
        until, reason = validate_freeze(request, time.time())
        return freeze_message(await self.scheduler.freeze(until, reason, principal.name))

    @rpc
    async def Unfreeze(
        self, request: pb.UnfreezeRequest, context: Context, principal: Principal
    ) -> pb.FreezeState:
        await self.scheduler.unfreeze()
        return pb.FreezeState(frozen=False)

    @rpc
    async def GetFreeze(
        self, request: pb.GetFreezeRequest, context: Context, principal: Principal
    ) -> pb.FreezeState:
        return freeze_message(self.scheduler.frozen())

    @rpc
    async def ListAudit(
        self, request: pb.ListAuditRequest, context: Context, principal: Principal
    ) -> pb.ListAuditResponse:
        after = _after_seq(request.page_token)
        size = min(request.page_size or DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE)
        entries = await self.journal.read(
            self.store.audit.entries,
            request.injection_id or None,
            request.since or None,
            size + 1,  # one more than the page: is there a next one?
            after,
            AUDIT_PAGE_BYTES,
        )
        page, more = audit_page(entries, size)
        return pb.ListAuditResponse(
            entries=page, next_page_token=str(page[-1].seq) if more and page else ""
        )

    @rpc
    async def VerifyAudit(
        self, request: pb.VerifyAuditRequest, context: Context, principal: Principal
    ) -> pb.AuditVerdict:
        verdict = await self.journal.read(self.store.audit.verify)
        return pb.AuditVerdict(
            ok=verdict.ok,
            entries=verdict.entries,
            broken_at=verdict.broken_at or 0,
            problem=verdict.problem,
            checked=verdict.checked,
            unchecked=verdict.unchecked,
        )


# The range of google.protobuf.Timestamp (0001-01-01 to 9999-12-31T23:59:59Z).
_TIMESTAMP_MIN, _TIMESTAMP_MAX = -62_135_596_800, 253_402_300_799


def freeze_message(freeze: Freeze | None) -> pb.FreezeState:
    """The freeze as the API reports it. Never fails: a freeze stored before `until` was
    bounded at the edge (e.g. 1e18) is still reported, as frozen, with `until` clamped
    to the latest representable time, rather than breaking GetFreeze."""
    if freeze is None:
        return pb.FreezeState(frozen=False)
    return pb.FreezeState(
        frozen=True,
        until=_representable(freeze.until),
        reason=freeze.reason,
        by=freeze.by,
        at=_representable(freeze.at),
    )


def _representable(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    if math.isnan(seconds) or seconds > _TIMESTAMP_MAX:
        return timestamp_pb2.Timestamp(seconds=_TIMESTAMP_MAX)
    if seconds < _TIMESTAMP_MIN:
        return timestamp_pb2.Timestamp(seconds=_TIMESTAMP_MIN)
    return timestamp(seconds)


def _after_seq(page_token: str) -> int:
    """A page token is the seq of the last entry of the previous page."""
    if not page_token:
        return 0
    if len(page_token) > 20 or not page_token.isdigit():
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token from a previous page"
        )
    return int(page_token)


def audit_page(entries: list[AuditEntry], size: int) -> tuple[list[pb.AuditEntry], bool]:
    """The first entries (at most `size`, at least one) that fit AUDIT_PAGE_BYTES, and
    whether more may follow. `entries` were read with limit size + 1 and max_bytes
    AUDIT_PAGE_BYTES of stored text; the JSON listed here is never shorter than the
    canonical JSON stored, so a read the store cut short always counts as "more" (at
    worst the next page is empty)."""
    page: list[pb.AuditEntry] = []
    listed = read = 0
    full = False
    for entry in entries:
        text = json.dumps(entry.entry, sort_keys=True)
        read += len(text)
        if full or len(page) == size:
            continue
        message = _audit_message(entry, text)
        if page and listed + message.ByteSize() > AUDIT_PAGE_BYTES:
            full = True  # in order: nothing after an entry that did not fit
            continue
        page.append(message)
        listed += message.ByteSize()
    return page, len(page) < len(entries) or read >= AUDIT_PAGE_BYTES


def _audit_message(entry: AuditEntry, text: str) -> pb.AuditEntry:
    if len(text) > MAX_LISTED_ENTRY_BYTES:
        text = json.dumps(_oversized(entry.entry, text), sort_keys=True)
    return pb.AuditEntry(
        seq=entry.seq,
        at=timestamp(entry.at),
        entry_json=text,
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )


def _oversized(entry: dict[str, Any], text: str) -> dict[str, Any]:
    """What is listed of an entry too large to list: its short fields, size and hash."""
    kept = {
        key: value
        for key, value in entry.items()
        if isinstance(value, str | int | float) and len(str(value)) < 256
    }
    return {
        **kept,
        "oversized": True,
        "entry_bytes": len(text),
        "entry_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
