"""A raw ADS client for protocol tests: sends exactly what a test says, records all it gets.

Also the xDS services alone in this process (`InProcessAds`: ADS, or RTDS and ECDS), for
tests that need the real gRPC stream but none of the control server around it.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from faultplane.server.control import XDS_SERVER_OPTIONS
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry
from faultplane.xds.server import OnDuplicate, add_xds_services


class RawAdsClient:
    """One ADS stream, on its own channel or on `channel` (which `close` then leaves open)."""

    def __init__(
        self,
        address: str,
        node_id: str,
        cluster: str = "",
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else grpc.aio.insecure_channel(address)
        self._call = self._open(self._channel)
        self.received: list[discovery_pb2.DiscoveryResponse] = []
        # Reads go through a queue: cancelling a pending read would cancel the whole call.
        self._responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        self._reader = asyncio.create_task(self._pump())

    def _open(self, channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall:
        """The stream this client speaks on (per-type clients open another service's)."""
        return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()

    async def _pump(self) -> None:
        try:
            async for response in self._call:
                self._responses.put_nowait(response)
        except grpc.aio.AioRpcError:
            pass  # the server ended the stream: `status` tells how

    async def status(self, timeout: float = 10.0) -> tuple[grpc.StatusCode, str]:
        """How the server ended the stream (waits until it has, at most `timeout` s)."""
        code = await asyncio.wait_for(self._call.code(), timeout)
        return code, await self._call.details()

    async def close(self) -> None:
        self._reader.cancel()
        self._call.cancel()
        if self._owns_channel:
            await self._channel.close()

    async def request(
        self,
        type_url: str,
        names: tuple[str, ...] = (),
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            node=self.node,
            type_url=type_url,
            resource_names=names,
            version_info=version,
            response_nonce=nonce,
        )
        if error is not None:
            request.error_detail.code = 3
            request.error_detail.message = error
        await self._call.write(request)

    async def ack(
        self, response: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()
    ) -> None:
        await self.request(response.type_url, names, response.version_info, response.nonce)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        response = await asyncio.wait_for(self._responses.get(), timeout)
        self.received.append(response)
        return response

    async def subscribe_all(
        self, routes: tuple[str, ...], endpoints: tuple[str, ...]
    ) -> dict[str, discovery_pb2.DiscoveryResponse]:
        """Subscribe like Envoy does (CDS, LDS wildcard; EDS, RDS, RTDS by name), ACK each."""
        latest: dict[str, discovery_pb2.DiscoveryResponse] = {}
        names = {
            types.CLUSTER: (),
            types.ENDPOINT: endpoints,
            types.LISTENER: (),
            types.ROUTE: routes,
            types.RUNTIME: ("faultplane",),
        }
        for type_url, wanted in names.items():
            await self.request(type_url, wanted)
            response = await self.recv()
            assert response.type_url == type_url
            await self.ack(response, wanted)
            latest[type_url] = response
        return latest


class _NoSource:
    """The cache is filled by the test itself."""

    def ensure(self, node: base_pb2.Node) -> None:
        pass


class InProcessAds:
    """The xDS services alone, with their own cache and registry, on a loopback port with
    the production server options: ADS, or with `per_type` RTDS and ECDS (overlay mode).
    `async with` starts and stops it."""

    def __init__(self, per_type: bool = False, on_duplicate: OnDuplicate | None = None) -> None:
        self.cache = SnapshotCache("test")
        self.registry = SidecarRegistry()
        self._per_type = per_type
        self._on_duplicate = on_duplicate
        self._server: grpc.aio.Server | None = None
        self._clients: list[RawAdsClient] = []
        self.port = 0

    async def __aenter__(self) -> InProcessAds:
        self._server = grpc.aio.server(options=XDS_SERVER_OPTIONS)
        add_xds_services(
            self._server,
            self.cache,
            self.registry,
            _NoSource(),
            per_type=self._per_type,
            on_duplicate=self._on_duplicate,
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for client in self._clients:
            await client.close()
        if self._server is not None:
            await self._server.stop(grace=0)

    def client(self, node_id: str) -> RawAdsClient:
        """A raw client of this server, closed with it."""
        client = RawAdsClient(f"127.0.0.1:{self.port}", node_id)
        self._clients.append(client)
        return client
