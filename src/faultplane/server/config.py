"""What a control server is built from: one immutable config, checked when made.

Every part of the server (faultplane.server.parts) is built from this object alone, so a
server is reproducible from its config and a test states exactly what it varies.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from faultplane.api.gate import DEFAULT_PEER_LIMIT, DEFAULT_PRINCIPAL_LIMIT
from faultplane.api.ratelimit import DEFAULT_WINDOW_SECONDS
from faultplane.auth.principal import check_local_bind
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.lifecycle.registry import KEEP_FINISHED
from faultplane.lifecycle.retention import DEFAULT_RETAIN_DAYS, PRUNE_EVERY_SECONDS
from faultplane.model.mesh import Mesh
from faultplane.notify.courier import DeliveryPolicy
from faultplane.notify.targets import NotifyTarget
from faultplane.render.resources import DEFAULT_FAULT_SLOTS
from faultplane.scheduling.graph import DependencyGraph
from faultplane.slo.catalogue import SloDef

# Every listener binds here unless configured otherwise: the loopback interface, never
# reachable off this machine.
HOST = "127.0.0.1"
ISTIO_STATS_PORT = 15090  # where an Istio sidecar serves /stats/prometheus
STORE_URL_SCHEMES = ("postgresql://", "postgres://")  # what `--store` accepts


def listen_address(host: str, port: int) -> str:
    """`host:port` as gRPC binds it, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IP address or `localhost`; IPv6 in brackets) -> (host, port); the
    ValueError names what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address or localhost") from None
    if not port_text.isdecimal() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None  # given: mutual TLS, the principal is the cert subject


@dataclass(frozen=True)
class ServerConfig:
    # The mesh faultplane defines (full-mesh mode: it serves each pod's whole config), or
    # None: overlay mode, where any Envoy that connects is a sidecar and gets only the
    # fault layer (ECDS slots and the leased RTDS layer) beside its own control plane's.
    mesh: Mesh | None
    xds_port: int = 0  # 0: pick a free port
    api_port: int = 0
    metrics_port: int | None = 0  # None: no metrics endpoint
    # Listen hosts; anything but loopback ("0.0.0.0", "::") serves other machines too.
    xds_host: str = HOST
    api_host: str = HOST
    metrics_host: str = HOST
    # The dashboard (faultplane.web): None, off; 0, a free port. A client of the API above.
    web_port: int | None = None
    web_host: str = HOST
    # Overlay mode: the port an Istio-shaped node serves its stats on, at its INSTANCE_IPS.
    istio_stats_port: int = ISTIO_STATS_PORT
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
    # A PostgreSQL store instead (`--store postgresql://...`); excludes db_path.
    store_url: str | None = None
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
    # Webhooks told of starts, ends and freezes (faultplane.notify), how hard delivery
    # tries, and the dashboard's base URL their links point into (None: no links).
    notify: tuple[NotifyTarget, ...] = ()
    notify_policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    web_url: str | None = None
    # What the queue reads the time from (not_before, not_after, its timer): tests pass
    # a clock they move.
    clock: Callable[[], float] = time.time
    # The dependency rule's graph (who calls whom): None takes the mesh's `dependencies`
    # (overlay mode: none, unless `serve --dependency-graph FILE` declares one).
    dependency_graph: DependencyGraph | None = None
    # This process's name among the replicas sharing store_url (faultplane.replicas);
    # None with a PostgreSQL store: HOSTNAME-PID. Needs store_url.
    replica_name: str | None = None

    def __post_init__(self) -> None:
        # The CLI refuses these with friendlier ranges; in-process callers get this floor.
        for name in ("deadman_ttl", "ack_timeout", "guard_tick", "prune_every"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive number of seconds, not {value!r}")
        if not (math.isfinite(self.retain_days) and self.retain_days >= 0):
            raise ValueError(f"retain_days: must be 0 or more days, not {self.retain_days!r}")
        if self.auth == "local":
            check_local_bind(self.api_host)  # no credentials: never reachable off this machine
            if self.web_port is not None:
                check_local_bind(self.web_host)
        if self.web_port is not None and self.tls is not None:
            raise ValueError(
                "web_port (--web-listen): the dashboard calls the operator API over "
                "plaintext loopback, so it cannot run beside a TLS API (--tls-cert) yet"
            )
        if self.keep_finished < 0:
            raise ValueError(f"keep_finished: must be 0 or more, not {self.keep_finished!r}")
        if self.store_url is not None and self.db_path is not None:
            raise ValueError("store_url: one store only; give a PostgreSQL URL or db_path")
        if self.store_url is not None and not self.store_url.startswith(STORE_URL_SCHEMES):
            raise ValueError(
                f"store_url: must start with {' or '.join(STORE_URL_SCHEMES)}, "
                f"not {self.store_url.split('://')[0]!r}"
            )
        if self.replica_name is not None:
            check_replica_name(self.replica_name, self.store_url)


REPLICA_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
REPLICA_NAME_MAX = 63


def check_replica_name(name: str, store_url: str | None) -> None:
    """A replica name is shown in listings and logs and keys the store's replica rows:
    1 to 63 letters, digits, '.', '_' or '-'; and only replicas of a shared store have one."""
    if store_url is None:
        raise ValueError(
            "replica_name (--replica-name): needs a PostgreSQL store (--store); "
            "the SQLite store is one process"
        )
    if not 0 < len(name) <= REPLICA_NAME_MAX or not set(name) <= REPLICA_NAME_CHARS:
        raise ValueError(
            f"replica_name (--replica-name): {name!r} must be 1 to {REPLICA_NAME_MAX} "
            "letters, digits, '.', '_' or '-'"
        )
