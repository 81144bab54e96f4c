"""The faultplane.v1.FaultService servicer."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from faultplane.xds import types
from faultplane.xds.registry import SidecarRegistry, SidecarStatus


class FaultService(faultplane_pb2_grpc.FaultServiceServicer):
    def __init__(self, registry: SidecarRegistry) -> None:
        self._registry = registry

    async def ListSidecars(  # noqa: N802 (gRPC method name)
        self, request: pb.ListSidecarsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSidecarsResponse:
        return pb.ListSidecarsResponse(
            sidecars=[
                sidecar_message(sidecar)
                for sidecar in self._registry.sidecars()
                if not request.service or sidecar.service == request.service
            ]
        )


def sidecar_message(sidecar: SidecarStatus) -> pb.Sidecar:
    admin_port = sidecar.metadata.get("admin_port")
    message = pb.Sidecar(
        node_id=sidecar.node_id,
        cluster=sidecar.cluster,
        service=sidecar.service,
        labels=sidecar.labels,
        connected=sidecar.connected,
        admin_address=f"127.0.0.1:{int(admin_port)}" if admin_port else "",
        connected_at=_timestamp(sidecar.connected_at),
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
                acked_at=_timestamp(status.acked_at),
                version_nacked=status.nacked_version,
                last_error=status.last_error,
                nacked_at=_timestamp(status.nacked_at),
            )
        )
    return message


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
