"""A raw ADS client for protocol tests: sends exactly what a test says, records all it gets."""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from faultplane.xds import types


class RawAdsClient:
    def __init__(self, address: str, node_id: str, cluster: str = "") -> None:
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self._channel = grpc.aio.insecure_channel(address)
        self._call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
            self._channel
        ).StreamAggregatedResources()
        self.received: list[discovery_pb2.DiscoveryResponse] = []
        # Reads go through a queue: cancelling a pending read would cancel the whole call.
        self._responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        self._reader = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for response in self._call:
            self._responses.put_nowait(response)

    async def close(self) -> None:
        self._reader.cancel()
        self._call.cancel()
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

    async def expect_silence(self, seconds: float) -> None:
        """Assert that the server sends nothing for `seconds`."""
        try:
            response = await asyncio.wait_for(self._responses.get(), seconds)
        except TimeoutError:
            return
        raise AssertionError(
            f"unexpected response: {types.short_name(response.type_url)} "
            f"version {response.version_info}"
        )

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
