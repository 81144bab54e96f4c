"""The records of the replicas' shared state (faultplane.store.postgres_replicas), apart
from it so that reading them needs no database driver."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SidecarRow:
    """One sidecar as its holding replica publishes it."""

    node_id: str
    cluster: str
    metadata: dict[str, object]
    connected_at: float | None


@dataclass(frozen=True)
class RemoteSidecar:
    """A sidecar connected to another replica (whose heartbeat is fresh)."""

    replica: str
    node_id: str
    cluster: str
    metadata: dict[str, object]
    connected_at: float | None


@dataclass(frozen=True)
class ReplicaRow:
    name: str
    started_at: float
    heartbeat_at: float
    xds_address: str
    api_address: str
    stopped_at: float | None
