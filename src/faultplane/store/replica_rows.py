"""The records of the replicas' shared state (faultplane.store.postgres_replicas), apart
from it so that reading them needs no database driver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from faultplane.store.base import StoreError


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


@dataclass(frozen=True)
class FaultChange:
    """One fault an owner wants on a sidecar: its delivery key (the part id), whether its
    keys are on, at what level, and until when (epoch seconds) while on."""

    fault_key: str
    enabled: bool
    level: float
    lease_until: float | None


@dataclass(frozen=True)
class DesiredFault:
    """An owner's fault on a sidecar as stored; `removed`: withdrawn (kept so the
    withdrawal has a sequence number its evidence can name)."""

    node_id: str
    fault_key: str
    injection_id: str
    owner: str
    enabled: bool
    level: float
    lease_until: float | None
    removed: bool
    seq: int


@dataclass(frozen=True)
class FaultEvidence:
    """The holding `replica`'s record that the sidecar answered a state carrying every
    fault `owner` had set on it up to `seq`: ACKed, or NACKed with Envoy's error."""

    node_id: str
    owner: str
    seq: int
    replica: str
    acked: bool
    version: str
    error: str = ""


class LeaseLost(StoreError):
    """A write of an injection by a replica that no longer owns it (another took its
    lease over, with a higher fencing token): refused, changing nothing."""


class Fence(Protocol):
    """What a replica's writes of injections are checked against (see
    faultplane.store.postgres_leases): its name, the lease length a new injection's first
    write takes, and the token it holds per injection."""

    owner: str
    ttl: float

    def token(self, injection_id: str) -> int | None:
        """The token held for it; None for a new injection (its first write claims it).
        Raises LeaseLost for one this replica lost."""
        ...

    def granted(self, injection_id: str, token: int) -> None:
        """A write under `token` committed."""
        ...
