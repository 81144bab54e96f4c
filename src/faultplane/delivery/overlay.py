"""Overlay mode's fault plane: any Envoy that connects is a sidecar, served only faults.

Another control plane owns the sidecar's listeners, routes and clusters; faultplane
serves its fault slots (ECDS) and the leased runtime layer (RTDS) over per-type streams,
rendered by faultplane.render.ecds. Who a sidecar is comes from its node metadata
(faultplane.delivery.identity), as the xDS registry recorded it at connect time.

A sidecar whose config lacks a slot a fault needs (no ECDS stream subscribes to it), or
lacks the RTDS layer, can never carry that fault: the push's wait answers with a NACK
naming the sidecar and the slot, so the injection FAILs with that reason rather than
reporting a fault that is not there.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2

from faultplane.delivery.identity import ISTIO_STATS_PORT, Identity, identity_from
from faultplane.delivery.plane import lease_resources, wait_each
from faultplane.delivery.sidecars import RegistryBacked
from faultplane.render.ecds import render_overlay
from faultplane.render.faults import FaultAssignment
from faultplane.render.resources import RUNTIME_LAYER, Resources
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import AckOutcome, Answer, SidecarRegistry, SidecarStatus

RENDER_CACHE_SIZE = 1024
# A sidecar opens its slot streams only once the listeners carrying them are up (after
# RTDS init, or whenever the other control plane's LDS arrives), and reopens each on its
# own backoff: how often a subscription it still lacks is looked for again.
MISSING_POLL_SECONDS = 0.1
_SEE = "see `faultplane overlay envoy`"


@dataclass(frozen=True)
class OverlaySidecar:
    """A connected sidecar as selection sees it: the registry's record and the identity
    its node metadata gives (its labels, not the raw metadata's, are what selectors
    match)."""

    status: SidecarStatus
    identity: Identity

    @property
    def node_id(self) -> str:
        return self.status.node_id

    @property
    def service(self) -> str:
        return self.identity.service

    @property
    def labels(self) -> Mapping[str, str]:
        return self.identity.labels

    @property
    def namespace(self) -> str | None:
        return self.identity.namespace

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.status.metadata


@dataclass(frozen=True)
class _Rendering:
    resources: Resources
    slots: frozenset[str]  # the slots that carry a fault (not `HTTPFault{}`)


class OverlaySource(RegistryBacked):
    """Serves every connecting Envoy its fault slots and runtime layer; implements
    faultplane.delivery.plane.FaultPlane and xds.server.ResourceSource."""

    # The type whose ACK says a fault is armed (full mesh: its routes).
    arm_type = types.EXTENSION_CONFIG

    def __init__(
        self,
        cache: SnapshotCache,
        registry: SidecarRegistry,
        fault_slots: int,
        deadman_ttl: float,
        istio_stats_port: int = ISTIO_STATS_PORT,
        missing_wait: float | None = None,
    ) -> None:
        self.fault_slots = fault_slots
        self.deadman_ttl = deadman_ttl
        self._cache = cache
        self._registry = registry
        self._istio_stats_port = istio_stats_port
        self._missing_wait = missing_wait
        self._slots: dict[str, frozenset[str]] = {}  # node -> slots its faults occupy
        # node -> (the metadata it was read from, the cluster, the identity)
        self._identities: dict[str, tuple[Mapping[str, Any], str, Identity]] = {}
        # Renderings depend on the faults alone, so one serves every sidecar carrying the
        # same faults: a fleet-wide change renders (and the cache packs) once.
        self._rendering = functools.lru_cache(maxsize=RENDER_CACHE_SIZE)(self._render)

    def ensure(self, node: base_pb2.Node) -> None:
        """A new sidecar's desired state, at once: every slot `HTTPFault{}` and the empty
        runtime layer (Envoy's init waits for the layer; silence would block it)."""
        if not self._cache.has(node.id):
            self._cache.set_resources(node.id, self._rendering(()).resources)

    def render(self, node_id: str, faults: Sequence[FaultAssignment]) -> Resources:
        """The slots and runtime layer any sidecar would be sent with these faults
        (raises SlotsExhausted). Shared: never modify what it returns."""
        return self._rendering(tuple(faults)).resources

    def set_faults(
        self, node_id: str, faults: Sequence[FaultAssignment], lease_until: float | None
    ) -> dict[str, int]:
        """Make `faults` the sidecar's faults; returns the generation per type to await.
        The runtime layer is leased while any fault is on; the slots never are."""
        rendering = self._rendering(tuple(faults))
        if rendering.slots:
            self._slots[node_id] = rendering.slots
        else:
            self._slots.pop(node_id, None)
        return lease_resources(
            self._cache, node_id, rendering.resources, faults, self.deadman_ttl, lease_until
        )

    def candidates(self, service: str, namespace: str | None = None) -> list[OverlaySidecar]:
        """Connected sidecars whose identity is `service` (and `namespace`, if given)."""
        found = []
        for status in self._registry.sidecars():
            if not status.connected:
                continue
            identity = self.identity(status)
            if identity.service == service and namespace in (None, identity.namespace):
                found.append(OverlaySidecar(status, identity))
        return found

    def _forgotten(self, node_id: str) -> None:
        self._identities.pop(node_id, None)

    def stats_address(self, node_id: str) -> str | None:
        """HOST:PORT serving the sidecar's `/stats/prometheus`, if its metadata says."""
        sidecar = self._registry.get(node_id)
        return None if sidecar is None else self.identity(sidecar).stats_address

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome:
        """The sidecar's answer to `generation` of `type_url`; a NACK naming the missing
        slot (or RTDS layer) when the sidecar cannot carry its faults at all.

        A subscription still missing is waited for, up to `missing_wait` (default: the
        whole ACK timeout), before the sidecar is judged to lack it: Envoy reconnects each
        of its streams on its own backoff, so after a faultplane restart they come back
        seconds apart. A disconnected sidecar is not judged: the wait is for its
        reconnection, as in full-mesh mode.
        """
        now = time.monotonic()
        deadline = now + timeout
        patience = timeout if self._missing_wait is None else min(timeout, self._missing_wait)
        give_up = now + patience
        missing = self._missing(node_id, type_url)
        while missing is not None and time.monotonic() < give_up:
            await asyncio.sleep(min(MISSING_POLL_SECONDS, max(0.0, give_up - time.monotonic())))
            missing = self._missing(node_id, type_url)
        if missing is not None:
            return AckOutcome(False, "", missing)
        remaining = max(0.0, deadline - time.monotonic())
        return await self._registry.wait_for(node_id, type_url, generation, remaining)

    async def wait_many(
        self, waits: list[tuple[str, int]], type_url: str, timeout: float
    ) -> list[Answer]:
        """One `wait_for` per sidecar: each may first wait for its own subscriptions."""
        return await wait_each(self, waits, type_url, timeout)

    def _missing(self, node_id: str, type_url: str) -> str | None:
        """Why the connected sidecar cannot take its faults' `type_url` part (their slots,
        or the layer that switches them), or None if it can (or carries no fault, or is
        not connected)."""
        slots = self._slots.get(node_id)
        if not slots or not self.is_connected(node_id):
            return None
        if type_url == types.EXTENSION_CONFIG:
            absent = sorted(slots - self._registry.subscriptions(node_id, type_url))
            if absent:
                noun, pronoun = ("slot", "it") if len(absent) == 1 else ("slots", "them")
                return (
                    f"sidecar {node_id} has no fault {noun} {', '.join(absent)} "
                    f"(no ECDS subscription for {pronoun}; {_SEE})"
                )
        if RUNTIME_LAYER not in self._registry.subscriptions(node_id, types.RUNTIME):
            return (
                f"sidecar {node_id} has no RTDS subscription to the runtime layer "
                f"{RUNTIME_LAYER!r}, which switches faults on and leases them ({_SEE})"
            )
        return None

    def identity(self, sidecar: SidecarStatus) -> Identity:
        """The sidecar's identity, read again only when the registry recorded new
        metadata (each stream that opens brings its node)."""
        known = self._identities.get(sidecar.node_id)
        if known is not None and known[0] is sidecar.metadata and known[1] == sidecar.cluster:
            return known[2]
        identity = identity_from(sidecar.cluster, sidecar.metadata, self._istio_stats_port)
        self._identities[sidecar.node_id] = (sidecar.metadata, sidecar.cluster, identity)
        return identity

    def _render(self, faults: tuple[FaultAssignment, ...]) -> _Rendering:
        resources = render_overlay(faults, self.fault_slots)
        slots = frozenset(
            name
            for name, extension in resources[types.EXTENSION_CONFIG].items()
            if extension.typed_config.value  # type: ignore[attr-defined]
        )
        return _Rendering(resources, slots)
