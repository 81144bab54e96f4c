"""The scheduler's operator API: blackouts and the policy (schedules: `schedules.py`).

Thin: the gate authenticates, authorises and audits every call (faultplane.api.gate), the
core parses and names the wrong field (faultplane.scheduling raises ScheduleError with
the field as the request spells it), the lifecycle keeps them (faultplane.lifecycle.
blackouts, policy), and every change re-plans the queue at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import grpc

from faultplane.api.convert import timestamp
from faultplane.api.gate import ApiError, rpc
from faultplane.auth.principal import Principal
from faultplane.lifecycle.blackouts import StoredBlackout, UnknownBlackout, blackout_input
from faultplane.lifecycle.policy import Limits
from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.windows import OneOffBlackout
from faultplane.v1 import faultplane_pb2 as pb

if TYPE_CHECKING:
    from faultplane.lifecycle.scheduler import Scheduler

Context = grpc.aio.ServicerContext
MAX_NAME = 256
MAX_LIMIT = 10_000
MAX_COOLDOWN_SECONDS = 366 * 86400.0


@contextmanager
def field_errors() -> Iterator[None]:
    """The core's ScheduleError as INVALID_ARGUMENT naming the request's field ("tz:
    unknown time zone 'Mars/Base'")."""
    try:
        yield
    except ScheduleError as exc:
        field = exc.field.removeprefix("blackout.")  # as the request spells it
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {exc.reason}") from None


def _seconds(message: pb.AddBlackoutRequest, name: str) -> float | None:
    if not message.HasField(name):
        return None
    stamp = getattr(message, name)
    return float(stamp.seconds) + stamp.nanos / 1e9


class SchedulingMethods:
    scheduler: Scheduler

    @rpc
    async def AddBlackout(
        self, request: pb.AddBlackoutRequest, context: Context, principal: Principal
    ) -> pb.SchedulingBlackout:
        if len(request.name) > MAX_NAME or len(request.weekly) > MAX_NAME:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"name: at most {MAX_NAME} chars")
        data = blackout_input(
            request.name, request.weekly, request.tz,
            _seconds(request, "start"), _seconds(request, "end"),
        )  # fmt: skip
        with field_errors():
            item = await self.scheduler.blackouts.add(data, principal.name)
        self.scheduler.replan()
        self.scheduler.scheduling_changed("blackouts")
        return blackout_message(item, self.scheduler.runs_into(item.rule))

    @rpc
    async def ListBlackouts(
        self, request: pb.ListBlackoutsRequest, context: Context, principal: Principal
    ) -> pb.ListBlackoutsResponse:
        items = self.scheduler.blackouts.list()
        return pb.ListBlackoutsResponse(blackouts=[blackout_message(i) for i in items])

    @rpc
    async def RemoveBlackout(
        self, request: pb.RemoveBlackoutRequest, context: Context, principal: Principal
    ) -> pb.SchedulingBlackout:
        try:
            item = await self.scheduler.blackouts.remove(request.id)
        except UnknownBlackout:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"id: no blackout {request.id!r}") from None
        self.scheduler.replan()  # what waited for it may start now
        self.scheduler.scheduling_changed("blackouts")
        return blackout_message(item)

    @rpc
    async def GetPolicy(
        self, request: pb.GetPolicyRequest, context: Context, principal: Principal
    ) -> pb.SchedulingPolicy:
        return policy_message(self.scheduler.rules.limits)

    @rpc
    async def SetPolicy(
        self, request: pb.SchedulingPolicy, context: Context, principal: Principal
    ) -> pb.SchedulingPolicy:
        cooldown = request.cooldown_seconds
        if not math.isfinite(cooldown) or not 0 <= cooldown <= MAX_COOLDOWN_SECONDS:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cooldown_seconds: must be between 0 and {MAX_COOLDOWN_SECONDS:.0f}",
            )
        for name in ("max_per_service", "max_fleet"):
            if getattr(request, name) > MAX_LIMIT:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{name}: at most {MAX_LIMIT} (0: no limit)"
                )
        limits = Limits(
            cooldown, request.max_per_service, request.max_fleet, request.dependency_rule,
            principal.name,
        )  # fmt: skip
        saved = await self.scheduler.rules.set(limits)
        self.scheduler.replan()
        self.scheduler.scheduling_changed("policy")
        return policy_message(saved)


def blackout_message(
    item: StoredBlackout, overlapping: list[str] | None = None
) -> pb.SchedulingBlackout:
    rule = item.rule
    message = pb.SchedulingBlackout(
        id=item.id,
        name=item.body.get("name", ""),
        weekly=item.body.get("weekly", ""),
        tz=item.body.get("tz", ""),
        description=rule.describe(),
        created_by=item.body.get("created_by", ""),
        created_at=timestamp(item.body.get("created_at")),
        overlapping=overlapping or [],
    )
    if isinstance(rule, OneOffBlackout):
        message.start.CopyFrom(timestamp(rule.start.timestamp()))
        message.end.CopyFrom(timestamp(rule.end.timestamp()))
    return message


def policy_message(limits: Limits) -> pb.SchedulingPolicy:
    return pb.SchedulingPolicy(
        cooldown_seconds=limits.cooldown_seconds,
        max_per_service=limits.max_per_service,
        max_fleet=limits.max_fleet,
        dependency_rule=limits.dependency_rule,
        updated_by=limits.updated_by,
        updated_at=timestamp(limits.updated_at) if limits.updated_at else None,
    )
