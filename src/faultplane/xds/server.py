"""The xDS gRPC services: speak state-of-the-world xDS and nothing else.

A full-mesh sidecar gets every type over ADS; an overlay sidecar, whose ADS belongs to
another control plane, opens the per-type services instead: one RTDS stream for its
runtime layer and one ECDS stream per fault slot, all on one connection. Every stream,
whichever service, runs the same loop (`XdsStreams`): it handles, in arrival order,
Envoy's requests, and wakes up for changes of the sidecar's desired resources and for
lease (TTL) re-sends. What to send is decided by `StreamState`; what a sidecar should
have by the cache; this module only moves bytes and records evidence in the registry.

What waits for the loop is bounded: at most `REQUEST_BACKLOG` requests (the reader then
stops reading, so gRPC flow control holds back a flooding peer) and at most one pending
wake-up (every pass reads the cache's latest state, so one stands for any number).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc, discovery_pb2
from envoy.service.extension.v3 import config_discovery_pb2, config_discovery_pb2_grpc
from envoy.service.runtime.v3 import rtds_pb2, rtds_pb2_grpc

from faultplane.observability import metrics
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import NodeHeld, SidecarRegistry
from faultplane.xds.stream import StreamState, Verdict

log = structlog.get_logger("faultplane.xds")

_CHANGED = object()
_CLOSED = object()

# Requests read from a stream but not yet handled. Envoy has at most one request per type
# outstanding in normal operation, so this is only ever reached by a misbehaving peer.
REQUEST_BACKLOG = 32
# How long a stream for a node held by another connection waits for that connection's
# streams to end before it is refused: a restarted Envoy can reconnect before the server
# has seen its old connection close.
DUPLICATE_GRACE = 1.0

ADS_SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
RTDS_SERVICE = rtds_pb2.DESCRIPTOR.services_by_name["RuntimeDiscoveryService"].full_name
ECDS_SERVICE = config_discovery_pb2.DESCRIPTOR.services_by_name[
    "ExtensionConfigDiscoveryService"
].full_name

# Called with (node id, refused peer, peer holding the node) when a duplicate is refused.
OnDuplicate = Callable[[str, str, str], None]


class ResourceSource(Protocol):
    """Fills the cache for a sidecar the first time it connects."""

    def ensure(self, node: base_pb2.Node) -> None: ...


@dataclass
class _OpenStream:
    """One stream being served: its key in the registry, the one type it carries (None:
    ADS, any type) and its protocol state."""

    key: int
    served: str | None
    state: StreamState = field(default_factory=StreamState)


class XdsStreams:
    """The stream loop every xDS service runs, over one cache, registry and source."""

    def __init__(
        self,
        cache: SnapshotCache,
        registry: SidecarRegistry,
        source: ResourceSource,
        clock: Callable[[], float] = time.monotonic,
        on_duplicate: OnDuplicate | None = None,
        duplicate_grace: float = DUPLICATE_GRACE,
    ) -> None:
        self._cache = cache
        self._registry = registry
        self._source = source
        self._clock = clock
        self._on_duplicate = on_duplicate
        self._duplicate_grace = duplicate_grace

    async def _run(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
        served: str | None,
    ) -> None:
        """Serve one stream carrying `served` (None: ADS, every type) until it ends."""
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
            await _check_type(first, served, context)
            stream = _OpenStream(await self._admit(first.node, served, context), served)
            await self._serve(first, stream, events, context)
        finally:
            reader.cancel()

    async def _admit(
        self, node: base_pb2.Node, served: str | None, context: grpc.aio.ServicerContext
    ) -> int:
        """Register the stream, or refuse it (ALREADY_EXISTS) while another connection
        holds the node id: two Envoys sharing an id must not mix their evidence."""
        peer = context.peer()
        try:
            return self._registry.connected(node, peer, served)
        except NodeHeld:
            await self._registry.released(node.id, self._duplicate_grace)
        try:
            return self._registry.connected(node, peer, served)
        except NodeHeld as held:
            log.warning("duplicate node id refused", node=node.id, peer=peer, holder=held.holder)
            if self._on_duplicate is not None:
                try:
                    self._on_duplicate(node.id, peer, held.holder)
                except Exception:  # its record is lost, the refusal stands
                    log.exception("duplicate node id: callback failed", node=node.id)
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(held))

    async def _serve(
        self,
        first: discovery_pb2.DiscoveryRequest,
        stream: _OpenStream,
        events: _Inbox,
        context: grpc.aio.ServicerContext,
    ) -> None:
        node = first.node
        bound = log.bind(node=node.id)
        sidecar = self._registry.get(node.id)
        if sidecar is not None and sidecar.streams == 1:
            bound.info("sidecar connected", cluster=node.cluster, peer=context.peer())
        heartbeat = _Heartbeat(events)
        cancel_watch = self._cache.watch(node.id, events.notify)
        try:
            self._source.ensure(node)
            event: object = first
            while event is not _CLOSED:
                if isinstance(event, discovery_pb2.DiscoveryRequest):
                    await _check_type(event, stream.served, context)
                    self._on_request(node.id, stream, event, bound)
                await self._send_due(node.id, stream, context)
                snapshot = self._cache.get(node.id) or {}
                heartbeat.arm(stream.state.next_heartbeat(snapshot), self._clock)
                event = await events.get()
        finally:
            heartbeat.arm(None, self._clock)
            cancel_watch()
            self._registry.disconnected(node.id, stream.key)
            if sidecar is not None and not sidecar.connected:
                bound.info("sidecar disconnected")

    def _on_request(
        self,
        node_id: str,
        stream: _OpenStream,
        request: discovery_pb2.DiscoveryRequest,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        outcome = stream.state.on_request(request)
        type_url = outcome.type_url
        short = types.short_name(type_url)
        subscription = stream.state.states[type_url].names
        self._registry.subscribed(node_id, type_url, subscription, stream.key)
        if outcome.verdict is Verdict.ACK and outcome.response is not None:
            self._registry.record_ack(
                node_id, type_url, outcome.response, self._clock(), stream.key
            )
        elif outcome.verdict is Verdict.NACK and outcome.response is not None:
            error = outcome.error or ""
            self._registry.record_nack(
                node_id, type_url, outcome.response, error, self._clock(), stream.key
            )
            bound.warning(
                "sidecar rejected config",
                type=short,
                names=sorted(subscription),
                version=outcome.response.version,
                error=outcome.error,
            )
        elif outcome.verdict is Verdict.STALE:
            bound.debug("stale nonce", type=short, nonce=request.response_nonce)

    async def _send_due(
        self, node_id: str, stream: _OpenStream, context: grpc.aio.ServicerContext
    ) -> None:
        snapshot = self._cache.get(node_id) or {}
        for response, sent in stream.state.due_responses(snapshot, self._clock()):
            self._registry.record_sent(node_id, response.type_url, sent, stream.key)
            await context.write(response.payload)  # bytes: the handlers have no serializer


class AdsServer(XdsStreams, ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """ADS: every type on one stream (full-mesh sidecars)."""

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._run(request_iterator, context, None)


class RuntimeServer(XdsStreams, rtds_pb2_grpc.RuntimeDiscoveryServiceServicer):
    """RTDS on its own service: the leased runtime layer of an overlay sidecar."""

    async def StreamRuntime(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._run(request_iterator, context, types.RUNTIME)


class ExtensionConfigServer(
    XdsStreams, config_discovery_pb2_grpc.ExtensionConfigDiscoveryServiceServicer
):
    """ECDS on its own service: one stream per fault slot of an overlay sidecar."""

    async def StreamExtensionConfigs(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._run(request_iterator, context, types.EXTENSION_CONFIG)


def add_xds_services(
    server: grpc.aio.Server,
    cache: SnapshotCache,
    registry: SidecarRegistry,
    source: ResourceSource,
    *,
    per_type: bool,
    on_duplicate: OnDuplicate | None = None,
) -> tuple[str, ...]:
    """Serve sidecars on `server`: ADS for a full mesh (faultplane owns every type), or,
    `per_type`, RTDS and ECDS on their own services for overlay sidecars (their ADS
    belongs to another control plane), and ADS for node agents. Delta xDS is not offered
    (UNIMPLEMENTED).

    Returns the full names of the services added, for health checking.
    """
    parts = (cache, registry, source)
    if not per_type:
        ads = AdsServer(*parts, on_duplicate=on_duplicate)
        _add_stream(server, ADS_SERVICE, "StreamAggregatedResources", ads)
        return (ADS_SERVICE,)
    runtime = RuntimeServer(*parts, on_duplicate=on_duplicate)
    _add_stream(server, RTDS_SERVICE, "StreamRuntime", runtime)
    slots = ExtensionConfigServer(*parts, on_duplicate=on_duplicate)
    _add_stream(server, ECDS_SERVICE, "StreamExtensionConfigs", slots)
    # ADS too, for node agents (their kernel faults): overlay sidecars never open it here.
    ads = AdsServer(*parts, on_duplicate=on_duplicate)
    _add_stream(server, ADS_SERVICE, "StreamAggregatedResources", ads)
    return (RTDS_SERVICE, ECDS_SERVICE, ADS_SERVICE)


def _add_stream(server: grpc.aio.Server, service: str, method: str, servicer: object) -> None:
    """Register the service's one state-of-the-world method, writing responses as the
    bytes `wire` built (no response serializer). Its other methods (delta xDS) are not
    registered: gRPC answers them UNIMPLEMENTED."""
    handler = grpc.stream_stream_rpc_method_handler(
        getattr(servicer, method),
        request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
        response_serializer=None,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )


async def _check_type(
    request: discovery_pb2.DiscoveryRequest,
    served: str | None,
    context: grpc.aio.ServicerContext,
) -> None:
    """A per-type stream carries its one type: a request without a type_url is of that
    type (the xDS spec lets per-type clients omit it), one of another type is refused."""
    if served is None:
        return
    if not request.type_url:
        request.type_url = served
    elif request.type_url != served:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"type_url: this stream serves only {types.short_name(served)} ({served}),"
            f" not {request.type_url!r}",
        )


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
