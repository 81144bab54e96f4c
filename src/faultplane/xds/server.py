"""The ADS gRPC service: speaks state-of-the-world xDS and nothing else.

Each stream runs one loop that handles, in arrival order, Envoy's requests, and wakes up
for changes of the sidecar's desired resources and for lease (TTL) re-sends. What to send
is decided by `StreamState`; what a sidecar should have by the cache; this module only
moves bytes and records evidence in the registry.

What waits for the loop is bounded: at most `REQUEST_BACKLOG` requests (the reader then
stops reading, so gRPC flow control holds back a flooding peer) and at most one pending
wake-up (every pass reads the cache's latest state, so one stands for any number).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from faultplane.observability import metrics
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry
from faultplane.xds.stream import StreamState, Verdict

log = structlog.get_logger("faultplane.xds")

_CHANGED = object()
_CLOSED = object()

# Requests read from a stream but not yet handled. Envoy has at most one request per type
# outstanding in normal operation, so this is only ever reached by a misbehaving peer.
REQUEST_BACKLOG = 32


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
        events = _Inbox(REQUEST_BACKLOG)
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
        events: _Inbox,
        context: grpc.aio.ServicerContext,
    ) -> None:
        node = first.node
        self._source.ensure(node)
        self._registry.connected(node)
        cancel_watch = self._cache.watch(node.id, events.notify)
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


class _Inbox:
    """What the stream loop handles next: requests in arrival order, at most `limit` of
    them, and one coalesced "look at the cache again" wake-up. The wake-up needs no place
    in line: every pass, whatever woke it, sends what the cache's latest state calls for.

    `put` waits while the backlog is full instead of growing it: the reader then stops
    reading and gRPC flow control pushes back on the peer.
    """

    def __init__(self, limit: int) -> None:
        self._requests: deque[discovery_pb2.DiscoveryRequest] = deque()
        self._limit = limit
        self._changed = False
        self._closed = False
        self._ready = asyncio.Event()  # something for `get`
        self._room = asyncio.Event()  # room for `put`

    def notify(self) -> None:
        """Wake the loop once, however many changes arrive before it looks."""
        self._changed = True
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def put(self, request: discovery_pb2.DiscoveryRequest) -> None:
        if len(self._requests) >= self._limit:
            metrics.XDS_REQUESTS_THROTTLED.inc()
            while len(self._requests) >= self._limit:
                self._room.clear()
                await self._room.wait()
        self._requests.append(request)
        self._ready.set()

    async def get(self) -> object:
        """The next request, else `_CHANGED` if a wake-up is pending, else `_CLOSED` once
        the peer is gone; waits while there is none of these."""
        while True:
            if self._requests:
                self._room.set()
                return self._requests.popleft()
            if self._changed:
                self._changed = False
                return _CHANGED
            if self._closed:
                return _CLOSED
            self._ready.clear()
            await self._ready.wait()


class _Heartbeat:
    """Wakes the stream loop when a leased type is due for re-sending.

    One timer per stream, re-armed after each pass of the loop, rather than a timeout
    task around every wait for the next event.
    """

    def __init__(self, events: _Inbox) -> None:
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
        self._events.notify()


async def _read_requests(
    request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
    events: _Inbox,
) -> None:
    try:
        async for request in request_iterator:
            await events.put(request)
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
    finally:
        events.close()
