"""`faultplane demo --kernel`: the database story, kernel-level, on one machine (root).

An app pod (a network namespace) queries a real PostgreSQL across a veth pair (the far
namespace: the "managed database" no sidecar sees). A node agent hosts the pod, and the
control server (`serve`, overlay mode: no mesh file; agents connect over ADS) drives it
through the same API as sidecar faults. The app exports its query success in Envoy's stats
form, so the guard reads the SLO `orders-db-success` from it. Two experiments:
1. 30 % packet loss on the pod's packets to the database, to its deadline: queries slow
   down (retransmissions) but succeed: hypothesis held;
2. a partition from the database, guarded by `orders-db-success >= 0.9`: queries fail,
   and the guard withdraws it on its own: hypothesis refuted.
Each phase is measured in the app's own query success and latency.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import yaml
from google.protobuf import json_format

from faultplane.demo.far_database import PORT, FarDatabase, postgres_bindir
from faultplane.demo.netns import Link, missing_privileges, ruleset, veth_link
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, ProcessGroup, wait_until
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc

SERVICE = "orders-app"
POD = "orders-app-1"
AGENT = "demo-node"
SLO = "orders-db-success"
CATALOGUE = {
    "slos": {
        SLO: {"service": SERVICE, "stat_prefix": "db", "window_seconds": 3,
              "description": "the app's database queries that succeeded"},
    }
}  # fmt: skip
HOST = "127.0.0.1"


def demo_refusal() -> str | None:
    """Why the kernel demo cannot run here (it needs root, nft and PostgreSQL)."""
    why = missing_privileges()
    if why is not None:
        return f"faultplane demo --kernel {why}; run it as root (e.g. sudo)"
    if postgres_bindir() is None:
        return "faultplane demo --kernel needs PostgreSQL's binaries (apt-get install postgresql)"
    if importlib.util.find_spec("psycopg") is None:
        return "faultplane demo --kernel needs psycopg: pip install 'faultplane[postgresql]'"
    return None


def say(text: str, to_stderr: bool) -> None:
    print(text, file=sys.stderr if to_stderr else sys.stdout, flush=True)


def request(
    link: Link, fault: dict[str, Any], duration: float, minimum: float
) -> pb.InjectionRequest:
    document = {
        "target": {"service": SERVICE, "selector": "", "max_pods": 1},
        "fault": {"layer": "kernel", "cidr": f"{link.far_address}/32", "port": PORT, **fault},
        "duration_seconds": duration,
        "steady_state": {"slo": SLO, "min": minimum, "abort_after": 2},
        "hypothesis": f"orders-app survives a {fault['type']} on its database link",
        "owner": "demo@faultplane.local",
    }
    return json_format.ParseDict(document, pb.InjectionRequest())


class KernelDemo:
    def __init__(self, run_dir: Path, duration: float, as_json: bool) -> None:
        self.run_dir = run_dir
        self.duration = duration
        self.as_json = as_json
        self.processes = ProcessGroup()
        ports = PortAllocator()
        self.api_port, self.xds_port, self.app_port = ports(), ports(), ports()
        self.metrics_port = ports()
        self.children: list[Child] = []

    def say(self, text: str) -> None:
        say(text, self.as_json)

    async def run(self, link: Link) -> dict[str, Any]:
        database = FarDatabase(link, postgres_bindir())  # type: ignore[arg-type]
        try:
            database.start()
            self._start(link, database.url)
            await self._wait_ready()
            return await self._stories(link)
        finally:
            self.processes.stop_all()
            database.stop()

    def _start(self, link: Link, url: str) -> None:
        slos = self.run_dir / "slos.yaml"
        slos.write_text(yaml.safe_dump(CATALOGUE))
        pods = self.run_dir / "pods.yaml"
        pod = {"name": POD, "service": SERVICE, "netns": link.pod, "labels": {"tier": "web"},
               "stats_address": f"{HOST}:{self.app_port}"}  # fmt: skip
        pods.write_text(yaml.safe_dump({"pods": [pod]}))
        python = [sys.executable, "-m", "faultplane"]
        serve = [*python, "serve", "--overlay", "--auth", "local",
                 "--db", str(self.run_dir / "fp.db"), "--slos", str(slos),
                 "--baseline-min-seconds", "0", "--guard-tick", "0.5",
                 "--deadman-ttl", "3", "--api-port", str(self.api_port),
                 "--xds-port", str(self.xds_port),
                 "--metrics-port", str(self.metrics_port)]  # fmt: skip
        agent = [*python, "agent", "--pods", str(pods), "--xds", f"{HOST}:{self.xds_port}",
                 "--name", AGENT]  # fmt: skip
        app = [sys.executable, "-m", "faultplane.demo.kernel_app", "--netns", link.pod,
               "--url", url, "--port", str(self.app_port)]  # fmt: skip
        for name, argv in (("control-server", serve), ("agent", agent), ("app", app)):
            child = Child(name, argv, self.run_dir / f"{name}.log")
            self.children.append(self.processes.spawn(child))

    async def _wait_ready(self) -> None:
        """The app's queries succeed and the agent's pod is a target."""

        async def ready() -> bool:
            summary = await self._summary(time.time() - 1)
            async with grpc.aio.insecure_channel(f"{HOST}:{self.api_port}") as channel:
                stub = faultplane_pb2_grpc.FaultServiceStub(channel)
                try:
                    listed = await stub.ListSidecars(pb.ListSidecarsRequest(), timeout=2)
                except grpc.aio.AioRpcError:
                    return False
            pods = [s for s in listed.sidecars if s.kind == "agent" and s.connected]
            return bool(pods) and bool(summary.get("ok"))

        self.say("starting PostgreSQL (far namespace), the control server, the agent, the app")
        await wait_until(ready, 90, "the app's queries and the agent's pod", self.children)

    async def _summary(self, since: float, until: float | None = None) -> dict[str, Any]:
        span = f"since={since}" + (f"&until={until}" if until is not None else "")
        url = f"http://{HOST}:{self.app_port}/summary?{span}"
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as reply:
                return dict(await reply.json())
        except (aiohttp.ClientError, OSError, ValueError):
            return {}

    async def _phase(self, name: str, seconds: float) -> dict[str, Any]:
        started = time.time()
        await asyncio.sleep(seconds)
        return {"phase": name, **await self._summary(started)}

    async def _stories(self, link: Link) -> dict[str, Any]:
        phases = [await self._phase("before", 3)]
        async with grpc.aio.insecure_channel(f"{HOST}:{self.api_port}") as channel:
            stub = faultplane_pb2_grpc.FaultServiceStub(channel)
            loss_request = request(
                link, {"type": "packet_loss", "percentage": 30}, self.duration, 0.5
            )
            plan = await stub.PlanInjection(loss_request)
            self.say("plan: the agent runs, in netns " + plan.agent_pods[0].netns + ":")
            for command in plan.agent_pods[0].nft_commands:
                self.say(f"  {command}")
            loss = await stub.CreateInjection(loss_request)
            self.say(f"{loss.id}: 30% packet loss to the database for {self.duration:g}s")
            active = await self._until(stub, loss.id, {pb.ACTIVE})
            phases.append({**await self._phase("loss", self.duration * 0.8), "rules": _rules(link)})
            loss_end = await self._until(stub, loss.id, _ENDED, self.duration + 30)
            self.say(f"{loss.id}: {pb.State.Name(loss_end.state)}, {loss_end.verdict}")
            phases.append(await self._phase("after loss", 3))

            cut = await stub.CreateInjection(request(link, {"type": "partition"}, 60, 0.9))
            self.say(f"{cut.id}: partition from the database, guarded by {SLO} >= 0.9")
            await self._until(stub, cut.id, {pb.ACTIVE})
            cut_end = await self._until(stub, cut.id, _ENDED, 60)
            # While the cut was on: from ACTIVE (the agent ACKed: the rule is in the kernel)
            # to the withdrawal ACKed.
            active_at = next(t.at for t in cut_end.transitions if t.to_state == pb.ACTIVE)
            on = (_seconds(active_at), _seconds(cut_end.ended_at))
            phases.append({"phase": "partition", **await self._summary(*on)})
            self.say(
                f"{cut.id}: {pb.State.Name(cut_end.state)}, {cut_end.verdict}: {cut_end.reason}"
            )
            withdrawn_ms = None
            if cut_end.HasField("breach_limit_at"):
                late = _seconds(cut_end.ended_at) - _seconds(cut_end.breach_limit_at)
                withdrawn_ms = round(late * 1000, 1)
                self.say(f"withdrawn, ACKed by the agent (rules out of the kernel), "
                         f"{withdrawn_ms} ms after the breach had lasted abort_after")  # fmt: skip
            phases.append(await self._phase("after", 3))
        left = _rules(link)
        self._table(phases)
        return {
            "phases": phases,
            "injections": [
                {
                    "id": inj.id,
                    "state": pb.State.Name(inj.state),
                    "verdict": inj.verdict,
                    "reason": inj.reason,
                }
                for inj in (loss_end, cut_end)
            ],
            "activated": active.state == pb.ACTIVE,
            "guard_withdrawal_ms": withdrawn_ms,
            "rules_left": left,
        }

    async def _until(
        self, stub: Any, injection_id: str, states: set[int], timeout: float = 30
    ) -> pb.Injection:
        found: list[pb.Injection] = []

        async def reached() -> bool:
            injection = await stub.GetInjection(pb.GetInjectionRequest(id=injection_id))
            found[:] = [injection]
            return injection.state in states

        await wait_until(reached, timeout, f"{injection_id} to reach its state", self.children, 0.2)
        return found[0]

    def _table(self, phases: list[dict[str, Any]]) -> None:
        self.say(f"{'PHASE':<12} {'QUERIES':>7} {'OK %':>6} {'P50 MS':>7} {'P99 MS':>7}")
        for row in phases:
            queries, ok = row.get("queries") or 0, row.get("ok") or 0
            share = f"{100 * ok / queries:.1f}" if queries else "-"
            p50 = row.get("p50_ms")
            p99 = row.get("p99_ms")
            self.say(f"{row['phase']:<12} {queries:>7} {share:>6} {p50 or '-':>7} {p99 or '-':>7}")


_ENDED = {pb.COMPLETED, pb.ABORTED, pb.FAILED}


def _seconds(stamp: Any) -> float:
    return float(stamp.ToNanoseconds()) / 1e9


def _rules(link: Link) -> int:
    """How many faultplane rules the pod's kernel holds now."""
    return ruleset(link.pod).count('comment "faultplane:')


async def run_kernel_demo(duration: float, as_json: bool) -> int | str:
    refusal = demo_refusal()
    if refusal is not None:
        return refusal
    run_dir = Path(tempfile.mkdtemp(prefix="faultplane-kernel-demo-"))
    tag = f"{os.getpid() % 100000}"
    with veth_link(f"d{tag}", os.getpid() % 250 + 1) as link:
        summary = await KernelDemo(run_dir, duration, as_json).run(link)
    if as_json:
        print(json.dumps(summary), flush=True)
    return 0
