"""A sidecar without Envoy: a real ADS client on loopback that subscribes like Envoy and
ACKs every response. For tests of the control plane's own logic (auth, races), where
seven real Envoys would only add time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from faultplane.model.mesh import Mesh, Pod
from faultplane.server.control import ControlServer, ServerConfig
from faultplane.xds import types
from tests.helpers import until

NAMES = {
    types.CLUSTER: (),
    types.LISTENER: (),
    types.ROUTE: ("ingress", "egress"),
    types.RUNTIME: ("faultplane",),
}


class FakeSidecar:
    """`ack_delay`: per type, how long to hold each ACK (a slow Envoy)."""

    def __init__(
        self,
        xds_address: str,
        pod: Pod,
        mesh: Mesh,
        ack_delay: dict[str, float] | None = None,
    ) -> None:
        self._ack_delay = ack_delay or {}
        metadata = struct_pb2.Struct()
        metadata.update({"service": pod.service, "pod": pod.name, "labels": dict(pod.labels)})
        self.node = base_pb2.Node(id=pod.name, cluster=pod.service, metadata=metadata)
        self._names = {**NAMES, types.ENDPOINT: mesh.services[pod.service].dependencies}
        self._channel = grpc.aio.insecure_channel(xds_address)
        self._requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
            self._channel
        ).StreamAggregatedResources(self._outgoing())
        self._task = asyncio.create_task(self._ack_everything())

    async def _outgoing(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        for type_url in types.PUSH_ORDER:
            yield self._request(type_url)
        while (request := await self._requests.get()) is not None:
            yield request

    def _request(
        self, type_url: str, version: str = "", nonce: str = ""
    ) -> discovery_pb2.DiscoveryRequest:
        return discovery_pb2.DiscoveryRequest(
            node=self.node,
            type_url=type_url,
            resource_names=self._names[type_url],
            version_info=version,
            response_nonce=nonce,
        )

    async def _ack_everything(self) -> None:
        async for response in self._call:
            if delay := self._ack_delay.get(response.type_url):
                await asyncio.sleep(delay)  # the behaviour under test: a late ACK
            self._requests.put_nowait(
                self._request(response.type_url, response.version_info, response.nonce)
            )

    async def close(self) -> None:
        self._requests.put_nowait(None)
        self._task.cancel()
        self._call.cancel()
        await self._channel.close()


@asynccontextmanager
async def fake_sidecars(
    xds_address: str, mesh: Mesh, pods: list[Pod], ack_delay: dict[str, float] | None = None
) -> AsyncIterator[list[FakeSidecar]]:
    sidecars = [FakeSidecar(xds_address, pod, mesh, ack_delay) for pod in pods]
    try:
        yield sidecars
    finally:
        for sidecar in sidecars:
            await sidecar.close()


async def start_with_sidecars(
    stack: AsyncExitStack,
    config: ServerConfig,
    pods: list[Pod],
    ack_delay: dict[str, float] | None = None,
) -> tuple[ControlServer, grpc.aio.Channel]:
    """An in-process server with fake sidecars for `pods`, all connected, and a channel
    to its API; `stack` closes the channel and sidecars, then stops the server."""
    server = ControlServer(config)
    await server.start()
    stack.push_async_callback(server.stop, 0)
    xds = f"127.0.0.1:{server.xds_port}"
    await stack.enter_async_context(fake_sidecars(xds, config.mesh, pods, ack_delay))
    connected = lambda: sum(s.connected for s in server.registry.sidecars()) == len(pods)  # noqa: E731
    await until(connected, 20, "the fake sidecars to connect")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.api_port}")
    await stack.enter_async_context(channel)
    return server, channel
