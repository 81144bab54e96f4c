"""What every sidecar has been sent, has ACKed and has NACKed, per xDS type.

This is the evidence the lifecycle relies on: "sidecar S runs generation g of type T" is
true exactly when S ACKed a response carrying generation g or newer (the cache's content
is cumulative, so a newer generation includes g's change). A NACK is evidence only against
the generation it answered: when changes g < h are coalesced into one response h and that
is NACKed, the NACK may be h's fault alone, so the waiter for g keeps waiting (g lands
once h's change is withdrawn) and, should it time out, says that a later response was
NACKed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from faultplane.observability import metrics
from faultplane.xds import types
from faultplane.xds.stream import Sent


@dataclass
class TypeStatus:
    sent_version: str = ""
    sent_generation: int = 0
    sent_at: float | None = None
    acked_version: str = ""
    acked_generation: int = 0
    acked_at: float | None = None
    nacked_version: str = ""
    nacked_generation: int = 0
    nacked_at: float | None = None
    last_error: str = ""


@dataclass
class SidecarStatus:
    node_id: str
    cluster: str
    metadata: Mapping[str, Any]
    streams: int = 0
    connected_at: float | None = None
    disconnected_at: float | None = None
    types: dict[str, TypeStatus] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.streams > 0

    @property
    def service(self) -> str:
        return str(self.metadata.get("service") or self.cluster)

    @property
    def labels(self) -> dict[str, str]:
        labels = self.metadata.get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def status(self, type_url: str) -> TypeStatus:
        found = self.types.get(type_url)
        if found is None:
            found = self.types[type_url] = TypeStatus()
        return found


@dataclass(frozen=True)
class AckOutcome:
    """How a sidecar answered: an ACK of the awaited generation or newer, or a NACK of
    exactly the awaited generation."""

    acked: bool
    version: str
    error: str = ""


class AckTimeout(TimeoutError):
    """No ACK of the awaited generation (nor NACK of exactly it) in time.

    `later_nack` is set when a later response, which also carried the awaited change, was
    NACKed meanwhile: the change may be fine, but it never got through on its own.
    """

    def __init__(self, generation: int, later_nack: AckOutcome | None) -> None:
        self.generation = generation
        self.later_nack = later_nack
        message = f"no ACK of generation {generation}"
        if later_nack is not None:
            message += (
                f"; a later response carrying it (version {later_nack.version}) was NACKed:"
                f" {later_nack.error}"
            )
        super().__init__(message)


@dataclass(eq=False)
class _Waiter:
    generation: int
    future: asyncio.Future[AckOutcome]
    later_nack: AckOutcome | None = None


class SidecarRegistry:
    def __init__(self) -> None:
        self._sidecars: dict[str, SidecarStatus] = {}
        # (node, type) -> the generations awaited and their futures. Indexed so that an
        # ACK resolves its own sidecar's waiters without scanning the whole fleet's.
        self._waiters: dict[tuple[str, str], list[_Waiter]] = {}

    def connected(self, node: base_pb2.Node) -> SidecarStatus:
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        sidecar = self._sidecars.get(node.id)
        if sidecar is None:
            sidecar = self._sidecars[node.id] = SidecarStatus(node.id, node.cluster, metadata)
        else:
            sidecar.cluster, sidecar.metadata = node.cluster, metadata
        if sidecar.streams == 0:
            metrics.SIDECARS_CONNECTED.inc()
            # A new stream starts from nothing: what the old one sent is not what this
            # Envoy (possibly restarted) holds.
            sidecar.types.clear()
        sidecar.streams += 1
        sidecar.connected_at = time.time()
        return sidecar

    def disconnected(self, node_id: str) -> None:
        sidecar = self._sidecars[node_id]
        sidecar.streams -= 1
        if sidecar.streams == 0:
            metrics.SIDECARS_CONNECTED.dec()
            sidecar.disconnected_at = time.time()

    def get(self, node_id: str) -> SidecarStatus | None:
        return self._sidecars.get(node_id)

    def sidecars(self) -> list[SidecarStatus]:
        return sorted(self._sidecars.values(), key=lambda s: s.node_id)

    def record_sent(self, node_id: str, type_url: str, sent: Sent) -> None:
        status = self._sidecars[node_id].status(type_url)
        status.sent_version, status.sent_generation = sent.version, sent.generation
        status.sent_at = time.time()
        _metrics(type_url).responses.inc()

    def record_ack(self, node_id: str, type_url: str, sent: Sent, now: float) -> None:
        status = self._sidecars[node_id].status(type_url)
        status.acked_version, status.acked_generation = sent.version, sent.generation
        status.acked_at = time.time()
        counters = _metrics(type_url)
        counters.acks.inc()
        counters.push_to_ack.observe(now - sent.sent_at)
        outcome = AckOutcome(True, sent.version)
        for waiter in self._waiters.get((node_id, type_url), ()):
            if waiter.generation <= sent.generation and not waiter.future.done():
                waiter.future.set_result(outcome)

    def record_nack(self, node_id: str, type_url: str, sent: Sent, error: str, now: float) -> None:
        status = self._sidecars[node_id].status(type_url)
        status.nacked_version, status.nacked_generation = sent.version, sent.generation
        status.nacked_at = time.time()
        status.last_error = error
        counters = _metrics(type_url)
        counters.nacks.inc()
        counters.push_to_ack.observe(now - sent.sent_at)
        outcome = AckOutcome(False, sent.version, error)
        for waiter in self._waiters.get((node_id, type_url), ()):
            if waiter.generation == sent.generation and not waiter.future.done():
                waiter.future.set_result(outcome)
            elif waiter.generation < sent.generation:
                waiter.later_nack = outcome  # not its evidence: noted for its timeout

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome:
        """Wait until the sidecar ACKs generation >= `generation` of `type_url`, or NACKs
        exactly `generation`.

        A NACK of a later generation does not end the wait: that response also carried
        other changes, and the NACK may be theirs. Raises `AckTimeout` (a TimeoutError)
        when neither happens within `timeout` seconds; its `later_nack` tells whether a
        later response carrying this change was NACKed meanwhile.
        """
        sidecar = self._sidecars.get(node_id)
        if sidecar is not None and sidecar.connected:
            status = sidecar.status(type_url)
            if status.acked_generation >= generation:
                return AckOutcome(True, status.acked_version)
            if status.nacked_generation == generation:
                return AckOutcome(False, status.nacked_version, status.last_error)
        loop = asyncio.get_running_loop()
        key = (node_id, type_url)
        waiter = _Waiter(generation, loop.create_future())
        self._waiters.setdefault(key, []).append(waiter)
        # A timer on the future itself: asyncio.wait_for would add a second future and
        # callbacks per waiter, which a fleet-wide push has by the ten thousand.
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter.future
        finally:
            timer.cancel()
            waiters = self._waiters[key]
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[key]


def _expire(waiter: _Waiter) -> None:
    if not waiter.future.done():
        waiter.future.set_exception(AckTimeout(waiter.generation, waiter.later_nack))


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
