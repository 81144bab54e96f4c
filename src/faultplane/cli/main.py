"""The `faultplane` command: the control server, the local mesh, the demo, operator calls."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import grpc

from faultplane.agent.command import add_agent_command
from faultplane.cli.connection import rpc_error_message
from faultplane.cli.governance import add_governance_commands
from faultplane.cli.injections import UsageError, add_commands
from faultplane.cli.overlay import add_overlay_commands
from faultplane.cli.run import add_run_command
from faultplane.cli.scheduling import add_scheduling_commands
from faultplane.cli.serve import (
    DEFAULT_MESH,
    add_serve_command,
    integer,
    store_url,
    until_signalled,
)
from faultplane.demo.bootstrap import render_bootstrap, template_beside
from faultplane.demo.launcher import HOST, MeshRun
from faultplane.demo.replicas import replica_store, with_xds_endpoints
from faultplane.model.mesh import MeshError, load_mesh
from faultplane.observability import logs
from faultplane.slo.catalogue import CatalogueError
from faultplane.store import StoreError


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

    add_serve_command(commands)

    mesh = commands.add_parser("mesh", help="the local demo mesh")
    mesh_commands = mesh.add_subparsers(required=True, metavar="ACTION")
    up = mesh_commands.add_parser("up", help="start the mesh and run until SIGTERM/SIGINT")
    up.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    up.add_argument("--state-file", type=Path, default=Path("faultplane-mesh.json"))
    up.add_argument("--run-dir", type=Path, help="logs and rendered configs (default: a temp dir)")
    up.add_argument("--declared-ports", action="store_true", help="use mesh.yaml's ports")
    up.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to the control server (repeatable), e.g. "
        "--server-arg=--baseline-min-seconds=0",
    )
    add_replica_flags(up)
    up.set_defaults(handler=cmd_mesh_up)
    boot = mesh_commands.add_parser("bootstraps", help="render each pod's Envoy bootstrap")
    boot.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    boot.add_argument("--out", type=Path, required=True)
    boot.add_argument(
        "--xds-port",
        type=integer(1, 65535),
        action="append",
        help="a replica's xDS port on 127.0.0.1, repeated for each (default: the mesh's)",
    )
    boot.set_defaults(handler=cmd_mesh_bootstraps)

    demo = commands.add_parser("demo", help="bring the mesh up, drive traffic, tear it down")
    demo.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    demo.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    demo.add_argument("--json", action="store_true", help="end with one JSON summary line")
    demo.add_argument(
        "--overlay",
        action="store_true",
        help="the same stories on sidecars configured by another control plane, "
        "with faultplane as `serve --overlay` (only the fault layer)",
    )
    demo.add_argument(
        "--kernel",
        action="store_true",
        help="root only: kernel faults by a node agent on an app's link to a real PostgreSQL",
    )
    add_replica_flags(demo)
    demo.set_defaults(handler=cmd_demo)

    add_commands(commands)
    add_governance_commands(commands)
    add_scheduling_commands(commands)
    add_overlay_commands(commands)
    add_run_command(commands)
    add_agent_command(commands)
    return parser


def cmd_mesh_up(args: argparse.Namespace) -> None:
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="faultplane-mesh-"))

    async def run() -> None:
        with replica_store(args.store, args.replicas) as store_url:
            await up(store_url)

    async def up(store_url: str | None) -> None:
        async with MeshRun(
            args.mesh,
            run_dir,
            declared_ports=args.declared_ports,
            server_args=tuple(args.server_arg),
            replicas=args.replicas,
            store_url=store_url,
        ) as mesh:
            mesh.write_state(args.state_file)
            print(f"mesh up: {len(mesh.pods)} sidecars, API {mesh.api_address}, "
                  f"state in {args.state_file}, logs in {run_dir}", flush=True)  # fmt: skip
            if mesh.web_url:
                print(f"dashboard: {mesh.web_url}", flush=True)
            await until_signalled()
        print("mesh down", flush=True)

    asyncio.run(run())


def cmd_mesh_bootstraps(args: argparse.Namespace) -> None:
    mesh = load_mesh(args.mesh)
    template = template_beside(args.mesh)
    args.out.mkdir(parents=True, exist_ok=True)
    for pod in mesh.pods:
        ports = args.xds_port or [mesh.control.xds_port]
        rendered = render_bootstrap(template, pod, HOST, ports[0])
        if len(ports) > 1:  # every replica, for Envoy to fail over between
            rendered = with_xds_endpoints(rendered, HOST, ports)
        (args.out / f"{pod.name}.yaml").write_text(rendered)


def cmd_demo(args: argparse.Namespace) -> int | str:
    if args.kernel:
        from faultplane.demo.kernel import run_kernel_demo

        return asyncio.run(run_kernel_demo(args.duration, args.json))
    from faultplane.demo.stories import run_demo

    if args.replicas > 1:
        if args.overlay:
            raise UsageError("demo: --replicas runs the full mesh; it takes no --overlay")
        from faultplane.demo.replica_stories import run_replica_demo

        with replica_store(args.store, args.replicas) as store_url:
            assert store_url is not None
            return asyncio.run(
                run_replica_demo(args.mesh, args.duration, args.json, args.replicas, store_url)
            )
    return asyncio.run(run_demo(args.mesh, args.duration, args.json, overlay=args.overlay))


def add_replica_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replicas",
        type=integer(1, 9),
        default=1,
        help="control-server replicas sharing one PostgreSQL store; every sidecar lists "
        "them all and fails over between them (default 1)",
    )
    parser.add_argument(
        "--store",
        type=store_url,
        metavar="URL",
        help="the replicas' PostgreSQL store (default with --replicas > 1: a throwaway local "
        "PostgreSQL server, started as the postgres user)",
    )
