"""Every part of a control server, built from its config before anything starts.

Building is separate from starting so that no part is made as a side effect of starting
another (start order then matters only for what runs, never for what exists), and so that
a test can hold every part of a server it has not started.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from grpc_health.v1 import health

from faultplane.api.gate import Gate
from faultplane.api.ratelimit import RefusalLimiter
from faultplane.api.service import FaultService
from faultplane.api.validate import validate_request
from faultplane.auth.principal import Authenticator
from faultplane.delivery.agents import AgentPlane
from faultplane.delivery.overlay import OverlaySource
from faultplane.delivery.source import MeshSource
from faultplane.delivery.with_agents import PlaneWithAgents
from faultplane.guard.steady_state import SteadyStateGuard
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.preflight import Preflight
from faultplane.lifecycle.retention import Retention
from faultplane.lifecycle.scheduler import Scheduler
from faultplane.model.spec import InjectionSpec
from faultplane.render.resources import SidecarLayout
from faultplane.replicas import default_replica_name
from faultplane.replicas.plane import ReplicatedPlane
from faultplane.replicas.replication import Replication
from faultplane.replicas.sidecars import SharedSidecarRegistry
from faultplane.scheduling.feed import graph_of_mesh
from faultplane.scheduling.graph import DependencyGraph
from faultplane.server.config import ServerConfig
from faultplane.server.duplicates import DuplicateSidecars
from faultplane.slo.baseline import BaselineBook
from faultplane.slo.sources import EnvoySource, HttpClient, PrometheusSource, SloSource
from faultplane.store import SqliteStore, default_db_path, open_postgres_store
from faultplane.store.audit_key import default_key_path, open_audit_key
from faultplane.v1 import faultplane_pb2
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry

if TYPE_CHECKING:
    from faultplane.store.postgres import PostgresStore


@dataclass(frozen=True)
class Guarding:
    """The steady-state parts, present when an SLO catalogue is configured."""

    guard: SteadyStateGuard
    preflight: Preflight
    baseline: BaselineBook


@dataclass(frozen=True)
class Parts:
    config: ServerConfig
    store: SqliteStore | PostgresStore
    journal: Journal
    cache: SnapshotCache
    registry: SidecarRegistry
    source: PlaneWithAgents  # sidecars (mesh or overlay) and node agents' pods
    scheduler: Scheduler
    retention: Retention
    http: HttpClient
    guarding: Guarding | None
    gate: Gate
    service: FaultService
    health: health.aio.HealthServicer
    duplicates: DuplicateSidecars  # audits a second connection claiming a held node id
    scratch: Path | None  # a throwaway database's directory, removed at stop
    # With a PostgreSQL store: this replica's heartbeat, shared registry, and faults
    # across replicas (faultplane.replicas).
    replication: Replication | None = None

    def parse_spec(self, document: Mapping[str, Any], strict: bool = True) -> InjectionSpec:
        """A stored request document back to its spec (it was validated when accepted).

        Strict: against today's mesh (a live injection must still make sense there);
        not strict: trusting its names (a finished one is a record, whatever changed).
        """
        request = json_format.ParseDict(document, faultplane_pb2.InjectionRequest())
        return validate_request(request, self.config.mesh if strict else None, None)

    def close(self) -> None:
        self.journal.close()
        self.store.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def build(config: ServerConfig) -> Parts:
    store, scratch = _open_store(config)
    journal = Journal(store)
    cache = SnapshotCache()
    registry = _build_registry(config, store)
    source = PlaneWithAgents(
        _build_source(config, cache, registry), AgentPlane(cache, registry, config.deadman_ttl)
    )
    replication = _build_replication(config, store, registry, source)
    plane = replication.plane if replication else source  # lifecycles push through it
    scheduler = Scheduler(
        plane, journal, ack_timeout=config.ack_timeout, approval=config.approval,
        deadman_ttl=config.deadman_ttl, keep_finished=config.keep_finished,
        clock=config.clock, graph=dependency_graph(config),
    )  # fmt: skip
    registry.on_connect.append(scheduler.replan_soon)  # its targets may have come back
    if replication is not None:
        replication.attach(scheduler)
    retention = Retention(
        scheduler, journal, config.retain_days, config.baseline_window, config.prune_every
    )
    http = HttpClient()
    guarding = _build_guarding(config, scheduler, source, journal, http)
    window = config.refusal_window
    gate = Gate(
        Authenticator(store.tokens, config.auth),
        journal,
        peers=RefusalLimiter(config.refusal_limit, window),
        principals=RefusalLimiter(config.principal_refusal_limit, window),
    )
    preflight = guarding.preflight if guarding else None
    service = FaultService(
        gate, registry, scheduler, config.mesh, store, journal, source, preflight
    )
    return Parts(
        config, store, journal, cache, registry, source, scheduler, retention, http,
        guarding, gate, service, health.aio.HealthServicer(), DuplicateSidecars(journal),
        scratch, replication,
    )  # fmt: skip


def _build_registry(config: ServerConfig, store: SqliteStore | PostgresStore) -> SidecarRegistry:
    """The xDS registry; on a PostgreSQL store, one that also sees the other replicas'
    sidecars (faultplane.replicas)."""
    if getattr(store, "replicas", None) is None:
        return SidecarRegistry()
    return SharedSidecarRegistry(config.replica_name or default_replica_name())


def _build_replication(
    config: ServerConfig,
    store: SqliteStore | PostgresStore,
    registry: SidecarRegistry,
    source: PlaneWithAgents,
) -> Replication | None:
    """A replica's machinery on a PostgreSQL store; None on SQLite (one process)."""
    if not isinstance(registry, SharedSidecarRegistry):
        return None
    faults = store.faults  # type: ignore[union-attr]  # a PostgresStore, as registry says
    plane = ReplicatedPlane(source, registry, faults)
    return Replication(store, registry, plane, config.ack_timeout)  # type: ignore[arg-type]


def _open_store(config: ServerConfig) -> tuple[SqliteStore | PostgresStore, Path | None]:
    """The configured store, and a throwaway database's directory (removed at stop). With
    PostgreSQL there is no database file to keep the audit key beside: it defaults to
    audit.key in the state directory ($FAULTPLANE_STATE_DIR)."""
    if config.store_url is not None:
        key_path = config.audit_key_file or default_key_path(default_db_path())
        return open_postgres_store(config.store_url, audit_key=open_audit_key(key_path)), None
    db_path, scratch = config.db_path, None
    if db_path is None:
        scratch = Path(tempfile.mkdtemp(prefix="faultplane-"))
        db_path = scratch / "faultplane.db"
    key = open_audit_key(config.audit_key_file or default_key_path(db_path))
    return SqliteStore(db_path, audit_key=key), scratch


def _build_source(
    config: ServerConfig, cache: SnapshotCache, registry: SidecarRegistry
) -> MeshSource | OverlaySource:
    """Full mesh: each pod's whole config. Overlay (no mesh): only the fault layer, to
    whichever Envoy connects."""
    if config.mesh is None:
        return OverlaySource(
            cache,
            registry,
            config.fault_slots,
            config.deadman_ttl,
            istio_stats_port=config.istio_stats_port,
        )
    layout = SidecarLayout(config.fault_slots)
    return MeshSource(config.mesh, cache, registry, layout, config.deadman_ttl)


def _build_guarding(
    config: ServerConfig,
    scheduler: Scheduler,
    source: PlaneWithAgents,
    journal: Journal,
    http: HttpClient,
) -> Guarding | None:
    if not config.slos:
        return None
    longest = max(slo.window_seconds for slo in config.slos.values())
    envoy = EnvoySource(keep_seconds=longest + 3 * config.guard_tick)
    sources: dict[str, SloSource] = {"envoy": envoy}
    prometheus = None
    if config.prometheus_url:
        prometheus = PrometheusSource(config.prometheus_url, http)
        sources["prometheus"] = prometheus
    baseline = BaselineBook(config.baseline_window)
    preflight = Preflight(
        config.slos,
        baseline,
        source,
        prometheus,
        config.baseline_min_seconds,
        config.baseline_window,
        config.guard_tick,
    )
    guard = SteadyStateGuard(
        scheduler, source, config.slos, sources, envoy, baseline, journal, config.guard_tick
    )
    return Guarding(guard, preflight, baseline)


def dependency_graph(config: ServerConfig) -> DependencyGraph:
    """The declared graph, else the mesh's, else none (overlay mode without a file)."""
    if config.dependency_graph is not None:
        return config.dependency_graph
    return graph_of_mesh(config.mesh) if config.mesh is not None else DependencyGraph()
