"""Recurring experiments over the operator API: create, list (with each schedule's
history and held-rate), pause, resume, remove. The gate audits every call; the
schedules themselves live in faultplane.lifecycle.schedules."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from faultplane.api.convert import state_message, timestamp
from faultplane.api.gate import ApiError, rpc
from faultplane.api.validate import InvalidRequest
from faultplane.auth.principal import Principal
from faultplane.lifecycle.scheduler import NotFound
from faultplane.lifecycle.schedules import StoredSchedule, UnknownSchedule, held_rate
from faultplane.scheduling.errors import ScheduleError
from faultplane.v1 import faultplane_pb2 as pb

if TYPE_CHECKING:
    from faultplane.lifecycle.scheduler import Scheduler
    from faultplane.model.spec import InjectionSpec

Context = grpc.aio.ServicerContext
MAX_TEXT = 256


def recurrence_input(request: pb.CreateScheduleRequest) -> dict[str, Any]:
    """The parser's input from the request's fields (empty: not given)."""
    data: dict[str, Any] = {}
    for name in ("every", "cron", "tz"):
        value = getattr(request, name)
        if len(value) > MAX_TEXT:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: at most {MAX_TEXT} chars")
        if value:
            data[name] = value
    if request.HasField("start"):
        start = request.start.ToDatetime(tzinfo=UTC)
        data["start"] = start.isoformat()
    return data


class ScheduleMethods:
    scheduler: Scheduler

    if TYPE_CHECKING:  # InjectionMethods'

        def _spec(self, request: pb.InjectionRequest, principal: Principal) -> InjectionSpec: ...

    @rpc
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Context, principal: Principal
    ) -> pb.Schedule:
        if self.scheduler.replicated:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "schedule: recurring experiments need the queue, which runs on a single "
                "server; not available with replicas",
            )
        if not request.HasField("experiment"):
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "experiment: required")
        if len(request.name) > MAX_TEXT:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"name: at most {MAX_TEXT} chars")
        try:
            self._spec(request.experiment, principal)  # each occurrence is this request
        except InvalidRequest as exc:
            raise InvalidRequest([(f"experiment.{p}", r) for p, r in exc.problems]) from None
        document = json_format.MessageToDict(request.experiment, preserving_proto_field_name=True)
        for key in ("not_before", "not_after", "on_conflict"):
            document.pop(key, None)  # set per occurrence
        try:
            item = await self.scheduler.schedules.create(
                document, recurrence_input(request), request.name, principal.name
            )
        except ScheduleError as exc:
            field = exc.field.removeprefix("schedule").lstrip(".") or "every"
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {exc.reason}") from None
        self.scheduler.scheduling_changed("schedules")
        return await self._schedule_message(item)

    @rpc
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Context, principal: Principal
    ) -> pb.ListSchedulesResponse:
        items = self.scheduler.schedules.list()
        return pb.ListSchedulesResponse(schedules=[await self._schedule_message(i) for i in items])

    @rpc
    async def PauseSchedule(
        self, request: pb.ScheduleIdRequest, context: Context, principal: Principal
    ) -> pb.Schedule:
        return await self._schedule_message(await self._paused(request.id, True))

    @rpc
    async def ResumeSchedule(
        self, request: pb.ScheduleIdRequest, context: Context, principal: Principal
    ) -> pb.Schedule:
        return await self._schedule_message(await self._paused(request.id, False))

    @rpc
    async def RemoveSchedule(
        self, request: pb.ScheduleIdRequest, context: Context, principal: Principal
    ) -> pb.Schedule:
        try:
            item = await self.scheduler.schedules.remove(request.id)
        except UnknownSchedule:
            raise _unknown(request.id) from None
        self.scheduler.scheduling_changed("schedules")
        return await self._schedule_message(item)

    async def _paused(self, schedule_id: str, paused: bool) -> StoredSchedule:
        try:
            item = await self.scheduler.schedules.pause(schedule_id, paused)
        except UnknownSchedule:
            raise _unknown(schedule_id) from None
        self.scheduler.scheduling_changed("schedules")
        return item

    async def _schedule_message(self, item: StoredSchedule) -> pb.Schedule:
        """The schedule with its history, newest first, read from the injections."""
        history = []
        for at, injection_id in reversed(item.body["fired"]):
            occurrence = pb.ScheduleOccurrence(injection_id=injection_id, at=timestamp(at))
            try:
                injection = await self.scheduler.find(injection_id)
            except NotFound:  # pruned by retention
                history.append(occurrence)
                continue
            occurrence.state = state_message(injection.state)
            occurrence.verdict = injection.verdict
            history.append(occurrence)
        rate, judged = held_rate([o.verdict for o in history])
        last = item.body["fired"][-1][0] if item.body["fired"] else None
        message = pb.Schedule(
            id=item.id,
            name=item.body.get("name", ""),
            recurrence=item.rule.describe(),
            paused=item.paused,
            last_fired=timestamp(last),
            history=history,
            held_rate=rate,
            judged=judged,
            created_by=item.body.get("created_by", ""),
            created_at=timestamp(item.body.get("created_at")),
        )
        if not item.paused:
            message.next_at.CopyFrom(timestamp(item.next_at().timestamp()))
        json_format.ParseDict(item.body["document"], message.experiment)
        return message


def _unknown(schedule_id: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, f"id: no schedule {schedule_id!r}")
