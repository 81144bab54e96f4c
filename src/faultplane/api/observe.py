"""What the control server sees: sidecars and SLO baselines."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from faultplane.api.agents_view import agent_pod_messages, is_agent
from faultplane.api.convert import baseline_message, timestamp, xds_statuses
from faultplane.api.gate import ApiError, rpc
from faultplane.auth.principal import Principal
from faultplane.replicas.sidecars import replica_of
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.xds import types
from faultplane.xds.registry import SidecarRegistry, SidecarStatus

if TYPE_CHECKING:
    from faultplane.delivery.plane import FaultPlane
    from faultplane.lifecycle.preflight import Preflight

Context = grpc.aio.ServicerContext


class ObserveMethods:
    registry: SidecarRegistry
    preflight: Preflight | None
    plane: FaultPlane  # how sidecars are identified (node metadata, Istio's or ours)

    @rpc
    async def ListSidecars(
        self, request: pb.ListSidecarsRequest, context: Context, principal: Principal
    ) -> pb.ListSidecarsResponse:
        listed = []
        for sidecar in self.registry.sidecars():
            if is_agent(sidecar):  # a node agent: its pods are the targets
                messages = agent_pod_messages(sidecar)
            else:
                messages = [sidecar_message(sidecar, self.plane)]
            for message in messages:
                message.replica = replica_of(self.registry, sidecar)
                if not request.service or message.service == request.service:
                    listed.append(message)
        return pb.ListSidecarsResponse(sidecars=listed)

    @rpc
    async def GetBaseline(
        self, request: pb.GetBaselineRequest, context: Context, principal: Principal
    ) -> pb.Baseline:
        if self.preflight is None:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION, "no SLO catalogue configured (serve --slos)"
            )
        if request.slo not in self.preflight.catalogue:
            known = ", ".join(sorted(self.preflight.catalogue))
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"slo: unknown SLO {request.slo!r} (known: {known})",
            )
        if request.window_seconds < 0:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "window_seconds: must be >= 0")
        stats = await self.preflight.stats(request.slo, request.window_seconds or None)
        return baseline_message(stats, self.preflight.min_seconds)


def sidecar_message(sidecar: SidecarStatus, plane: FaultPlane) -> pb.Sidecar:
    identity = plane.identity(sidecar)
    try:
        stats = plane.stats_address(sidecar.node_id)
    except ValueError:  # not an address: shown as unknown, never a failed listing
        stats = None
    message = pb.Sidecar(
        node_id=sidecar.node_id,
        cluster=sidecar.cluster,
        service=identity.service,
        labels=dict(identity.labels),
        connected=sidecar.connected,
        admin_address=stats or "",
        connected_at=timestamp(sidecar.connected_at),
        kind="envoy",
    )
    message.xds.extend(xds_statuses(sidecar, types.SEND_ORDER))
    return message
