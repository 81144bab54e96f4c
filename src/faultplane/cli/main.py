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
from faultplane.cli.serve import DEFAULT_MESH, add_serve_command, until_signalled
from faultplane.demo.bootstrap import render_bootstrap, template_beside
from faultplane.demo.launcher import HOST, MeshRun
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
    up.set_defaults(handler=cmd_mesh_up)
    boot = mesh_commands.add_parser("bootstraps", help="render each pod's Envoy bootstrap")
    boot.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    boot.add_argument("--out", type=Path, required=True)
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
        async with MeshRun(
            args.mesh,
            run_dir,
            declared_ports=args.declared_ports,
            server_args=tuple(args.server_arg),
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
        rendered = render_bootstrap(template, pod, HOST, mesh.control.xds_port)
        (args.out / f"{pod.name}.yaml").write_text(rendered)


def cmd_demo(args: argparse.Namespace) -> int:
    from faultplane.demo.stories import run_demo

    return asyncio.run(run_demo(args.mesh, args.duration, args.json, overlay=args.overlay))
