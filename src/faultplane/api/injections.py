"""Create, plan, read, abort and watch injections."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any

import grpc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from faultplane.api.agents_view import agent_pod_plan, is_agent_target
from faultplane.api.convert import (
    injection_message,
    state_from_message,
    timestamp,
    transition_message,
)
from faultplane.api.events import event_message, requested_kinds
from faultplane.api.gate import ApiError, rpc, stream_rpc
from faultplane.api.validate import MAX_TEXT, check_length, validate_request
from faultplane.auth.principal import Principal
from faultplane.auth.roles import PermissionDenied, may_act_on, may_claim_owner
from faultplane.lifecycle.events import TRANSITION
from faultplane.model.spec import InjectionSpec, Scope
from faultplane.render.faults import route_config_name, runtime_keys
from faultplane.render.resources import Resources
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.xds import types

if TYPE_CHECKING:
    from faultplane.delivery.plane import FaultPlane
    from faultplane.lifecycle.preflight import Preflight
    from faultplane.lifecycle.scheduler import Scheduler
    from faultplane.model.injection import Injection
    from faultplane.model.mesh import Mesh

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
Context = grpc.aio.ServicerContext


class InjectionMethods:
    scheduler: Scheduler
    plane: FaultPlane  # agent pods' plans show their network namespace
    mesh: Mesh | None  # None: overlay mode, any service that connects
    preflight: Preflight | None
    slos: Collection[str] | None

    @rpc
    async def CreateInjection(
        self, request: pb.InjectionRequest, context: Context, principal: Principal
    ) -> pb.Injection:
        spec = self._spec(request, principal)
        if self.preflight is not None:
            await self.preflight.check(spec)
        injection = await self.scheduler.create(spec, _document(request), principal.name)
        return injection_message(injection)

    @rpc
    async def PlanInjection(
        self, request: pb.InjectionRequest, context: Context, principal: Principal
    ) -> pb.InjectionPlan:
        spec = self._spec(request, principal)
        plan = self.scheduler.plan(spec)
        return pb.InjectionPlan(
            matched=plan.matched,
            targets=plan.targets,
            sidecars=[
                _sidecar_plan(node, rendered, plan.scope_of(node))
                for node, rendered in plan.rendered.items()
                if not is_agent_target(node)
            ],
            agent_pods=[
                agent_pod_plan(node, rendered, self.plane)
                for node, rendered in plan.rendered.items()
                if is_agent_target(node)
            ],
        )

    @rpc
    async def GetInjectionPlan(
        self, request: pb.GetInjectionPlanRequest, context: Context, principal: Principal
    ) -> pb.InjectionPlan:
        """What each target of an existing injection is (or was) sent for it, rendered
        from its stored parts and targets (a queued one has none chosen yet)."""
        injection = await self.scheduler.find(_required_id(request.id))
        sent = self.scheduler.sent(injection)
        return pb.InjectionPlan(
            matched=injection.matched,
            targets=injection.targets,
            sidecars=[
                _sidecar_plan(node, rendered, sent.scopes[node])
                for node, rendered in sent.rendered.items()
            ],
            unrendered=sent.unrendered,
        )

    @rpc
    async def GetInjection(
        self, request: pb.GetInjectionRequest, context: Context, principal: Principal
    ) -> pb.Injection:
        return injection_message(await self.scheduler.find(_required_id(request.id)))

    @rpc
    async def ListInjections(
        self, request: pb.ListInjectionsRequest, context: Context, principal: Principal
    ) -> pb.ListInjectionsResponse:
        """Newest first, from memory and the store. Each page continues after the last
        injection of the previous one (a new injection does not shift the pages). Listed
        injections carry no readings: `GetInjection` has them, and a page of injections
        with thousands of readings each would not fit in a reply."""
        after = _page_after(request.page_token)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        states = {state_from_message(s) for s in request.states if s != pb.STATE_UNSPECIFIED}
        found, more = await self.scheduler.page(states, request.service, after, size)
        messages = [injection_message(inj) for inj in found]
        for message in messages:
            message.ClearField("readings")
        return pb.ListInjectionsResponse(
            injections=messages,
            next_page_token=_page_token(found[-1]) if more else "",
        )

    @rpc
    async def AbortInjection(
        self, request: pb.AbortInjectionRequest, context: Context, principal: Principal
    ) -> pb.Injection:
        check_length(request.reason, "reason", MAX_TEXT)
        injection = await self.scheduler.find(_required_id(request.id))
        if not may_act_on(principal.name, principal.role, injection.owner, "AbortInjection"):
            raise PermissionDenied(
                f"{principal.name} ({principal.role.value}) may not abort {injection.id}, "
                f"owned by {injection.owner}"
            )
        aborted = await self.scheduler.abort(
            injection.id, _abort_reason(request.reason, principal, injection.owner), principal.name
        )
        return injection_message(aborted)

    @rpc
    async def AbortAllInjections(
        self, request: pb.AbortAllInjectionsRequest, context: Context, principal: Principal
    ) -> pb.AbortAllInjectionsResponse:
        check_length(request.reason, "reason", MAX_TEXT)
        aborted = await self.scheduler.abort_all(
            _abort_reason(request.reason, principal), principal.name
        )
        return pb.AbortAllInjectionsResponse(aborted=[injection_message(inj) for inj in aborted])

    @rpc
    async def ListQueue(
        self, request: pb.ListQueueRequest, context: Context, principal: Principal
    ) -> pb.ListQueueResponse:
        """The queue's timeline from the scheduler's forecast (faultplane.scheduling)."""
        rows = [
            pb.QueueRow(
                injection_id=row.experiment,
                status=row.status,
                start=timestamp(row.start.timestamp() if row.start else None),
                end=timestamp(row.end.timestamp() if row.end else None),
                reason=row.reason,
            )
            for row in self.scheduler.queue()
        ]
        return pb.ListQueueResponse(rows=rows)

    @stream_rpc
    async def WatchInjections(
        self, request: pb.WatchInjectionsRequest, context: Context, principal: Principal
    ) -> AsyncIterator[pb.InjectionEvent]:
        kinds = requested_kinds(request.kinds)
        if kinds - {TRANSITION}:  # readings and freeze changes too (faultplane.api.events)
            async for event in self._watch_events(kinds, request.id, context):
                yield event
            return
        watch = self.scheduler.watch(everywhere=True)  # every replica's, with replicas
        try:
            # Headers go out once subscribed, so a client can wait for them before acting.
            await context.send_initial_metadata(())
            async for injection, change in watch:
                if request.id and injection.id != request.id:
                    continue
                yield pb.InjectionEvent(
                    injection=injection_message(injection), transition=transition_message(change)
                )
        finally:
            watch.close()

    async def _watch_events(
        self, kinds: set[str], only: str, context: Context
    ) -> AsyncIterator[pb.InjectionEvent]:
        watch = self.scheduler.watch_events(kinds)
        try:
            await context.send_initial_metadata(())  # subscribed
            async for event in watch:
                message = event_message(event, only)
                if message is not None:
                    yield message
        finally:
            watch.close()

    def _spec(self, request: pb.InjectionRequest, principal: Principal) -> InjectionSpec:
        if not may_claim_owner(principal.name, principal.role, request.owner):
            raise PermissionDenied(
                f"owner: {request.owner!r} is not you ({principal.name}); only an admin may "
                "file an injection for someone else"
            )
        return validate_request(request, self.mesh, self.slos)


def _required_id(injection_id: str) -> str:
    if not injection_id:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "id: required")
    return injection_id


def _page_token(last: Injection) -> str:
    return f"{last.created_at!r}/{last.id}"


def _page_after(token: str) -> tuple[float, str] | None:
    """The (created_at, id) a page token continues after; a bad token is refused."""
    if not token:
        return None
    created_at, _, injection_id = token.partition("/")
    try:
        key = (float(created_at), injection_id)
    except ValueError:
        key = (math.nan, "")
    if not (math.isfinite(key[0]) and key[1]):
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token from a previous page"
        )
    return key


def _document(request: pb.InjectionRequest) -> dict[str, Any]:
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


def _abort_reason(reason: str, principal: Principal, owner: str = "") -> str:
    """The ABORTED transition's reason: who stopped it and, if it was someone else's
    fault, whose (anyone who may stop may stop anyone's; the audit says so). Local mode
    has one identity, and its owners are whatever the documents say: no owner there."""
    if principal.via == "local":
        by = "aborted by operator"
    else:
        by = f"aborted by {principal.name}"
        if owner and owner != principal.name:
            by += f" (owner: {owner})"
    return f"{by}: {reason}" if reason else by


def _sidecar_plan(node: str, rendered: Resources, scope: Scope) -> pb.SidecarPlan:
    """What the sidecar would be sent: its route configuration (full-mesh mode), or its
    fault slots that would carry a fault (overlay mode: ECDS, `route_config` "ecds")."""
    if types.ROUTE in rendered:
        route_config = route_config_name(scope)
        config: Message = rendered[types.ROUTE][route_config]
        shown = json_format.MessageToJson(config, indent=None, preserving_proto_field_name=True)
    else:
        route_config = "ecds"
        slots = [
            json_format.MessageToDict(slot, preserving_proto_field_name=True)
            for slot in rendered[types.EXTENSION_CONFIG].values()
            if not _is_default_slot(slot)
        ]
        shown = json.dumps({"slots": slots}, separators=(",", ":"))
    return pb.SidecarPlan(
        sidecar=node,
        route_config=route_config,
        route_config_json=shown,  # snake_case, as Envoy's docs
        runtime=runtime_keys(rendered[types.RUNTIME]),
    )


def _is_default_slot(slot: Message) -> bool:
    """An overlay slot that does nothing: HTTPFault{} (every slot nobody uses)."""
    config = fault_pb2.HTTPFault()
    slot.typed_config.Unpack(config)  # type: ignore[attr-defined]
    return config == fault_pb2.HTTPFault()
