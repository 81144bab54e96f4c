"""The faultplane.v1.FaultService servicer: validation at the edge, then the scheduler.

Every refusal is a gRPC status naming the field or the reason, and leaves no trace in
the scheduler (validation and admission happen before anything is registered).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

import grpc
from google.protobuf import json_format

from faultplane.api.convert import (
    baseline_message,
    injection_message,
    state_from_message,
    timestamp,
    transition_message,
)
from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.mesh import Mesh
from faultplane.scheduler.preflight import Preflight
from faultplane.scheduler.scheduler import NotFound, Refused, Scheduler
from faultplane.spec import InjectionSpec
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from faultplane.xds import types
from faultplane.xds.faults import runtime_keys
from faultplane.xds.registry import SidecarRegistry, SidecarStatus
from faultplane.xds.resources import EGRESS, INGRESS

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class FaultService(faultplane_pb2_grpc.FaultServiceServicer):
    def __init__(
        self,
        registry: SidecarRegistry,
        scheduler: Scheduler,
        mesh: Mesh,
        preflight: Preflight | None = None,
    ) -> None:
        self._registry = registry
        self._scheduler = scheduler
        self._mesh = mesh
        self._preflight = preflight
        # Without a catalogue any SLO name is accepted (and nothing guards it).
        self._slos: Collection[str] | None = preflight.catalogue if preflight else None

    async def CreateInjection(
        self, request: pb.InjectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Injection:
        spec = await self._validate(request, context)
        try:
            if self._preflight is not None:
                await self._preflight.check(spec)
            injection = self._scheduler.create(spec, _document(request))
        except Refused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return injection_message(injection)

    async def PlanInjection(
        self, request: pb.InjectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.InjectionPlan:
        spec = await self._validate(request, context)
        try:
            plan = self._scheduler.plan(spec)
        except Refused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        route_config = INGRESS if spec.target.scope.upstream is None else EGRESS
        return pb.InjectionPlan(
            matched=plan.matched,
            targets=plan.targets,
            sidecars=[
                pb.SidecarPlan(
                    sidecar=node,
                    route_config=route_config,
                    route_config_json=json_format.MessageToJson(
                        rendered[types.ROUTE][route_config], indent=None
                    ),
                    runtime=runtime_keys(rendered[types.RUNTIME]),
                )
                for node, rendered in plan.rendered.items()
            ],
        )

    async def GetInjection(
        self, request: pb.GetInjectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Injection:
        return injection_message(await self._find(request.id, context))

    async def ListInjections(
        self, request: pb.ListInjectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInjectionsResponse:
        try:
            offset = int(request.page_token or 0)
            if offset < 0:
                raise ValueError
        except ValueError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token from a previous page"
            )
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        states = {state_from_message(s) for s in request.states if s != pb.STATE_UNSPECIFIED}
        found = self._scheduler.list(states, request.service)
        page = found[offset : offset + size]
        more = offset + size < len(found)
        return pb.ListInjectionsResponse(
            injections=[injection_message(inj) for inj in page],
            next_page_token=str(offset + size) if more else "",
        )

    async def AbortInjection(
        self, request: pb.AbortInjectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Injection:
        await self._find(request.id, context)
        try:
            injection = await self._scheduler.abort(request.id, _abort_reason(request.reason))
        except Refused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return injection_message(injection)

    async def AbortAllInjections(
        self, request: pb.AbortAllInjectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbortAllInjectionsResponse:
        aborted = await self._scheduler.abort_all(_abort_reason(request.reason))
        return pb.AbortAllInjectionsResponse(aborted=[injection_message(inj) for inj in aborted])

    async def WatchInjections(
        self, request: pb.WatchInjectionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InjectionEvent]:
        watch = self._scheduler.watch()
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

    async def ListSidecars(
        self, request: pb.ListSidecarsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSidecarsResponse:
        return pb.ListSidecarsResponse(
            sidecars=[
                sidecar_message(sidecar)
                for sidecar in self._registry.sidecars()
                if not request.service or sidecar.service == request.service
            ]
        )

    async def GetBaseline(
        self, request: pb.GetBaselineRequest, context: grpc.aio.ServicerContext
    ) -> pb.Baseline:
        if self._preflight is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "no SLO catalogue configured (serve --slos)"
            )
        if request.slo not in self._preflight.catalogue:
            known = ", ".join(sorted(self._preflight.catalogue))
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"slo: unknown SLO {request.slo!r} (known: {known})",
            )
        if request.window_seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "window_seconds: must be >= 0")
        try:
            stats = await self._preflight.stats(request.slo, request.window_seconds or None)
        except Refused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return baseline_message(stats, self._preflight.min_seconds)

    async def _validate(
        self, request: pb.InjectionRequest, context: grpc.aio.ServicerContext
    ) -> InjectionSpec:
        try:
            return validate_request(request, self._mesh, self._slos)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise AssertionError("unreachable")

    async def _find(self, injection_id: str, context: grpc.aio.ServicerContext):
        if not injection_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: required")
        try:
            return self._scheduler.get(injection_id)
        except NotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"id: no injection {injection_id!r}")


def _document(request: pb.InjectionRequest) -> dict:
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


def _abort_reason(reason: str) -> str:
    return f"aborted by operator: {reason}" if reason else "aborted by operator"


def sidecar_message(sidecar: SidecarStatus) -> pb.Sidecar:
    admin_port = sidecar.metadata.get("admin_port")
    message = pb.Sidecar(
        node_id=sidecar.node_id,
        cluster=sidecar.cluster,
        service=sidecar.service,
        labels=sidecar.labels,
        connected=sidecar.connected,
        admin_address=f"127.0.0.1:{int(admin_port)}" if admin_port else "",
        connected_at=timestamp(sidecar.connected_at),
    )
    for type_url in types.PUSH_ORDER:
        status = sidecar.types.get(type_url)
        if status is None:
            continue
        message.xds.append(
            pb.XdsTypeStatus(
                type=types.short_name(type_url),
                version_sent=status.sent_version,
                version_acked=status.acked_version,
                acked_at=timestamp(status.acked_at),
                version_nacked=status.nacked_version,
                last_error=status.last_error,
                nacked_at=timestamp(status.nacked_at),
            )
        )
    return message
