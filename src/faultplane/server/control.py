"""The control server: ADS for sidecars, the operator API, health, reflection, metrics.

One process, two gRPC servers on separate ports, so that sidecar traffic and operator
traffic can be firewalled and scaled apart. Its parts are built from the config first
(faultplane.server.parts); `start` only runs them. On start it reloads every injection
from the store before any sidecar can connect, so a restarted server resumes what is
still due.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import prometheus_client
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from faultplane.auth.principal import LOCAL_MODE_WARNING
from faultplane.auth.tls import server_credentials
from faultplane.notify.notifier import Notifier
from faultplane.observability.collector import InjectionFeed, store_counts
from faultplane.server.config import ServerConfig, TlsConfig, listen_address
from faultplane.server.parts import build
from faultplane.slo.sources import Reading
from faultplane.v1 import faultplane_pb2, faultplane_pb2_grpc
from faultplane.web.app import WebServer
from faultplane.xds.server import add_xds_services

__all__ = ["ControlServer", "ServerConfig", "TlsConfig"]

log = structlog.get_logger("faultplane.server.control")

# How long a stop waits for records the store keeps refusing before it gives them up.
DRAIN_SECONDS = 10.0
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


class ControlServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.parts = build(config)
        parts = self.parts
        self.store, self.journal, self.scheduler = parts.store, parts.journal, parts.scheduler
        self.cache, self.registry, self.source = parts.cache, parts.registry, parts.source
        self.retention = parts.retention
        self.preflight = parts.guarding.preflight if parts.guarding else None
        # The injection metrics and the notifications: both follow the scheduler's watch.
        self.injection_metrics = InjectionFeed(parts.scheduler)
        self.notifier = Notifier(
            parts.scheduler, config.notify, parts.journal.audit, config.web_url,
            config.notify_policy,
        )  # fmt: skip
        self.parse_spec = parts.parse_spec
        self.xds_port = 0
        self.api_port = 0
        self.metrics_port: int | None = None
        self._xds_server: grpc.aio.Server | None = None
        self._api_server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_http: Any = None
        self.web: WebServer | None = None  # the dashboard, with config.web_port
        self._stopped = False
        self._health_services: tuple[str, ...] = ()

    async def start(self) -> None:
        config, parts = self.config, self.parts
        # Subscribed before the restore: what a restart finishes is counted and told.
        counts = await self.journal.read(store_counts, self.store.injections)
        self.injection_metrics.start(*counts)
        await self.notifier.start()
        await self.scheduler.restore(parts.parse_spec)
        self.injection_metrics.restored()
        self._tasks.append(asyncio.create_task(self.retention.run(), name="retention"))
        if parts.guarding is not None:
            await self._load_baseline()
            guard = parts.guarding.guard.run(parts.http.session)
            self._tasks.append(asyncio.create_task(guard, name="guard"))
        self._xds_server = grpc.aio.server(options=XDS_SERVER_OPTIONS)
        # Full mesh: ADS. Overlay: RTDS and ECDS on their own services (ADS is another's).
        xds_services = add_xds_services(
            self._xds_server,
            self.cache,
            self.registry,
            self.source,
            per_type=config.mesh is None,
            on_duplicate=parts.duplicates,
        )
        self.xds_port = self._xds_server.add_insecure_port(
            listen_address(config.xds_host, config.xds_port)
        )
        self._api_server = self._api_grpc_server()
        self._start_metrics()
        await self._xds_server.start()
        await self._api_server.start()
        if config.web_port is not None:  # a client of the API: started after it
            self.web = WebServer(parts, self.api_port)
            await self.web.start()
            if config.web_url is None:  # notifications link to this dashboard
                self.notifier.link_to(self.web.url)
        self._health_services = ("", FAULT_SERVICE, *xds_services)
        await self._start_replication()
        await self._set_serving(True)
        if config.auth == "local":
            log.warning(LOCAL_MODE_WARNING)
        log.info(
            "control server started",
            xds=listen_address(config.xds_host, self.xds_port),
            api=listen_address(config.api_host, self.api_port),
            metrics=listen_address(config.metrics_host, self.metrics_port)
            if self.metrics_port
            else None,
            web=self.web.url if self.web else None,
            mode="overlay" if config.mesh is None else "mesh",
            pods=len(config.mesh.pods) if config.mesh is not None else None,
            instance=self.cache.instance,
            db=str(self.store.path),
            replica=self.parts.replication.name if self.parts.replication else None,
            audit_key=str(self.store.audit_key.path) if self.store.audit_key else None,
            auth=config.auth,
            tls="mutual" if config.tls and config.tls.client_ca else bool(config.tls),
        )

    async def _start_replication(self) -> None:
        """Replicas on one PostgreSQL store (faultplane.replicas): started once this
        replica's ports are known, before it reports SERVING."""
        replication = self.parts.replication
        if replication is None:
            return
        self._tasks += await replication.start(
            self.parts.parse_spec,
            listen_address(self.config.xds_host, self.xds_port),
            listen_address(self.config.api_host, self.api_port),
            self._set_serving,
        )

    async def _set_serving(self, serving: bool) -> None:
        """gRPC health of every service: NOT_SERVING while a replica's store is out of
        reach (faultplane.replicas), never after a stop began."""
        if self._stopped:
            return
        status = health_pb2.HealthCheckResponse.SERVING if serving else (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )  # fmt: skip
        for service in self._health_services:
            await self.parts.health.set(service, status)

    async def _load_baseline(self) -> None:
        """The baseline survives restarts too: the stored samples of the last window."""
        guarding = self.parts.guarding
        assert guarding is not None and self.config.slos
        since = time.time() - self.config.baseline_window
        for name in self.config.slos:
            for sample in await self.journal.run(self.store.readings.baseline, name, since):
                guarding.baseline.add(name, Reading(sample.value, sample.error, sample.at))

    def _api_grpc_server(self) -> grpc.aio.Server:
        config = self.config
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_API_MESSAGE_BYTES),
            ]
        )
        faultplane_pb2_grpc.add_FaultServiceServicer_to_server(self.parts.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.parts.health, server)
        reflection.enable_server_reflection(
            (FAULT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = listen_address(config.api_host, config.api_port)
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
        server, _thread = prometheus_client.start_http_server(
            self.config.metrics_port,
            addr=self.config.metrics_host,
            registry=self.injection_metrics.registry,
        )
        self._metrics_http = server
        self.metrics_port = server.server_port

    async def stop(self, grace: float = 1.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.parts.health.enter_graceful_shutdown()
        # Operators first: no call may start what nobody will guard or stop. Then the
        # lifecycles (left to their leases, for a restart to resume), at once the sidecars
        # (no lease is renewed after that), and only then the guard and the records.
        if self.web is not None:
            await self.web.stop()
        if self._api_server is not None:
            await self._api_server.stop(grace)
        await self.scheduler.close()
        if self._xds_server is not None:
            await self._xds_server.stop(grace)
        await self.scheduler.record_stop()  # no sidecar renews a lease from here on
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.parts.replication is not None:
            await self.parts.replication.stop()
        await self.notifier.stop()
        await self.injection_metrics.stop()
        await self.journal.drain(timeout=DRAIN_SECONDS)
        await self.parts.http.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        await self.parts.gate.close()  # the open rate-limit windows' summaries
        self.parts.close()
        log.info("control server stopped")
