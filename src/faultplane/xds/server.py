"""The ADS gRPC service: speaks state-of-the-world xDS and nothing else.

Each stream runs one loop that handles, in arrival order, Envoy's requests, changes of
the sidecar's desired resources, and lease (TTL) re-sends. What to send is decided by
`StreamState`; what a sidecar should have by the cache; this module only moves bytes and
records evidence in the registry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry
from faultplane.xds.stream import StreamState, Verdict

log = structlog.get_logger("faultplane.xds")

_CHANGED = object()
_CLOSED = object()


class ResourceSource(Protocol):
    """Fills the cache for a sidecar the first time it connects."""

    def ensure(self, node: base_pb2.Node) -> None: ...


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(
        self,
        cache: SnapshotCache,
        registry: SidecarRegistry,
        source: ResourceSource,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._registry = registry
        self._source = source
        self._clock = clock

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        events: asyncio.Queue[object] = asyncio.Queue()
        reader = asyncio.create_task(_read_requests(request_iterator, events))
        try:
            first = await events.get()
            if not isinstance(first, discovery_pb2.DiscoveryRequest):
                return
            if not first.node.id:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "node.id: required on the first request"
                )
            await self._serve(first, events, context)
        finally:
            reader.cancel()

    async def _serve(
        self,
        first: discovery_pb2.DiscoveryRequest,
        events: asyncio.Queue[object],
        context: grpc.aio.ServicerContext,
    ) -> None:
        node = first.node
        self._source.ensure(node)
        self._registry.connected(node)
        cancel_watch = self._cache.watch(node.id, lambda: events.put_nowait(_CHANGED))
        stream = StreamState()
        bound = log.bind(node=node.id)
        bound.info("sidecar connected", cluster=node.cluster)
        heartbeat = _Heartbeat(events)
        try:
            event: object = first
            while event is not _CLOSED:
                if isinstance(event, discovery_pb2.DiscoveryRequest):
                    self._on_request(node.id, stream, event, bound)
                await self._send_due(node.id, stream, context)
                heartbeat.arm(stream.next_heartbeat(self._cache.get(node.id) or {}), self._clock)
                event = await events.get()
        finally:
            heartbeat.arm(None, self._clock)
            cancel_watch()
            self._registry.disconnected(node.id)
            bound.info("sidecar disconnected")

    def _on_request(
        self,
        node_id: str,
        stream: StreamState,
        request: discovery_pb2.DiscoveryRequest,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        outcome = stream.on_request(request)
        short = types.short_name(outcome.type_url)
        if outcome.verdict is Verdict.ACK and outcome.response is not None:
            self._registry.record_ack(node_id, outcome.type_url, outcome.response, self._clock())
        elif outcome.verdict is Verdict.NACK and outcome.response is not None:
            self._registry.record_nack(
                node_id, outcome.type_url, outcome.response, outcome.error or "", self._clock()
            )
            bound.warning(
                "sidecar rejected config",
                type=short,
                version=outcome.response.version,
                error=outcome.error,
            )
        elif outcome.verdict is Verdict.STALE:
            bound.debug("stale nonce", type=short, nonce=request.response_nonce)

    async def _send_due(
        self, node_id: str, stream: StreamState, context: grpc.aio.ServicerContext
    ) -> None:
        snapshot = self._cache.get(node_id) or {}
        for response, sent in stream.due_responses(snapshot, self._clock()):
            self._registry.record_sent(node_id, response.type_url, sent)
            await context.write(response)


class _Heartbeat:
    """Wakes the stream loop when a leased type is due for re-sending.

    One timer per stream, re-armed after each pass of the loop, rather than a timeout
    task around every wait for the next event.
    """

    def __init__(self, events: asyncio.Queue[object]) -> None:
        self._events = events
        self._due: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, due: float | None, clock: Callable[[], float]) -> None:
        """Wake at `due` (on `clock`), or never; a pending wake for the same time stays."""
        if due == self._due and (self._timer is None) == (due is None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = due
        if due is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, due - clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._due = None
        self._events.put_nowait(_CHANGED)


async def _read_requests(
    request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
    events: asyncio.Queue[object],
) -> None:
    try:
        async for request in request_iterator:
            events.put_nowait(request)
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
    finally:
        events.put_nowait(_CLOSED)
