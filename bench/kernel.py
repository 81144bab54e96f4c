"""`python -m bench kernel [--rounds N] [--ttl S]`: the node agent's two dead-men, measured
(root: network namespaces and nftables).

A real `faultplane serve` (overlay mode, `--deadman-ttl S`), a real `faultplane agent`
hosting one pod (a network namespace joined by veth to a far one with a TCP listener),
and a partition injected through the operator API. Each round:
- agent SIGKILL: from the kill until the pod's kernel has no faultplane table (polled
  with `nft list ruleset`) and until a TCP connect through the former partition
  succeeds. The kernel drops an owner table when its nft process dies: no agent code runs;
- control server SIGKILL: from the kill until the agent has taken the fault out (its
  lease, renewed every TTL/3 by the server, lapses): bounded by the TTL.
Then both are started again (the server resumes the injection, the agent re-gets it) and
the injection is aborted. Results: `bench/results/kernel.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format

from faultplane.demo.netns import Link, missing_privileges, ruleset, veth_link
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, wait_until
from faultplane.kernel.ruleset import table_name
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc

RESULTS = Path(__file__).resolve().parent / "results"
PORT = 5432
POD = "app-1"
AGENT = "bench-node"
CATALOGUE = {"slos": {"app-ok": {"service": "app", "window_seconds": 60}}}
POLL = 0.005  # seconds between looks at the kernel


class Bench:
    def __init__(self, link: Link, run_dir: Path, ttl: float) -> None:
        self.link, self.run_dir, self.ttl = link, run_dir, ttl
        ports = PortAllocator()
        self.api, self.xds = f"127.0.0.1:{ports()}", f"127.0.0.1:{ports()}"
        self.metrics_port = ports()
        self.server: Child | None = None
        self.agent: Child | None = None

    def start_server(self) -> None:
        slos = self.run_dir / "slos.yaml"
        slos.write_text(yaml.safe_dump(CATALOGUE))
        api_port, xds_port = self.api.rsplit(":")[1], self.xds.rsplit(":")[1]
        argv = [sys.executable, "-m", "faultplane", "serve", "--overlay", "--auth", "local",
                "--db", str(self.run_dir / "fp.db"), "--slos", str(slos),
                "--baseline-min-seconds", "0", "--deadman-ttl", str(self.ttl),
                "--api-port", api_port, "--xds-port", xds_port,
                "--metrics-port", str(self.metrics_port)]  # fmt: skip
        self.server = Child("serve", argv, self.run_dir / "serve.log").start()

    def start_agent(self) -> None:
        pods = self.run_dir / "pods.yaml"
        pod = {"name": POD, "service": "app", "netns": self.link.pod}
        pods.write_text(yaml.safe_dump({"pods": [pod]}))
        argv = [sys.executable, "-m", "faultplane", "agent", "--pods", str(pods),
                "--xds", self.xds, "--name", AGENT]  # fmt: skip
        self.agent = Child("agent", argv, self.run_dir / "agent.log").start()

    def children(self) -> list[Child]:
        return [c for c in (self.server, self.agent) if c is not None]

    def stop(self) -> None:
        for child in self.children():
            child.stop(timeout=10)

    async def call(self, method: str, message: Any) -> Any:
        async with grpc.aio.insecure_channel(self.api) as channel:
            stub = faultplane_pb2_grpc.FaultServiceStub(channel)
            return await getattr(stub, method)(message, timeout=10)

    async def agent_ready(self) -> None:
        async def listed() -> bool:
            try:
                reply = await self.call("ListSidecars", pb.ListSidecarsRequest())
            except grpc.aio.AioRpcError:
                return False
            return any(s.kind == "agent" and s.connected and s.xds and s.xds[0].version_acked
                       for s in reply.sidecars)  # fmt: skip

        await wait_until(listed, 90, "the agent's pod", self.children(), 0.1)

    async def partition(self) -> str:
        document = {
            "target": {"service": "app", "max_pods": 1},
            "fault": {"layer": "kernel", "type": "partition",
                      "cidr": f"{self.link.far_address}/32", "port": PORT},
            "duration_seconds": 600,
            "steady_state": {"slo": "app-ok", "min": 0.0, "abort_after": 3600},
            "hypothesis": "bench", "owner": "bench",
        }  # fmt: skip
        created = await self.call(
            "CreateInjection", json_format.ParseDict(document, pb.InjectionRequest())
        )
        await self.until_state(created.id, pb.ACTIVE)
        return str(created.id)

    async def until_state(self, injection_id: str, state: int) -> None:
        async def reached() -> bool:
            found = await self.call("GetInjection", pb.GetInjectionRequest(id=injection_id))
            return bool(found.state == state)

        await wait_until(reached, 60, f"{injection_id} in {pb.State.Name(state)}", (), 0.05)

    async def abort(self, injection_id: str) -> None:
        await self.call("AbortInjection", pb.AbortInjectionRequest(id=injection_id, reason="bench"))

    async def rule_present(self, injection_id: str) -> bool:
        return f"faultplane:{POD}/{injection_id}" in ruleset(self.link.pod)


async def seconds_until(check: Any, timeout: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError("not within the bound")
        await asyncio.sleep(POLL)
    return time.monotonic() - started


async def connect_ok(link: Link) -> bool:
    sock = link.socket_in(link.pod)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (link.far_address, PORT)), 0.2
        )
        return True
    except (TimeoutError, OSError):
        return False
    finally:
        sock.close()


async def one_round(bench: Bench) -> dict[str, float]:
    injection = await bench.partition()
    assert bench.agent is not None and bench.server is not None
    table = table_name(AGENT)
    bench.agent.kill()

    async def table_gone() -> bool:
        return table not in ruleset(bench.link.pod)

    agent_rules = await seconds_until(table_gone, 10)
    agent_traffic = await seconds_until(lambda: connect_ok(bench.link), 10) + agent_rules
    bench.start_agent()
    await wait_until(lambda: bench.rule_present(injection), 90, "the fault back", bench.children())
    bench.server.kill()

    async def fault_gone() -> bool:
        return not await bench.rule_present(injection)

    server_rules = await seconds_until(fault_gone, bench.ttl + 10)
    bench.start_server()
    await bench.agent_ready()
    await wait_until(
        lambda: bench.rule_present(injection), 90, "the resumed fault", bench.children()
    )
    await bench.abort(injection)
    return {"agent_kill_rules_gone_s": agent_rules, "agent_kill_traffic_back_s": agent_traffic,
            "server_kill_fault_gone_s": server_rules}  # fmt: skip


async def measure(rounds: int, ttl: float) -> list[dict[str, float]]:
    run_dir = Path(tempfile.mkdtemp(prefix="faultplane-bench-kernel-"))
    with veth_link(f"b{os.getpid() % 100000}", os.getpid() % 250 + 1) as link:
        listener = link.executor(link.far).submit(socket.socket).result()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((link.far_address, PORT))
        listener.listen(4096)  # accepts (the kernel completes handshakes) with no app
        bench = Bench(link, run_dir, ttl)
        try:
            bench.start_server()
            bench.start_agent()
            await bench.agent_ready()
            return [await one_round(bench) for _ in range(rounds)]
        finally:
            bench.stop()
            listener.close()


def summarise(rows: list[dict[str, float]], ttl: float) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(rows), "ttl_s": ttl}
    for key in rows[0]:
        values = sorted(row[key] for row in rows)
        out[key] = {"p50": round(statistics.median(values), 4), "max": round(values[-1], 4)}
    return out


def markdown(summary: dict[str, Any]) -> str:
    ttl = summary["ttl_s"]
    lines = [
        f"# Node agent dead-men ({summary['rounds']} rounds, --deadman-ttl {ttl:g} s)",
        "",
        "| dead-man | p50 s | max s |",
        "|---|---|---|",
    ]
    names = {
        "agent_kill_rules_gone_s": "agent SIGKILL -> owner table gone (kernel)",
        "agent_kill_traffic_back_s": "agent SIGKILL -> a connect through the cut succeeds",
        "server_kill_fault_gone_s": f"server SIGKILL -> agent removed the fault (TTL {ttl:g} s)",
    }
    for key, name in names.items():
        lines.append(f"| {name} | {summary[key]['p50']:.3f} | {summary[key]['max']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench kernel", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ttl", type=float, default=2.0, help="the server's --deadman-ttl")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    why = missing_privileges()
    if why is not None:
        print(f"python -m bench kernel {why}", file=sys.stderr)
        return 2
    summary = summarise(asyncio.run(measure(args.rounds, args.ttl)), args.ttl)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernel.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "kernel.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0
