"""`faultplane serve`: the control server's flags, checked before anything starts.

Every bound is checked while parsing (argparse names the flag and exits 2), and flags
that only fail together are checked next (`check_serve_flags`), so a mistyped flag never
half-starts a server.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from faultplane.api.validate import MAX_DURATION_SECONDS
from faultplane.cli.injections import UsageError
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.lifecycle.registry import KEEP_FINISHED
from faultplane.lifecycle.retention import DEFAULT_RETAIN_DAYS
from faultplane.model.mesh import load_mesh
from faultplane.notify.targets import parse_target, parse_web_url
from faultplane.render.overlay_config import DEFAULT_SLOTS as OVERLAY_FAULT_SLOTS
from faultplane.render.resources import DEFAULT_FAULT_SLOTS
from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.graph import DependencyGraph, parse_graph
from faultplane.server.config import ISTIO_STATS_PORT, STORE_URL_SCHEMES, parse_listen_address
from faultplane.server.control import ControlServer, ServerConfig, TlsConfig
from faultplane.slo.catalogue import CatalogueError, load_catalogue
from faultplane.store import default_db_path

DEFAULT_MESH = Path("envoy-configs/mesh.yaml")
# Overlay mode has no mesh file to declare ports: these, as the demo mesh's.
OVERLAY_PORTS = {"xds": 18000, "api": 18001, "metrics": 18002}

# Bounds of serve's numeric flags, checked while parsing, before anything starts: a
# dead-man TTL of 0 (or NaN) would lease faults for nothing, or for ever.
# Below 1 s a busy server cannot renew the lease (every ttl/3) before it lapses, and the
# fault flickers off; no injection outlives MAX_DURATION_SECONDS, nor does any lease.
DEADMAN_TTL_RANGE = (1.0, float(MAX_DURATION_SECONDS))
ACK_TIMEOUT_RANGE = (0.1, 3600.0)
# The guard must look often enough to act on a breach; faster than 50 ms is busy-looping.
GUARD_TICK_RANGE = (0.05, 60.0)
BASELINE_SECONDS_MAX = 30 * 86400.0
MAX_FAULT_SLOTS = 64
RETAIN_DAYS_MAX = 100 * 365.0


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the control server")
    serve.add_argument("--mesh", type=Path, help=f"the mesh model (default {DEFAULT_MESH})")
    serve.add_argument(
        "--overlay",
        action="store_true",
        help="no mesh file: any Envoy that connects is a sidecar, served only the fault "
        "layer (ECDS slots, the leased RTDS layer) beside its own control plane",
    )
    serve.add_argument(
        "--dependency-graph",
        type=Path,
        metavar="FILE",
        help="who calls whom, for the scheduler's dependency rule (YAML/JSON: service -> "
        "[services it calls]); default: the mesh's dependencies (none with --overlay)",
    )
    port = integer(0, 65535)
    for part, default in OVERLAY_PORTS.items():
        serve.add_argument(
            f"--{part}-port",
            type=port,
            help=f"default: the mesh's control.{part}_port ({default} with --overlay)",
        )
        serve.add_argument(
            f"--{part}-listen",
            type=listen_address,
            metavar="HOST:PORT",
            help=f"the {part} listen address (default 127.0.0.1 and the port above; "
            "0.0.0.0 serves other machines too)",
        )
    serve.add_argument(
        "--web-listen",
        type=listen_address,
        metavar="HOST:PORT",
        help="serve the dashboard here (port 0: a free one; off unless given), a client of "
        "the operator API with each user's own token (or the local admin with --auth local)",
    )
    serve.add_argument(
        "--istio-stats-port",
        type=integer(1, 65535),
        default=ISTIO_STATS_PORT,
        help="where Istio-shaped sidecars serve /stats/prometheus, at their INSTANCE_IPS "
        f"(default {ISTIO_STATS_PORT})",
    )
    serve.add_argument(
        "--fault-slots",
        type=integer(1, MAX_FAULT_SLOTS),
        help=f"fault slots per route (default {DEFAULT_FAULT_SLOTS}); with --overlay, per "
        f"direction, as many as the sidecars declare (default {OVERLAY_FAULT_SLOTS}, as "
        "`faultplane overlay` prints)",
    )
    serve.add_argument(
        "--deadman-ttl",
        type=seconds(*DEADMAN_TTL_RANGE),
        default=10.0,
        help="seconds a switched-on fault survives the control server's death "
        f"(default 10; from {DEADMAN_TTL_RANGE[0]:g} to {DEADMAN_TTL_RANGE[1]:g})",
    )
    serve.add_argument(
        "--ack-timeout",
        type=seconds(*ACK_TIMEOUT_RANGE),
        default=10.0,
        help="seconds to wait for a sidecar's ACK before an injection fails "
        f"(default 10; from {ACK_TIMEOUT_RANGE[0]:g} to {ACK_TIMEOUT_RANGE[1]:g})",
    )
    serve.add_argument("--slos", type=Path, help="the SLO catalogue (enables the guard)")
    serve.add_argument("--prometheus-url", help="Prometheus for SLOs with source: prometheus")
    serve.add_argument(
        "--guard-tick",
        type=seconds(*GUARD_TICK_RANGE),
        default=1.0,
        help="seconds between guard readings "
        f"(default 1; from {GUARD_TICK_RANGE[0]:g} to {GUARD_TICK_RANGE[1]:g})",
    )
    serve.add_argument(
        "--baseline-min-seconds",
        type=seconds(0.0, BASELINE_SECONDS_MAX),
        default=300.0,
        help="baseline history an SLO needs before an injection may use it (default 300)",
    )
    serve.add_argument(
        "--baseline-window",
        type=seconds(1.0, BASELINE_SECONDS_MAX),
        default=3600.0,
        help="seconds of baseline kept (at least --baseline-min-seconds)",
    )
    serve.add_argument(
        "--db", type=Path, help="the SQLite store (default: $FAULTPLANE_STATE_DIR/faultplane.db)"
    )
    serve.add_argument(
        "--store",
        type=store_url,
        metavar="URL",
        help="a PostgreSQL store instead of --db: postgresql://USER[:PASSWORD]@HOST[:PORT]/DB "
        "(needs the postgresql extra; migrated at start; the audit key defaults to audit.key "
        "in $FAULTPLANE_STATE_DIR)",
    )
    serve.add_argument(
        "--replica-name",
        metavar="NAME",
        help="with --store: this process's name among the replicas sharing the database "
        "(default HOSTNAME-PID; 1 to 63 letters, digits, '.', '_', '-')",
    )
    serve.add_argument(
        "--audit-key-file",
        type=Path,
        help="the secret keying the audit chain, kept outside the store (default: audit.key "
        "next to --db; created 0600 if missing, refused if group or others may read it); "
        "the signed chain head is appended to audit.anchor beside it",
    )
    serve.add_argument(
        "--auth",
        choices=["token", "local"],
        default="token",
        help="token: bearer tokens or mTLS (default); local: one local admin, no credentials",
    )
    serve.add_argument("--tls-cert", type=Path, help="serve the operator API over TLS")
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument("--client-ca", type=Path, help="require client certificates (mTLS)")
    serve.add_argument(
        "--approval-max-pods", type=integer(0, 1_000_000), help="above this, a second person"
    )
    serve.add_argument("--approval-max-percentage", type=number(0.0, 100.0, "percent"))
    serve.add_argument(
        "--approval-max-duration", type=seconds(0.0, float(MAX_DURATION_SECONDS)), help="seconds"
    )
    serve.add_argument(
        "--approval-timeout",
        type=seconds(1.0, 7 * 86400.0),
        default=3600.0,
        help="seconds; unapproved injections expire",
    )
    serve.add_argument(
        "--retain-days",
        type=number(0.0, RETAIN_DAYS_MAX, "days"),
        default=DEFAULT_RETAIN_DAYS,
        help="delete injections that finished more than this many days ago, with their "
        "history and readings, hourly and at start; never the audit log "
        f"(default {DEFAULT_RETAIN_DAYS:g}; 0 keeps them for ever)",
    )
    serve.add_argument(
        "--keep-finished",
        type=integer(0, 1_000_000),
        default=KEEP_FINISHED,
        help="finished injections kept in memory; older ones are read from the store "
        f"(default {KEEP_FINISHED})",
    )
    serve.add_argument(
        "--notify",
        action="append",
        default=[],
        type=checked(parse_target),
        metavar="URL",
        help="POST a JSON message to URL on every start, end (completed, guard abort, "
        "abort, failure) and freeze change; repeatable. slack+https://... sends Slack's "
        "incoming-webhook format instead",
    )
    serve.add_argument(
        "--web-url",
        type=checked(parse_web_url),
        metavar="BASE",
        help="the dashboard's address as people reach it (e.g. http://127.0.0.1:8080): "
        "notifications link to BASE/experiments/<id>",
    )
    serve.set_defaults(handler=cmd_serve)


def number(low: float, high: float, unit: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high]. argparse names the flag in the
    error (`argument --deadman-ttl: ...`) and exits 2 before any handler runs."""
    what = f" {unit}" if unit else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"must be a number of{what} from {low:g} to {high:g}, not {text!r}"
            )
        return value

    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    return number(low, high, "seconds")


def integer(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high}, not {text!r}"
            )
        return value

    return parse


def checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError (argparse names the flag)."""

    def parse_arg(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_arg


def listen_address(text: str) -> tuple[str, int]:
    """An argparse type: HOST:PORT (argparse names the flag in the error)."""
    try:
        return parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def store_url(text: str) -> str:
    """An argparse type: a PostgreSQL connection URL."""
    if not text.startswith(STORE_URL_SCHEMES):
        raise argparse.ArgumentTypeError(
            f"must be a postgresql:// URL (the SQLite store is --db PATH), not {text!r}"
        )
    return text


def check_serve_flags(args: argparse.Namespace) -> None:
    """What no single flag's range can say: combinations that could never work."""
    if args.store is not None and args.db is not None:
        raise UsageError(
            "serve: give --db PATH (SQLite) or --store postgresql://... (PostgreSQL), not both"
        )
    if args.overlay and args.mesh is not None:
        raise UsageError("serve: --overlay serves Envoys of any mesh; it takes no --mesh")
    for part in OVERLAY_PORTS:
        if getattr(args, f"{part}_listen") and getattr(args, f"{part}_port") is not None:
            raise UsageError(f"serve: give --{part}-listen or --{part}-port, not both")
    if args.baseline_window < args.baseline_min_seconds:
        raise UsageError(
            f"serve: --baseline-window ({args.baseline_window:g} s) must be at least "
            f"--baseline-min-seconds ({args.baseline_min_seconds:g} s): a shorter window "
            "never holds enough history, so every guarded injection would be refused"
        )


def cmd_serve(args: argparse.Namespace) -> None:
    check_serve_flags(args)
    mesh = None if args.overlay else load_mesh(args.mesh or DEFAULT_MESH)
    slos = load_catalogue(args.slos, mesh.services if mesh else None) if args.slos else None
    if slos and not args.prometheus_url:
        needing = sorted(name for name, slo in slos.items() if slo.source == "prometheus")
        if needing:
            raise CatalogueError(f"{', '.join(needing)}: source prometheus needs --prometheus-url")
    declared = mesh.control if mesh else None
    listen = {}
    for part, overlay_port in OVERLAY_PORTS.items():
        host, port = getattr(args, f"{part}_listen") or ("127.0.0.1", None)
        if port is None:
            port = getattr(args, f"{part}_port")
        if port is None:
            port = getattr(declared, f"{part}_port") if declared else overlay_port
        listen[f"{part}_host"], listen[f"{part}_port"] = host, port
    try:
        config = ServerConfig(
            mesh=mesh,
            **listen,
            **_web_listen(args),
            istio_stats_port=args.istio_stats_port,
            fault_slots=args.fault_slots
            or (OVERLAY_FAULT_SLOTS if args.overlay else DEFAULT_FAULT_SLOTS),
            deadman_ttl=args.deadman_ttl,
            ack_timeout=args.ack_timeout,
            slos=slos,
            prometheus_url=args.prometheus_url,
            guard_tick=args.guard_tick,
            baseline_min_seconds=args.baseline_min_seconds,
            baseline_window=args.baseline_window,
            db_path=None if args.store else args.db or default_db_path(),
            store_url=args.store,
            audit_key_file=args.audit_key_file,
            auth=args.auth,
            tls=_tls_config(args),
            approval=_approval_policy(args),
            retain_days=args.retain_days,
            keep_finished=args.keep_finished,
            notify=tuple(args.notify),
            web_url=args.web_url,
            dependency_graph=_dependency_graph(args.dependency_graph),
            replica_name=args.replica_name,
        )
    except ValueError as exc:  # e.g. local auth on a non-loopback --api-listen
        raise UsageError(f"serve: {exc}") from exc

    async def run() -> None:
        server = ControlServer(config)
        await server.start()
        await until_signalled()
        await server.stop()

    asyncio.run(run())


def _web_listen(args: argparse.Namespace) -> dict[str, Any]:
    if args.web_listen is None:
        return {}
    host, port = args.web_listen
    return {"web_host": host, "web_port": port}


def _tls_config(args: argparse.Namespace) -> TlsConfig | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.client_ca is not None:
            raise UsageError("serve: --client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("serve: --tls-cert and --tls-key go together")
    return TlsConfig(args.tls_cert, args.tls_key, args.client_ca)


def _approval_policy(args: argparse.Namespace) -> ApprovalPolicy:
    limits = {
        "max_pods": args.approval_max_pods,
        "max_percentage": args.approval_max_percentage,
        "max_duration_seconds": args.approval_max_duration,
    }
    given = {name: value for name, value in limits.items() if value is not None}
    return ApprovalPolicy(**given, timeout_seconds=args.approval_timeout)


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _dependency_graph(path: Path | None) -> DependencyGraph | None:
    """`--dependency-graph FILE`, its problems as a usage error naming the file."""
    if path is None:
        return None
    try:
        return parse_graph(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ScheduleError) as exc:
        raise UsageError(f"serve: --dependency-graph {path}: {exc}") from exc
