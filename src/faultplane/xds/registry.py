"""What every sidecar has been sent, has ACKed and has NACKed, per xDS type.

This is the evidence the lifecycle relies on: "sidecar S runs generation g of type T" is
true exactly when S ACKed a response carrying generation g or newer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from faultplane import metrics
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
        return self.types.setdefault(type_url, TypeStatus())


@dataclass(frozen=True)
class AckOutcome:
    """How a sidecar answered the first response carrying the awaited generation."""

    acked: bool
    version: str
    error: str = ""


class SidecarRegistry:
    def __init__(self) -> None:
        self._sidecars: dict[str, SidecarStatus] = {}
        self._waiters: list[tuple[str, str, int, asyncio.Future[AckOutcome]]] = []

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
        metrics.XDS_RESPONSES.labels(types.short_name(type_url)).inc()

    def record_ack(self, node_id: str, type_url: str, sent: Sent, now: float) -> None:
        status = self._sidecars[node_id].status(type_url)
        status.acked_version, status.acked_generation = sent.version, sent.generation
        status.acked_at = time.time()
        short = types.short_name(type_url)
        metrics.XDS_ACKS.labels(short).inc()
        metrics.XDS_PUSH_TO_ACK.labels(short).observe(now - sent.sent_at)
        self._resolve(node_id, type_url, sent.generation, AckOutcome(True, sent.version))

    def record_nack(self, node_id: str, type_url: str, sent: Sent, error: str, now: float) -> None:
        status = self._sidecars[node_id].status(type_url)
        status.nacked_version, status.nacked_generation = sent.version, sent.generation
        status.nacked_at = time.time()
        status.last_error = error
        short = types.short_name(type_url)
        metrics.XDS_NACKS.labels(short).inc()
        metrics.XDS_PUSH_TO_ACK.labels(short).observe(now - sent.sent_at)
        self._resolve(node_id, type_url, sent.generation, AckOutcome(False, sent.version, error))

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome:
        """Wait until the sidecar ACKs generation >= `generation` of `type_url`, or NACKs it.

        Raises TimeoutError when neither happens within `timeout` seconds.
        """
        sidecar = self._sidecars.get(node_id)
        if sidecar is not None and sidecar.connected:
            status = sidecar.status(type_url)
            if status.acked_generation >= generation:
                return AckOutcome(True, status.acked_version)
        future: asyncio.Future[AckOutcome] = asyncio.get_running_loop().create_future()
        waiter = (node_id, type_url, generation, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(waiter)

    def _resolve(self, node_id: str, type_url: str, generation: int, outcome: AckOutcome) -> None:
        for waiter_node, waiter_type, wanted, future in self._waiters:
            if (
                waiter_node == node_id
                and waiter_type == type_url
                and generation >= wanted
                and not future.done()
            ):
                future.set_result(outcome)
