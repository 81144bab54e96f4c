"""The control server: ADS for sidecars, the operator API, health, reflection, metrics.

One process, two gRPC servers on separate ports, so that sidecar traffic and operator
traffic can be firewalled and scaled apart. On start it reloads every injection from the
store before any sidecar can connect, so a restarted server resumes what is still due.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import grpc
import prometheus_client
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from faultplane.api.gate import DEFAULT_PEER_LIMIT, DEFAULT_PRINCIPAL_LIMIT, Gate
from faultplane.api.ratelimit import DEFAULT_WINDOW_SECONDS, RefusalLimiter
from faultplane.api.service import FaultService
from faultplane.api.validate import validate_request
from faultplane.auth.principal import LOCAL_MODE_WARNING, Authenticator, check_local_bind
from faultplane.auth.tls import server_credentials
from faultplane.delivery.source import MeshSource
from faultplane.guard.steady_state import SteadyStateGuard
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.preflight import Preflight
from faultplane.lifecycle.registry import KEEP_FINISHED
from faultplane.lifecycle.retention import (
    DEFAULT_RETAIN_DAYS,
    PRUNE_EVERY_SECONDS,
    Retention,
)
from faultplane.lifecycle.scheduler import Scheduler
from faultplane.model.mesh import Mesh
from faultplane.model.spec import InjectionSpec
from faultplane.render.resources import DEFAULT_FAULT_SLOTS, SidecarLayout
from faultplane.slo.baseline import BaselineBook
from faultplane.slo.catalogue import SloDef
from faultplane.slo.sources import EnvoySource, PrometheusSource, Reading, SloSource
from faultplane.store import SqliteStore
from faultplane.store.audit_key import default_key_path, open_audit_key
from faultplane.v1 import faultplane_pb2, faultplane_pb2_grpc
from faultplane.xds.cache import SnapshotCache
from faultplane.xds.registry import SidecarRegistry
from faultplane.xds.server import AdsServer

log = structlog.get_logger("faultplane.server.control")

HOST = "127.0.0.1"
# How long a stop waits for records the store keeps refusing before it gives them up.
DRAIN_SECONDS = 10.0
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
FAULT_SERVICE = faultplane_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name
# The largest operator request the API reads. Chosen, not gRPC's 4 MiB default: the
# largest valid request (validation bounds every text field) is a few KiB, and anything
# bigger is refused by gRPC itself, RESOURCE_EXHAUSTED, before it reaches the gate or
# the audit log.
MAX_API_MESSAGE_BYTES = 1024 * 1024
XDS_SERVER_OPTIONS = [
    ("grpc.max_concurrent_streams", 1 << 20),
    ("grpc.so_reuseport", 0),
    # Sidecars ping their ADS connection every few seconds (HTTP/2 keepalive) so a dead
    # control server is noticed. gRPC's default policy answers frequent pings with
    # GOAWAY ("too many pings"), which would drop every sidecar's stream now and then.
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
    # The server pings too, so a sidecar that vanished without a FIN (host gone, network
    # cut) is noticed: its stream ends and the registry shows it disconnected, instead of
    # a half-open stream that looks alive for hours.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None  # given: mutual TLS, the principal is the cert subject


@dataclass(frozen=True)
class ServerConfig:
    mesh: Mesh
    xds_port: int = 0  # 0: pick a free port
    api_port: int = 0
    metrics_port: int | None = 0  # None: no metrics endpoint
    fault_slots: int = DEFAULT_FAULT_SLOTS
    # Faults switched on are leased to the sidecars for this long and re-sent every third
    # of it: if the control server dies, every fault is off within this many seconds.
    deadman_ttl: float = 10.0
    # How long a push may wait for a sidecar's ACK before the injection fails.
    ack_timeout: float = 10.0
    # The SLO catalogue; None accepts any SLO name and guards nothing.
    slos: Mapping[str, SloDef] | None = None
    prometheus_url: str | None = None
    guard_tick: float = 1.0
    baseline_min_seconds: float = 300.0
    baseline_window: float = 3600.0
    # The store; None: a throwaway database (tests, demos), nothing survives a restart.
    db_path: Path | None = None
    # The secret that keys the audit chain, kept outside the store; None: `audit.key` next
    # to the database. Created 0600 if missing; refused if group or others may read it.
    audit_key_file: Path | None = None
    # "token": bearer tokens (or mTLS); "local": one local admin, no credentials.
    auth: Literal["token", "local"] = "local"
    tls: TlsConfig | None = None
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    # Refused calls audited one by one per window, per anonymous host and per principal;
    # past that, RESOURCE_EXHAUSTED and one summary per window (faultplane.api.ratelimit).
    refusal_limit: int = DEFAULT_PEER_LIMIT
    principal_refusal_limit: int = DEFAULT_PRINCIPAL_LIMIT
    refusal_window: float = DEFAULT_WINDOW_SECONDS
    # Finished injections older than this many days are pruned from the store (0: kept
    # for ever), hourly and at start; finished injections kept in memory besides the live
    # ones (faultplane.lifecycle.retention, faultplane.lifecycle.registry).
    retain_days: float = DEFAULT_RETAIN_DAYS
    keep_finished: int = KEEP_FINISHED
    prune_every: float = PRUNE_EVERY_SECONDS

    def __post_init__(self) -> None:
        # The CLI refuses these with friendlier ranges; in-process callers get this floor.
        for name in ("deadman_ttl", "ack_timeout", "guard_tick", "prune_every"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive number of seconds, not {value!r}")
        if not (math.isfinite(self.retain_days) and self.retain_days >= 0):
            raise ValueError(f"retain_days: must be 0 or more days, not {self.retain_days!r}")
        if self.keep_finished < 0:
            raise ValueError(f"keep_finished: must be 0 or more, not {self.keep_finished!r}")


class ControlServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        db_path, self._scratch = config.db_path, None
        if db_path is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="faultplane-"))
            db_path = self._scratch / "faultplane.db"
        key = open_audit_key(config.audit_key_file or default_key_path(db_path))
        self.store = SqliteStore(db_path, audit_key=key)
        self.journal = Journal(self.store)
        self.cache = SnapshotCache()
        self.registry = SidecarRegistry()
        self.source = MeshSource(
            config.mesh,
            self.cache,
            self.registry,
            SidecarLayout(config.fault_slots),
            config.deadman_ttl,
        )
        self.scheduler = Scheduler(
            self.source, self.journal, ack_timeout=config.ack_timeout, approval=config.approval,
            deadman_ttl=config.deadman_ttl, keep_finished=config.keep_finished,
        )  # fmt: skip
        self.retention = Retention(
            self.scheduler, self.journal, config.retain_days, config.baseline_window,
            config.prune_every,
        )  # fmt: skip
        self._retention_task: asyncio.Task[None] | None = None
        self.baseline = BaselineBook(config.baseline_window)
        self.preflight: Preflight | None = None
        self._guard_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.xds_port = 0
        self.api_port = 0
        self.metrics_port: int | None = None
        self._xds_server: grpc.aio.Server | None = None
        self._api_server: grpc.aio.Server | None = None
        self._gate: Gate | None = None
        self._health = health.aio.HealthServicer()
        self._metrics_http: Any = None
        self._stopped = False

    def parse_spec(self, document: Mapping[str, Any], strict: bool = True) -> InjectionSpec:
        """A stored request document back to its spec (it was validated when accepted).

        Strict: against today's mesh (a live injection must still make sense there);
        not strict: trusting its names (a finished one is a record, whatever changed).
        """
        request = json_format.ParseDict(document, faultplane_pb2.InjectionRequest())
        return validate_request(request, self.config.mesh if strict else None, None)

    async def start(self) -> None:
        config = self.config
        await self.scheduler.restore(self.parse_spec)
        self._retention_task = asyncio.create_task(self.retention.run(), name="retention")
        await self._start_guard()
        self._xds_server = grpc.aio.server(options=XDS_SERVER_OPTIONS)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
            AdsServer(self.cache, self.registry, self.source), self._xds_server
        )
        self.xds_port = self._xds_server.add_insecure_port(f"{HOST}:{config.xds_port}")
        self._api_server = self._build_api_server()
        self._start_metrics()
        await self._xds_server.start()
        await self._api_server.start()
        for service in ("", FAULT_SERVICE, ADS_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if config.auth == "local":
            check_local_bind(HOST)  # no credentials: never reachable off this machine
            log.warning(LOCAL_MODE_WARNING)
        log.info(
            "control server started",
            xds=f"{HOST}:{self.xds_port}",
            api=f"{HOST}:{self.api_port}",
            metrics=f"{HOST}:{self.metrics_port}" if self.metrics_port else None,
            pods=len(config.mesh.pods),
            instance=self.cache.instance,
            db=str(self.store.path),
            audit_key=str(self.store.audit_key.path) if self.store.audit_key else None,
            auth=config.auth,
            tls="mutual" if config.tls and config.tls.client_ca else bool(config.tls),
        )

    def _build_api_server(self) -> grpc.aio.Server:
        config = self.config
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_API_MESSAGE_BYTES),
            ]
        )
        authenticator = Authenticator(self.store, config.auth)
        window = config.refusal_window
        self._gate = Gate(
            authenticator,
            self.journal,
            peers=RefusalLimiter(config.refusal_limit, window),
            principals=RefusalLimiter(config.principal_refusal_limit, window),
        )
        service = FaultService(
            self._gate,
            self.registry,
            self.scheduler,
            config.mesh,
            self.store,
            self.journal,
            self.preflight,
        )
        faultplane_pb2_grpc.add_FaultServiceServicer_to_server(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (FAULT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{HOST}:{config.api_port}"
        if config.tls is None:
            self.api_port = server.add_insecure_port(address)
        else:
            tls = config.tls
            credentials = server_credentials(tls.cert, tls.key, tls.client_ca)
            self.api_port = server.add_secure_port(address, credentials)
        return server

    def _start_metrics(self) -> None:
        if self.config.metrics_port is None:
            return
        server, _thread = prometheus_client.start_http_server(self.config.metrics_port, addr=HOST)
        self._metrics_http = server
        self.metrics_port = server.server_port

    async def _start_guard(self) -> None:
        """The steady-state guard and baseline sampler, when a catalogue is configured."""
        config = self.config
        if not config.slos:
            return
        self._session = aiohttp.ClientSession()
        longest = max(slo.window_seconds for slo in config.slos.values())
        envoy = EnvoySource(keep_seconds=longest + 3 * config.guard_tick)
        sources: dict[str, SloSource] = {"envoy": envoy}
        prometheus = None
        if config.prometheus_url:
            prometheus = PrometheusSource(config.prometheus_url, self._session)
            sources["prometheus"] = prometheus
        since = time.time() - config.baseline_window
        for name in config.slos:  # the baseline survives restarts too
            for sample in await self.journal.run(self.store.baseline_samples, name, since):
                self.baseline.add(name, Reading(sample.value, sample.error, sample.at))
        self.preflight = Preflight(
            config.slos,
            self.baseline,
            self.source,
            prometheus,
            config.baseline_min_seconds,
            config.baseline_window,
            config.guard_tick,
        )
        guard = SteadyStateGuard(
            self.scheduler, self.source, config.slos, sources, envoy, self.baseline,
            self.journal, config.guard_tick,
        )  # fmt: skip
        self._guard_task = asyncio.create_task(guard.run(self._session))

    async def stop(self, grace: float = 1.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        # Operators first: no call may start what nobody will guard or stop. Then the
        # lifecycles (left to their leases, for a restart to resume), at once the sidecars
        # (no lease is renewed after that), and only then the guard and the records.
        if self._api_server is not None:
            await self._api_server.stop(grace)
        await self.scheduler.close()
        if self._xds_server is not None:
            await self._xds_server.stop(grace)
        await self.scheduler.record_stop()  # no sidecar renews a lease from here on
        for task in (self._guard_task, self._retention_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.journal.drain(timeout=DRAIN_SECONDS)
        if self._session is not None:
            await self._session.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        if self._gate is not None:  # the open rate-limit windows' summaries
            await self._gate.close()
        self.journal.close()
        self.store.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        log.info("control server stopped")
