"""The two-person rule, the freeze lever, and the audit log."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING

import grpc
from google.protobuf import timestamp_pb2

from faultplane.api.convert import injection_message, timestamp
from faultplane.api.gate import ApiError, rpc
from faultplane.api.validate import validate_freeze
from faultplane.auth.principal import Principal
from faultplane.auth.roles import PermissionDenied, may_act_on
from faultplane.scheduler.approval import Freeze
from faultplane.v1 import faultplane_pb2 as pb

if TYPE_CHECKING:
    from faultplane.scheduler.journal import Journal
    from faultplane.scheduler.scheduler import Scheduler
    from faultplane.store import Store

Context = grpc.aio.ServicerContext
MAX_AUDIT_ENTRIES = 10_000


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
        injection = self.scheduler.get(request.id)
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
        limit = min(request.limit or MAX_AUDIT_ENTRIES, MAX_AUDIT_ENTRIES)
        entries = await self.journal.read(
            self.store.audit_entries, request.injection_id or None, request.since or None, limit
        )
        return pb.ListAuditResponse(
            entries=[
                pb.AuditEntry(
                    seq=e.seq,
                    at=timestamp(e.at),
                    entry_json=json.dumps(e.entry, sort_keys=True),
                    prev_hash=e.prev_hash,
                    hash=e.hash,
                )
                for e in entries
            ]
        )

    @rpc
    async def VerifyAudit(
        self, request: pb.VerifyAuditRequest, context: Context, principal: Principal
    ) -> pb.AuditVerdict:
        verdict = await self.journal.read(self.store.verify_audit)
        return pb.AuditVerdict(
            ok=verdict.ok,
            entries=verdict.entries,
            broken_at=verdict.broken_at or 0,
            problem=verdict.problem,
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
