"""The `faultplane` command: the control server, the local mesh, the demo, operator calls."""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc

from faultplane.api.validate import MAX_DURATION_SECONDS
from faultplane.cli.connection import rpc_error_message
from faultplane.cli.governance import add_governance_commands
from faultplane.cli.injections import UsageError, add_commands
from faultplane.demo.bootstrap import render_bootstrap, template_beside
from faultplane.demo.launcher import HOST, MeshRun
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.lifecycle.registry import KEEP_FINISHED
from faultplane.lifecycle.retention import DEFAULT_RETAIN_DAYS
from faultplane.model.mesh import MeshError, load_mesh
from faultplane.observability import logs
from faultplane.render.resources import DEFAULT_FAULT_SLOTS
from faultplane.server.control import ControlServer, ServerConfig, TlsConfig
from faultplane.slo.catalogue import CatalogueError, load_catalogue
from faultplane.store import StoreError, default_db_path

DEFAULT_MESH = Path("envoy-configs/mesh.yaml")

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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        sys.exit(args.handler(args) or 0)
    except MeshError as exc:
        sys.exit(f"faultplane: bad mesh: {exc}")
    except CatalogueError as exc:
        sys.exit(f"faultplane: bad SLO catalogue: {exc}")
    except StoreError as exc:  # e.g. an audit key others may read, a newer schema
        sys.exit(f"faultplane: {exc}")
    except UsageError as exc:
        print(f"faultplane: {exc}", file=sys.stderr)
        sys.exit(2)
    except grpc.RpcError as exc:
        sys.exit(rpc_error_message(exc, args))  # exit 1: a refused or failed call
    except KeyboardInterrupt:
        sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faultplane", description=__doc__)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the control server")
    serve.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    port = integer(0, 65535)
    serve.add_argument("--xds-port", type=port, help="default: the mesh's control.xds_port")
    serve.add_argument("--api-port", type=port, help="default: the mesh's control.api_port")
    serve.add_argument("--metrics-port", type=port, help="default: the mesh's control.metrics_port")
    serve.add_argument(
        "--fault-slots", type=integer(1, MAX_FAULT_SLOTS), default=DEFAULT_FAULT_SLOTS
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
    serve.add_argument("--db", type=Path, help="the store (default: $FAULTPLANE_STATE_DIR)")
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
    serve.set_defaults(handler=cmd_serve)

    mesh = commands.add_parser("mesh", help="the local demo mesh")
    mesh_commands = mesh.add_subparsers(required=True, metavar="ACTION")
    up = mesh_commands.add_parser("up", help="start the mesh and run until SIGTERM/SIGINT")
    up.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    up.add_argument("--state-file", type=Path, default=Path("faultplane-mesh.json"))
    up.add_argument("--run-dir", type=Path, help="logs and rendered configs (default: a temp dir)")
    up.add_argument("--declared-ports", action="store_true", help="use mesh.yaml's ports")
    up.set_defaults(handler=cmd_mesh_up)
    boot = mesh_commands.add_parser("bootstraps", help="render each pod's Envoy bootstrap")
    boot.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    boot.add_argument("--out", type=Path, required=True)
    boot.set_defaults(handler=cmd_mesh_bootstraps)

    demo = commands.add_parser("demo", help="bring the mesh up, drive traffic, tear it down")
    demo.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    demo.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    demo.add_argument("--json", action="store_true", help="end with one JSON summary line")
    demo.set_defaults(handler=cmd_demo)

    add_commands(commands)
    add_governance_commands(commands)
    return parser


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


def check_serve_flags(args: argparse.Namespace) -> None:
    """What no single flag's range can say: combinations that could never work."""
    if args.baseline_window < args.baseline_min_seconds:
        raise UsageError(
            f"serve: --baseline-window ({args.baseline_window:g} s) must be at least "
            f"--baseline-min-seconds ({args.baseline_min_seconds:g} s): a shorter window "
            "never holds enough history, so every guarded injection would be refused"
        )


def cmd_serve(args: argparse.Namespace) -> None:
    check_serve_flags(args)
    mesh = load_mesh(args.mesh)
    slos = load_catalogue(args.slos, mesh.services) if args.slos else None
    if slos and not args.prometheus_url:
        needing = sorted(name for name, slo in slos.items() if slo.source == "prometheus")
        if needing:
            raise CatalogueError(f"{', '.join(needing)}: source prometheus needs --prometheus-url")
    config = ServerConfig(
        mesh=mesh,
        xds_port=args.xds_port if args.xds_port is not None else mesh.control.xds_port,
        api_port=args.api_port if args.api_port is not None else mesh.control.api_port,
        metrics_port=args.metrics_port
        if args.metrics_port is not None
        else mesh.control.metrics_port,
        fault_slots=args.fault_slots,
        deadman_ttl=args.deadman_ttl,
        ack_timeout=args.ack_timeout,
        slos=slos,
        prometheus_url=args.prometheus_url,
        guard_tick=args.guard_tick,
        baseline_min_seconds=args.baseline_min_seconds,
        baseline_window=args.baseline_window,
        db_path=args.db or default_db_path(),
        audit_key_file=args.audit_key_file,
        auth=args.auth,
        tls=_tls_config(args),
        approval=_approval_policy(args),
        retain_days=args.retain_days,
        keep_finished=args.keep_finished,
    )

    async def run() -> None:
        server = ControlServer(config)
        await server.start()
        await _until_signalled()
        await server.stop()

    asyncio.run(run())


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


def cmd_mesh_up(args: argparse.Namespace) -> None:
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="faultplane-mesh-"))

    async def run() -> None:
        async with MeshRun(args.mesh, run_dir, declared_ports=args.declared_ports) as mesh:
            mesh.write_state(args.state_file)
            print(f"mesh up: {len(mesh.pods)} sidecars, API {mesh.api_address}, "
                  f"state in {args.state_file}, logs in {run_dir}", flush=True)  # fmt: skip
            await _until_signalled()
        print("mesh down", flush=True)

    asyncio.run(run())


def cmd_mesh_bootstraps(args: argparse.Namespace) -> None:
    mesh = load_mesh(args.mesh)
    template = template_beside(args.mesh)
    args.out.mkdir(parents=True, exist_ok=True)
    for pod in mesh.pods:
        rendered = render_bootstrap(template, pod, HOST, mesh.control.xds_port)
        (args.out / f"{pod.name}.yaml").write_text(rendered)


def cmd_demo(args: argparse.Namespace) -> int:
    from faultplane.demo.stories import run_demo

    return asyncio.run(run_demo(args.mesh, args.duration, args.json))


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
