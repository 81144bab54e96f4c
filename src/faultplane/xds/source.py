"""Binds the mesh model to the cache: what each sidecar should have, by node id."""

from __future__ import annotations

import structlog
from envoy.config.core.v3 import base_pb2

from faultplane.mesh import Mesh
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.resources import SidecarLayout, empty_resources, sidecar_resources

log = structlog.get_logger("faultplane.xds")


class MeshSource:
    """Serves each pod of the mesh its base resources; unknown nodes get nothing."""

    def __init__(self, mesh: Mesh, cache: SnapshotCache, layout: SidecarLayout) -> None:
        self.mesh = mesh
        self.layout = layout
        self._cache = cache

    def ensure(self, node: base_pb2.Node) -> None:
        if self._cache.has(node.id):
            return
        pod = self.mesh.pod(node.id)
        if pod is None:
            log.warning("unknown sidecar: not a pod of the mesh, serving it nothing", node=node.id)
            self._cache.set_resources(node.id, empty_resources())
            return
        self._cache.set_resources(node.id, sidecar_resources(self.mesh, pod, self.layout))
