"""What every sidecar has been sent, has ACKed and has NACKed, per xDS type and per stream.

This is the evidence the lifecycle relies on: "sidecar S runs generation g of type T" is
true exactly when every open stream of S that serves T ACKed a response carrying
generation g or newer (the cache's content is cumulative, so a newer generation includes
g's change). A full-mesh sidecar has one stream, ADS, serving every type; an overlay
sidecar has one per-type stream for its runtime layer and one per fault slot (ECDS), each
the only evidence about its own slot.

A NACK is evidence only against the generation it answered: when changes g < h are
coalesced into one response h and that is NACKed, the NACK may be h's fault alone, so the
waiter for g keeps waiting (g lands once h's change is withdrawn) and, should it time out,
says that a later response was NACKed.

One node id belongs to one connection at a time: a second connection opening streams for
a node whose first connection still has streams open is refused (`NodeHeld`), so that two
Envoys sharing an id never mix their evidence.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from faultplane.observability import metrics
from faultplane.xds import types
from faultplane.xds.sidecar import (
    NOTHING_SENT,
    AckOutcome,
    AckTimeout,
    NodeHeld,
    SidecarStatus,
    StreamStatus,
    TypeStatus,
    least_acked,
)
from faultplane.xds.stream import Sent

__all__ = [
    "AckOutcome",
    "AckTimeout",
    "Answer",
    "NodeHeld",
    "SidecarRegistry",
    "SidecarStatus",
    "StreamStatus",
    "TypeStatus",
]


# What a wait ends with: the answer, or the timeout (with any later NACK it noted).
Answer = AckOutcome | AckTimeout


class _Batch:
    """The answers of one push: one future and one timer for all its sidecars, not one
    of each per sidecar (a fleet-wide push has them by the ten thousand)."""

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.answers: list[Answer | None] = [None] * size
        self.pending = size
        self.future: asyncio.Future[list[Answer]] = loop.create_future()

    def answer(self, index: int, answer: Answer) -> None:
        if self.answers[index] is not None:
            return
        self.answers[index] = answer
        self.pending -= 1
        if not self.pending and not self.future.done():
            self.future.set_result(self.answers)  # type: ignore[arg-type]


@dataclass(eq=False)
class _Waiter:
    generation: int
    batch: _Batch
    index: int
    later_nack: AckOutcome | None = None

    def resolve(self, outcome: AckOutcome) -> None:
        self.batch.answer(self.index, outcome)


class SidecarRegistry:
    def __init__(self) -> None:
        self._sidecars: dict[str, SidecarStatus] = {}
        # (node, type) -> the generations awaited and their futures. Indexed so that an
        # ACK resolves its own sidecar's waiters without scanning the whole fleet's.
        self._waiters: dict[tuple[str, str], list[_Waiter]] = {}
        self._released: dict[str, asyncio.Event] = {}  # node -> set when its last stream ends
        self._keys = itertools.count(1)
        # Told of every sidecar that (re)connects, after it is registered (the queue
        # re-plans: a queued experiment's targets may have just come back).
        self.on_connect: list[Callable[[str], None]] = []

    def connected(self, node: base_pb2.Node, peer: str = "", served: str | None = None) -> int:
        """Open a stream of `node` from connection `peer`, carrying `served` (None: ADS);
        returns the stream's key for the `record_*` calls and `disconnected`.

        Raises `NodeHeld`, changing nothing, when the node's streams are open on another
        connection.
        """
        sidecar = self._sidecars.get(node.id)
        if sidecar is not None and sidecar.connected and sidecar.peer != peer:
            raise NodeHeld(node.id, peer, sidecar.peer)
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        if sidecar is None:
            sidecar = self._sidecars[node.id] = SidecarStatus(node.id, node.cluster, metadata)
        else:
            sidecar.cluster, sidecar.metadata = node.cluster, metadata
        if not sidecar.connected:
            metrics.SIDECARS_CONNECTED.inc()
            # A new connection starts from nothing: what the old one sent is not what this
            # Envoy (possibly restarted) holds.
            sidecar.types.clear()
            for listener in self.on_connect:
                listener(node.id)
        key = next(self._keys)
        sidecar.open_streams[key] = StreamStatus(key, peer, served)
        sidecar.peer = peer
        sidecar.connected_at = time.time()
        return key

    def disconnected(self, node_id: str, stream: int | None = None) -> None:
        sidecar = self._sidecars[node_id]
        closed = sidecar.open_streams.pop(self._stream(sidecar, stream, None).key)
        if not sidecar.connected:
            metrics.SIDECARS_CONNECTED.dec()
            sidecar.disconnected_at = time.time()
            released = self._released.pop(node_id, None)
            if released is not None:
                released.set()
            return
        # The closed stream may have been the one the others were waiting on.
        for type_url in {*closed.names, *closed.types}:
            self._settle(sidecar, type_url)

    async def released(self, node_id: str, timeout: float) -> bool:
        """Whether the node has no open stream, waiting up to `timeout` seconds for its
        last one to end."""
        sidecar = self._sidecars.get(node_id)
        if sidecar is None or not sidecar.connected:
            return True
        event = self._released.setdefault(node_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def get(self, node_id: str) -> SidecarStatus | None:
        return self._sidecars.get(node_id)

    def departed(self, before: float) -> list[str]:
        """Sidecars whose last stream ended before `before` (epoch seconds)."""
        return [
            sidecar.node_id
            for sidecar in self._sidecars.values()
            if not sidecar.connected
            and sidecar.disconnected_at is not None
            and sidecar.disconnected_at < before
        ]

    def forget(self, node_id: str) -> bool:
        """Drop a disconnected sidecar's record, unless something still waits on it; what
        it acknowledged stays in its injections' evidence. A fleet whose pods come and go
        (each a new node id) would otherwise grow the registry for ever."""
        sidecar = self._sidecars.get(node_id)
        if sidecar is None or sidecar.connected:
            return False
        if any(node == node_id for node, _ in self._waiters):
            return False
        del self._sidecars[node_id]
        return True

    def sidecars(self) -> list[SidecarStatus]:
        return sorted(self._sidecars.values(), key=lambda s: s.node_id)

    def subscribed(
        self, node_id: str, type_url: str, names: frozenset[str], stream: int | None = None
    ) -> None:
        """The stream now asks for these resources of `type_url` (empty: a wildcard)."""
        sidecar = self._sidecars[node_id]
        self._stream(sidecar, stream, type_url).names[type_url] = names

    def subscriptions(self, node_id: str, type_url: str) -> frozenset[str]:
        """The resource names the node's open streams of `type_url` subscribe to: for
        ECDS, the fault slots its config declares (as far as its listeners are up)."""
        sidecar = self._sidecars.get(node_id)
        if sidecar is None:
            return frozenset()
        return frozenset().union(
            *(s.names.get(type_url, frozenset()) for s in sidecar.streams_of(type_url))
        )

    def record_sent(
        self, node_id: str, type_url: str, sent: Sent, stream: int | None = None
    ) -> None:
        sidecar = self._sidecars[node_id]
        on = self._stream(sidecar, stream, type_url)
        wall = time.time()
        for status in (on.status(type_url), sidecar.status(type_url)):
            status.sent_version, status.sent_generation = sent.version, sent.generation
            status.sent_at = wall
        _metrics(type_url).responses.inc()

    def record_ack(
        self, node_id: str, type_url: str, sent: Sent, now: float, stream: int | None = None
    ) -> None:
        sidecar = self._sidecars[node_id]
        status = self._stream(sidecar, stream, type_url).status(type_url)
        status.acked_version, status.acked_generation = sent.version, sent.generation
        status.acked_at = time.time()
        counters = _metrics(type_url)
        counters.acks.inc()
        counters.push_to_ack.observe(now - sent.sent_at)
        self._settle(sidecar, type_url)

    def record_nack(
        self,
        node_id: str,
        type_url: str,
        sent: Sent,
        error: str,
        now: float,
        stream: int | None = None,
    ) -> None:
        sidecar = self._sidecars[node_id]
        on = self._stream(sidecar, stream, type_url)
        error = on.named(type_url, error)
        wall = time.time()
        for status in (on.status(type_url), sidecar.status(type_url)):
            status.nacked_version, status.nacked_generation = sent.version, sent.generation
            status.nacked_at = wall
            status.last_error = error
        counters = _metrics(type_url)
        counters.nacks.inc()
        counters.push_to_ack.observe(now - sent.sent_at)
        outcome = AckOutcome(False, sent.version, error)
        for waiter in self._waiters.get((node_id, type_url), ()):
            if waiter.generation == sent.generation:
                waiter.resolve(outcome)
            elif waiter.generation < sent.generation:
                waiter.later_nack = outcome  # not its evidence: noted for its timeout

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome:
        """Wait until every open stream of the sidecar carrying `type_url` has ACKed
        generation >= `generation`, or one NACKs exactly `generation`.

        A NACK of a later generation does not end the wait: that response also carried
        other changes, and the NACK may be theirs. A sidecar with no such stream open is
        waited for (it may be reconnecting). Raises `AckTimeout` (a TimeoutError) when
        neither happens within `timeout` seconds; its `later_nack` tells whether a later
        response carrying this change was NACKed meanwhile.
        """
        return await one_answer(self.wait_many, node_id, type_url, generation, timeout)

    async def wait_many(
        self, waits: list[tuple[str, int]], type_url: str, timeout: float
    ) -> list[Answer]:
        """`wait_for` of every (sidecar, generation) at once, all bounded by the same
        `timeout`; each answer in order, a timeout as an `AckTimeout` value."""
        loop = asyncio.get_running_loop()
        batch = _Batch(len(waits), loop)
        waiting: list[tuple[tuple[str, str], _Waiter]] = []
        for index, (node_id, generation) in enumerate(waits):
            known = self._known(node_id, type_url, generation)
            if known is not None:
                batch.answer(index, known)
                continue
            key = (node_id, type_url)
            waiter = _Waiter(generation, batch, index)
            self._waiters.setdefault(key, []).append(waiter)
            waiting.append((key, waiter))
        if not waiting:
            return batch.answers  # type: ignore[return-value]
        timer = loop.call_later(timeout, _expire, waiting)
        try:
            return await batch.future
        finally:
            timer.cancel()
            for key, waiter in waiting:
                waiters = self._waiters[key]
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    def _known(self, node_id: str, type_url: str, generation: int) -> AckOutcome | None:
        """The answer the sidecar has already given to `generation`, if any."""
        sidecar = self._sidecars.get(node_id)
        streams = sidecar.streams_of(type_url) if sidecar is not None else []
        if not streams:
            return None
        least = least_acked(streams, type_url)
        if least.acked_generation >= generation:
            return AckOutcome(True, least.acked_version)
        for stream in streams:
            status = stream.types.get(type_url, NOTHING_SENT)
            if status.nacked_generation == generation:
                return AckOutcome(False, status.nacked_version, status.last_error)
        return None

    def _stream(
        self, sidecar: SidecarStatus, key: int | None, type_url: str | None
    ) -> StreamStatus:
        """The stream `key`; None (callers with one stream per sidecar) means the one
        carrying `type_url`, else the sidecar's first open stream."""
        if key is not None:
            return sidecar.open_streams[key]
        carrying = sidecar.streams_of(type_url) if type_url is not None else []
        return (carrying or list(sidecar.open_streams.values()))[0]

    def _settle(self, sidecar: SidecarStatus, type_url: str) -> None:
        """Bring the sidecar's ACKed state of `type_url` to that of its least advanced
        open stream, and resolve the waiters that state satisfies."""
        streams = sidecar.streams_of(type_url)
        if not streams:
            return
        least = least_acked(streams, type_url)
        status = sidecar.status(type_url)
        status.acked_version, status.acked_generation = least.acked_version, least.acked_generation
        status.acked_at = least.acked_at
        outcome = AckOutcome(True, least.acked_version)
        for waiter in self._waiters.get((sidecar.node_id, type_url), ()):
            if waiter.generation <= least.acked_generation:
                waiter.resolve(outcome)


def _expire(waiting: list[tuple[tuple[str, str], _Waiter]]) -> None:
    for _, waiter in waiting:
        waiter.batch.answer(waiter.index, AckTimeout(waiter.generation, waiter.later_nack))


@dataclass(frozen=True)
class _TypeMetrics:
    """One xDS type's metric children, looked up once rather than on every message."""

    responses: Any
    acks: Any
    nacks: Any
    push_to_ack: Any


_METRICS: dict[str, _TypeMetrics] = {}


def _metrics(type_url: str) -> _TypeMetrics:
    found = _METRICS.get(type_url)
    if found is None:
        short = types.short_name(type_url)
        found = _METRICS[type_url] = _TypeMetrics(
            metrics.XDS_RESPONSES.labels(short),
            metrics.XDS_ACKS.labels(short),
            metrics.XDS_NACKS.labels(short),
            metrics.XDS_PUSH_TO_ACK.labels(short),
        )
    return found


WaitMany = Callable[[list[tuple[str, int]], str, float], Awaitable[list[Answer]]]


async def one_answer(
    wait_many: WaitMany, node_id: str, type_url: str, generation: int, timeout: float
) -> AckOutcome:
    """`wait_for` from a plane's `wait_many`: the one answer, a timeout raised."""
    [answer] = await wait_many([(node_id, generation)], type_url, timeout)
    if isinstance(answer, AckTimeout):
        raise answer
    return answer
