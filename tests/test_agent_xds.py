"""The node agent as a process, driven over real gRPC by a minimal in-test ADS server.

One agent (`faultplane agent`, a child process in the host namespace) hosts one pod: a
network namespace joined by veth to a far namespace with a TCP server in it. The test's
ADS server on 127.0.0.1 sends it kernel faults, leased, and reads its ACKs and NACKs.
What an ACK promises is checked right after it: the rules are in the namespace's kernel
and the traffic shows them. The last test SIGKILLs the agent.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2, json_format

from faultplane.agent.capabilities import probe_capabilities
from faultplane.agent.xds_client import METADATA_KEY, NETWORK_FAULT
from faultplane.demo.ports import free_port
from faultplane.demo.processes import Child, wait_until
from faultplane.kernel import ruleset
from faultplane.kernel.v1 import kernel_pb2
from tests.netns import (
    Link,
    connects,
    needs_root_and_nft,
    sink_server,
    unique_subnet,
    unique_tag,
    veth_link,
)
from tests.netns import ruleset as list_ruleset

pytestmark = [needs_root_and_nft, pytest.mark.asyncio(loop_scope="module")]

PORT = 5432
POD = "app-1"
AGENT = "node-t"
TABLE = ruleset.table_name(AGENT)
LONG_TTL = 60.0


class FakeAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Just enough of a control server: pushes what the test says, records the answers."""

    def __init__(self) -> None:
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        # None: end the stream, as a control server that goes away does.
        self.outbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = asyncio.Queue()
        self._sent = 0

    async def StreamAggregatedResources(  # noqa: N802 (the proto's name)
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async def read() -> None:
            async for request in request_iterator:
                self.requests.append(request)

        reader = asyncio.create_task(read())
        try:
            while (response := await self.outbox.get()) is not None:
                yield response
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the test dropped the stream")
        finally:
            reader.cancel()

    def initial_requests(self) -> list[discovery_pb2.DiscoveryRequest]:
        """The first request of each stream (no nonce: it answers nothing)."""
        return [request for request in self.requests if not request.response_nonce]

    def push(self, faults: list[dict[str, Any]], ttl: float = LONG_TTL) -> str:
        """Send the whole set `faults`, each leased for `ttl`; returns the nonce."""
        self._sent += 1
        response = discovery_pb2.DiscoveryResponse(
            version_info=f"v{self._sent}", type_url=NETWORK_FAULT, nonce=f"n{self._sent}"
        )
        lease = duration_pb2.Duration()
        lease.FromMilliseconds(int(ttl * 1000))
        for fields in faults:
            message = json_format.ParseDict(fields, kernel_pb2.NetworkFault())
            body = any_pb2.Any()
            body.Pack(message)
            wrapped = discovery_pb2.Resource(
                name=f"{message.pod}/{message.id}", resource=body, ttl=lease
            )
            envelope = response.resources.add()
            envelope.Pack(wrapped)
        self.outbox.put_nowait(response)
        return response.nonce

    async def answer(self, nonce: str, timeout: float = 10.0) -> discovery_pb2.DiscoveryRequest:
        """The agent's ACK or NACK of the response `nonce`."""
        found: list[discovery_pb2.DiscoveryRequest] = []

        async def answered() -> bool:
            found.extend(r for r in self.requests if r.response_nonce == nonce)
            return bool(found)

        await wait_until(answered, timeout, f"the agent's answer to {nonce}")
        return found[0]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def link() -> AsyncIterator[Link]:
    with veth_link(unique_tag(), unique_subnet()) as made:
        async with sink_server(made, PORT):
            assert await connects(made, PORT, 1, 5) == {"ok": 1}  # ARP resolved
            yield made


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ads() -> AsyncIterator[tuple[FakeAds, int]]:
    server = grpc.aio.server()
    fake = FakeAds()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(fake, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        yield fake, port
    finally:
        await server.stop(0)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(
    link: Link, ads: tuple[FakeAds, int], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Child]:
    fake, port = ads
    run_dir = tmp_path_factory.mktemp("agent")
    pods = run_dir / "pods.yaml"
    pod = {"name": POD, "service": "app", "labels": {"zone": "a"}, "netns": link.pod}
    pods.write_text(yaml.safe_dump({"pods": [pod]}))
    argv = [sys.executable, "-m", "faultplane", "agent", "--pods", str(pods)]
    argv += ["--xds", f"127.0.0.1:{port}", "--name", AGENT]
    child = Child("agent", argv, Path(run_dir / "agent.log")).start()
    try:
        await wait_until(_async(lambda: bool(fake.requests)), 60, "the agent's stream", [child])
        yield child
    finally:
        child.stop()


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(ads: tuple[FakeAds, int], agent: Child) -> AsyncIterator[None]:
    yield
    if agent.alive():
        fake, _ = ads
        assert _acked(await fake.answer(fake.push([])))


def _async(check: Any) -> Any:
    async def checked() -> bool:
        return bool(check())

    return checked


def _acked(request: discovery_pb2.DiscoveryRequest) -> bool:
    return not request.HasField("error_detail")


def fault(link: Link, fault_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    base = {"pod": POD, "id": fault_id, "kind": kind, "direction": "egress"}
    return {**base, "cidr": f"{link.far_address}/32", "port": PORT, **fields}


async def test_agent_registers_its_pods_and_capabilities(ads: tuple[FakeAds, int]) -> None:
    fake, _ = ads
    first = fake.requests[0]
    assert first.type_url == NETWORK_FAULT and first.node.id == AGENT
    info = json_format.MessageToDict(first.node.metadata)[METADATA_KEY]
    assert info["pods"][0]["name"] == POD and info["pods"][0]["labels"] == {"zone": "a"}
    capabilities = probe_capabilities()
    assert info["capabilities"]["netem"] is capabilities.netem
    assert info["capabilities"]["kinds"] == capabilities.kinds


async def test_ack_comes_once_the_rules_are_in_the_kernel(
    ads: tuple[FakeAds, int], link: Link
) -> None:
    fake, _ = ads
    answer = await fake.answer(fake.push([fault(link, "cut", "partition")]))
    assert _acked(answer) and answer.version_info == f"v{fake._sent}"
    # No waiting: the ACK itself says the rules are there.
    assert f"faultplane:{POD}/cut" in list_ruleset(link.pod)
    assert await connects(link, PORT, 5, 0.5) == {"timeout": 5}


async def test_removing_a_fault_from_the_set_takes_it_out_of_the_kernel(
    ads: tuple[FakeAds, int], link: Link
) -> None:
    fake, _ = ads
    assert _acked(await fake.answer(fake.push([fault(link, "gone", "reset")])))
    assert await connects(link, PORT, 3, 0.5) == {"refused": 3}
    assert _acked(await fake.answer(fake.push([])))
    assert f"{POD}/gone" not in list_ruleset(link.pod)
    assert await connects(link, PORT, 3, 0.5) == {"ok": 3}


async def test_invalid_cidr_is_nacked_naming_the_field_and_changes_nothing(
    ads: tuple[FakeAds, int], link: Link
) -> None:
    fake, _ = ads
    assert _acked(await fake.answer(fake.push([fault(link, "kept", "partition")])))
    acked_version = f"v{fake._sent}"
    bad = fault(link, "bad", "packet_loss", cidr="10.0.0.300/8", percentage=20)
    answer = await fake.answer(fake.push([fault(link, "kept", "partition"), bad]))
    assert answer.error_detail.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "resource.cidr: '10.0.0.300/8' is not an IP network" in answer.error_detail.message
    assert answer.version_info == acked_version
    assert f"{POD}/kept" in list_ruleset(link.pod)


async def test_fault_on_a_pod_the_agent_does_not_host_is_nacked(
    ads: tuple[FakeAds, int], link: Link
) -> None:
    fake, _ = ads
    elsewhere = {**fault(link, "x", "partition"), "pod": "db-9"}
    answer = await fake.answer(fake.push([elsewhere]))
    assert answer.error_detail.message == "db-9/x: pod 'db-9' is not hosted by this agent"


async def test_kernel_refusal_is_nacked_with_nfts_message(
    ads: tuple[FakeAds, int], link: Link
) -> None:
    fake, _ = ads
    assert _acked(await fake.answer(fake.push([fault(link, "kept", "partition")])))
    too_fast = fault(link, "fast", "bandwidth", kbps=4294967295)
    answer = await fake.answer(fake.push([fault(link, "kept", "partition"), too_fast]))
    assert "Value too large for defined data type" in answer.error_detail.message
    assert f"pod {POD} (netns {link.pod})" in answer.error_detail.message
    rules = list_ruleset(link.pod)
    assert f"{POD}/kept" in rules and f"{POD}/fast" not in rules


async def test_latency_is_refused_when_the_kernel_has_no_netem(
    ads: tuple[FakeAds, int], link: Link
) -> None:
    if probe_capabilities().netem:
        pytest.skip("this kernel has netem: latency is not refused here")
    fake, _ = ads
    answer = await fake.answer(fake.push([fault(link, "slow", "latency", delay_ms=200)]))
    assert "latency needs the netem qdisc, which this kernel lacks" in answer.error_detail.message


async def test_renewed_lease_keeps_the_fault(ads: tuple[FakeAds, int], link: Link) -> None:
    fake, _ = ads
    ttl = 1.5
    until = time.monotonic() + 2.2 * ttl  # without renewals it would lapse in between
    while time.monotonic() < until:  # the control server's lease re-sends, every ttl/3
        assert _acked(await fake.answer(fake.push([fault(link, "held", "partition")], ttl)))
        await asyncio.sleep(ttl / 3)
    assert f"{POD}/held" in list_ruleset(link.pod)


async def test_lost_stream_keeps_the_faults_and_resumes_from_the_acked_version(
    ads: tuple[FakeAds, int], link: Link, agent: Child
) -> None:
    fake, _ = ads
    assert _acked(await fake.answer(fake.push([fault(link, "stay", "partition")])))
    acked = f"v{fake._sent}"
    streams = len(fake.initial_requests())
    fake.outbox.put_nowait(None)
    await wait_until(
        _async(lambda: len(fake.initial_requests()) > streams), 10, "a new stream", [agent]
    )
    resumed = fake.initial_requests()[-1]
    assert resumed.version_info == acked and resumed.node.id == AGENT
    # Its lease has not lapsed: the outage alone does not take the fault off.
    assert f"{POD}/stay" in list_ruleset(link.pod)


async def test_lapsed_lease_removes_the_fault_within_ttl_plus_one_second(
    ads: tuple[FakeAds, int], link: Link
) -> None:
    fake, _ = ads
    ttl = 1.0
    sent = time.monotonic()
    assert _acked(await fake.answer(fake.push([fault(link, "lease", "partition")], ttl)))
    assert await connects(link, PORT, 3, 0.3) == {"timeout": 3}
    # The control server says nothing more, as if SIGKILLed.
    await wait_until(
        _async(lambda: f"{POD}/lease" not in list_ruleset(link.pod)), ttl + 5, "the lapse"
    )
    elapsed = time.monotonic() - sent
    assert elapsed <= ttl + 1, f"removed {elapsed:.2f}s after it was sent with a {ttl}s lease"
    assert await connects(link, PORT, 10, 0.5) == {"ok": 10}


async def test_sigterm_stops_an_agent_and_removes_its_table(
    link: Link, agent: Child, tmp_path: Path
) -> None:
    pods = tmp_path / "pods.yaml"
    pods.write_text(yaml.safe_dump({"pods": [{"name": POD, "service": "app", "netns": link.pod}]}))
    argv = [sys.executable, "-m", "faultplane", "agent", "--pods", str(pods), "--name", "other"]
    # No control server there: the agent still holds its (empty) table, and retries.
    argv += ["--xds", f"127.0.0.1:{free_port()}"]
    other = Child("other agent", argv, tmp_path / "agent.log").start()
    try:
        table = ruleset.table_name("other")
        await wait_until(_async(lambda: table in list_ruleset(link.pod)), 60, table, [other])
        assert TABLE in list_ruleset(link.pod)  # each agent has its own table
        assert other.stop() == 0
        assert table not in list_ruleset(link.pod)
        assert "tables removed" in other.log_path.read_text()
    finally:
        other.stop()


async def test_bad_pods_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    pods = tmp_path / "pods.yaml"
    pods.write_text(yaml.safe_dump({"pods": [{"name": POD, "service": "app"}]}))
    argv = [sys.executable, "-m", "faultplane", "agent", "--pods", str(pods), "--xds", "x:1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "bad pods file" in done.stderr and "pods[0].netns: None is not a name" in done.stderr


async def test_missing_namespace_fails_the_start_naming_the_pod(tmp_path: Path) -> None:
    pods = tmp_path / "pods.yaml"
    pod = {"name": "ghost", "service": "app", "netns": "fp-no-such-netns"}
    pods.write_text(yaml.safe_dump({"pods": [pod]}))
    argv = [sys.executable, "-m", "faultplane", "agent", "--pods", str(pods), "--xds", "x:1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "pod ghost: nft in netns fp-no-such-netns exited" in done.stderr
    assert 'Cannot open network namespace "fp-no-such-netns"' in done.stderr


async def test_sigkill_of_agent_clears_every_fault_at_once(
    ads: tuple[FakeAds, int], link: Link, agent: Child
) -> None:
    fake, _ = ads
    faults = [fault(link, "a", "partition"), fault(link, "b", "packet_loss", percentage=50)]
    assert _acked(await fake.answer(fake.push(faults)))
    assert TABLE in list_ruleset(link.pod)
    assert await connects(link, PORT, 5, 0.5) == {"timeout": 5}
    agent.kill()
    assert agent.process is not None and agent.process.wait(5) == -9
    await wait_until(_async(lambda: TABLE not in list_ruleset(link.pod)), 2, "the table to go")
    assert list_ruleset(link.pod).strip() == ""
    assert await connects(link, PORT, 50, 0.5) == {"ok": 50}
