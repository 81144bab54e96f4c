"""`faultplane agent`: the node agent as a command (root: it changes namespaces' nftables).

It starts one nft per pod (each creating the agent's empty owner table in the pod's
namespace), then streams faults from the control server until SIGTERM/SIGINT, and on the
way out closes every nft, which takes every fault out of the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

import structlog

from faultplane.agent.capabilities import probe_capabilities
from faultplane.agent.nft import NftError
from faultplane.agent.pods import Pod, PodsError, load_pods
from faultplane.agent.rules import KernelRules
from faultplane.agent.xds_client import AgentClient, node_of
from faultplane.kernel.ruleset import table_name

log = structlog.get_logger("faultplane.agent")


def add_agent_command(commands: Any) -> None:
    agent = commands.add_parser(
        "agent", help="the node agent: kernel faults (nftables) in the pods' network namespaces"
    )
    agent.add_argument("--pods", type=Path, required=True, help="YAML: the pods this node hosts")
    agent.add_argument(
        "--xds", required=True, metavar="HOST:PORT", help="the control server's xDS address"
    )
    agent.add_argument("--name", default=socket.gethostname(), help="node id (default: hostname)")
    agent.add_argument("--cluster", default="faultplane-agent", help="xDS node cluster")
    agent.set_defaults(handler=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int | str:
    if os.geteuid() != 0:
        return "faultplane agent: must run as root (it changes nftables in network namespaces)"
    for tool in ("nft", "ip"):
        if shutil.which(tool) is None:
            return (
                f"faultplane agent: `{tool}` not found (Debian: apt-get install nftables iproute2)"
            )
    try:
        pods = load_pods(args.pods)
        table_name(args.name)
    except PodsError as exc:
        return f"faultplane agent: bad pods file: {exc}"
    except ValueError as exc:
        return f"faultplane agent: --name: {exc}"
    try:
        return asyncio.run(run_agent(args.name, args.cluster, args.xds, pods))
    except NftError as exc:  # at start: a namespace that is not there, nft refusing
        return f"faultplane agent: {exc}"


async def run_agent(name: str, cluster: str, xds: str, pods: list[Pod]) -> int:
    capabilities = probe_capabilities()
    rules = KernelRules(name, pods, capabilities)
    try:
        await rules.start()
        client = AgentClient(xds, node_of(name, cluster, pods, capabilities), rules)
        streaming = asyncio.create_task(client.run())
        print(
            f"agent {name}: {len(pods)} pods, table {rules.table}, kinds "
            f"{', '.join(capabilities.kinds)}, xDS {xds}",
            flush=True,
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        stopping = asyncio.create_task(stop.wait())
        # The stream and the lease reaper end only by a bug: then fail loudly (the tables
        # go with us) rather than run on without them.
        await asyncio.wait({stopping, streaming, rules.reaper}, return_when=asyncio.FIRST_COMPLETED)
        if rules.reaper.done():
            rules.reaper.result()  # raises what stopped it
        for task in (stopping, streaming):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await rules.close()
    print(f"agent {name}: stopped, tables removed", flush=True)
    return 0
