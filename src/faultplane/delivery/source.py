"""Binds the mesh model to the cache: what each sidecar should have, by node id.

A sidecar's desired state is `render_faults(base resources of its pod, its faults)`; the
scheduler only says which faults a sidecar should carry, and waits for ACKs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import structlog
from envoy.config.core.v3 import base_pb2

from faultplane.delivery.identity import Identity
from faultplane.delivery.plane import lease_resources
from faultplane.delivery.sidecars import RegistryBacked
from faultplane.model.mesh import Mesh
from faultplane.render.faults import FaultAssignment, render_faults
from faultplane.render.resources import Resources, SidecarLayout, empty_resources, sidecar_resources
from faultplane.slo.sources import admin_address
from faultplane.xds import types
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import AckOutcome, Answer, SidecarRegistry, SidecarStatus

log = structlog.get_logger("faultplane.xds")
RENDER_CACHE_SIZE = 1024


class MeshSource(RegistryBacked):
    """Serves each pod of the mesh its base resources plus its faults; unknown nodes get nothing."""

    # The type whose ACK says a fault is armed (overlay mode: its ECDS slots).
    arm_type = types.ROUTE

    def __init__(
        self,
        mesh: Mesh,
        cache: SnapshotCache,
        registry: SidecarRegistry,
        layout: SidecarLayout,
        deadman_ttl: float,
    ) -> None:
        self.mesh = mesh
        self.layout = layout
        self.deadman_ttl = deadman_ttl
        self._cache = cache
        self._registry = registry
        # The base routes of each service (they depend only on the service). Nothing is
        # kept per sidecar: the cache holds its packed (interned, shared) resources, and
        # a fleet's worth of unpacked messages would cost kilobytes per stream.
        self._routes: dict[str, Resources] = {}
        self._rendered: OrderedDict[tuple[str, tuple[FaultAssignment, ...]], Resources] = (
            OrderedDict()
        )

    def ensure(self, node: base_pb2.Node) -> None:
        if self._cache.has(node.id):
            return
        base = self._base_of(node.id)
        if base is None:
            log.warning("unknown sidecar: not a pod of the mesh, serving it nothing", node=node.id)
            self._cache.set_resources(node.id, empty_resources())
            return
        self._cache.set_resources(node.id, base)

    def render(self, node_id: str, faults: Sequence[FaultAssignment]) -> Resources:
        """The routes and runtime layer the sidecar would be sent with these faults
        (raises SlotsExhausted).

        Routes depend only on the pod's service, so one rendering serves every sidecar of
        a service carrying the same faults: a fleet-wide change renders (and the cache
        serializes) once, not once per sidecar.
        """
        pod = self.mesh.pod(node_id)
        if pod is None:
            raise KeyError(f"{node_id} is not a pod of the mesh")
        key = (pod.service, tuple(faults))
        rendered = self._rendered.get(key)
        if rendered is None:
            routes = self._routes.get(pod.service)
            if routes is None:
                base = sidecar_resources(self.mesh, pod, self.layout)
                routes = self._routes[pod.service] = {types.ROUTE: base[types.ROUTE]}
            full = render_faults(routes, faults, self.layout.fault_slots)
            rendered = {t: full[t] for t in (types.ROUTE, types.RUNTIME)}
            self._rendered[key] = rendered
            if len(self._rendered) > RENDER_CACHE_SIZE:
                self._rendered.popitem(last=False)
        else:
            self._rendered.move_to_end(key)
        return rendered

    def set_faults(
        self, node_id: str, faults: Sequence[FaultAssignment], lease_until: float | None
    ) -> dict[str, int]:
        """Make `faults` the sidecar's faults; returns the generation per type to await.

        While any fault is switched on, the runtime layer is leased for `deadman_ttl`
        seconds (re-sent every third of it) and never beyond `lease_until`.
        """
        if not self._cache.has(node_id):
            # Faults set before the sidecar ever connected (a restart resuming them).
            base = self._base_of(node_id)
            if base is not None:
                self._cache.set_resources(node_id, base)
        # Faults only ever touch routes and runtime: listeners and clusters stay as they are.
        resources = self.render(node_id, faults)
        return lease_resources(
            self._cache, node_id, resources, faults, self.deadman_ttl, lease_until
        )

    def candidates(self, service: str, namespace: str | None = None) -> list[SidecarStatus]:
        """Connected sidecars of `service` that are pods of the mesh (faults can land there);
        with `namespace`, only those whose metadata names it (mesh pods name none)."""
        return [
            sidecar
            for sidecar in self._registry.sidecars()
            if sidecar.connected
            and sidecar.service == service
            and namespace in (None, sidecar.metadata.get("namespace"))
            and self.mesh.pod(sidecar.node_id) is not None
        ]

    def identity(self, sidecar: SidecarStatus) -> Identity:
        """What its node says it is: `service` and `labels` metadata, as the bootstrap
        template writes them (faultplane's own mesh is not Istio-shaped)."""
        namespace = sidecar.metadata.get("namespace")
        return Identity(
            sidecar.service,
            sidecar.labels,
            namespace if isinstance(namespace, str) and namespace else None,
            sidecar.node_id,
        )

    def stats_address(self, node_id: str) -> str | None:
        """The sidecar's admin address, 127.0.0.1:<its `admin_port` metadata> (the bootstrap
        template binds admin there); None for a sidecar never seen. Raises ValueError when
        the metadata's port is not a port, so the caller can say why it cannot read it."""
        sidecar = self._registry.get(node_id)
        return None if sidecar is None else admin_address(sidecar.metadata.get("admin_port"))

    async def wait_for(
        self, node_id: str, type_url: str, generation: int, timeout: float
    ) -> AckOutcome:
        return await self._registry.wait_for(node_id, type_url, generation, timeout)

    async def wait_many(
        self, waits: list[tuple[str, int]], type_url: str, timeout: float
    ) -> list[Answer]:
        return await self._registry.wait_many(waits, type_url, timeout)

    def _base_of(self, node_id: str) -> Resources | None:
        """The pod's resources without faults, rendered afresh (once per connection: the
        cache keeps them packed); None for a node that is no pod of the mesh."""
        pod = self.mesh.pod(node_id)
        return None if pod is None else sidecar_resources(self.mesh, pod, self.layout)
