"""Kernel faults through the control server: a real `faultplane serve`, a real
`faultplane agent` hosting one pod (a network namespace joined by veth to a far one with
a TCP sink), and the operator API over gRPC. What the API says (ACTIVE, evidence, ended)
is checked against the kernel (`nft list ruleset` in the pod's namespace) and traffic.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from faultplane.agent.capabilities import probe_capabilities
from faultplane.demo.processes import wait_until
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1.faultplane_pb2_grpc import FaultServiceStub as Stub
from tests.agent_stack import POD, PORT, AgentStack, kernel_request
from tests.helpers import run_cli, wait_state
from tests.netns import (
    Link,
    connects,
    needs_root_and_nft,
    sink_server,
    unique_subnet,
    unique_tag,
    veth_link,
)

pytestmark = [needs_root_and_nft, pytest.mark.asyncio(loop_scope="module")]

TTL = 2.0
ENDED = {pb.COMPLETED, pb.ABORTED, pb.FAILED}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def link() -> AsyncIterator[Link]:
    with veth_link(unique_tag(), unique_subnet()) as made:
        async with sink_server(made, PORT):
            assert await connects(made, PORT, 1, 5) == {"ok": 1}
            yield made


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(link: Link, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentStack]:
    made = AgentStack(link, tmp_path_factory.mktemp("agent-stack"), f"n{unique_tag()}", TTL)
    try:
        made.start_server()
        made.start_agent()
        await made.agent_listed()
        yield made
    finally:
        made.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def api(stack: AgentStack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(stack.api) as channel:
        yield stack.stub(channel)


async def _rules_gone(stack: AgentStack) -> bool:
    return f"faultplane:{POD}/" not in stack.rules()


async def test_agent_pod_is_listed_as_a_target_with_its_capabilities(stack: AgentStack) -> None:
    pod = await stack.agent_listed()
    assert pod.kind == "agent" and pod.service == "orders-app"
    assert dict(pod.labels) == {"tier": "web"} and pod.netns == stack.link.pod
    assert {"packet_loss", "partition", "reset", "bandwidth"} <= set(pod.capabilities)
    assert [x.type for x in pod.xds] == ["kernel"]
    if not probe_capabilities().netem:
        assert "latency" not in pod.capabilities and "no netem" in pod.capability_note


async def test_plan_shows_the_exact_nftables_rules(stack: AgentStack, api: Stub) -> None:
    plan = await api.PlanInjection(
        kernel_request(stack.link, {"type": "packet_loss", "percentage": 30})
    )
    assert list(plan.targets) == [stack.target] and not plan.sidecars
    (pod,) = plan.agent_pods
    assert pod.agent == stack.agent_name and pod.pod == POD and pod.netns == stack.link.pod
    far = stack.link.far_address
    assert pod.nft_commands[0] == f"flush table inet {stack.table}"
    assert pod.nft_commands[1] == (
        f"add rule inet {stack.table} egress ip daddr {far}/32 meta l4proto {{ tcp, udp }} "
        f'th dport {PORT} numgen random mod 10000 < 3000 drop comment "faultplane:{POD}/'
        + pod.nft_commands[1].rsplit("/", 1)[1]
    )
    assert f"faultplane:{POD}/" not in stack.rules()  # a plan changes nothing


async def test_cli_lists_the_agent_pod_and_plans_its_rules(
    stack: AgentStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    code, out, err = await run_cli("sidecars", "--api", stack.api)
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith(stack.target))
    assert "orders-app" in row and "tier=web" in row and " agent " in row
    assert "KERNEL FAULTS" in out and "packet_loss,partition,reset,bandwidth" in row
    document = tmp_path_factory.mktemp("plan") / "loss.json"
    request = kernel_request(stack.link, {"type": "packet_loss", "percentage": 30})
    document.write_text(json_format.MessageToJson(request, preserving_proto_field_name=True))
    code, out, err = await run_cli("plan", "-f", str(document), "--api", stack.api)
    assert code == 0, err
    assert f"{stack.target}: nft in netns {stack.link.pod} (one transaction)" in out
    assert f"  flush table inet {stack.table}" in out
    assert "numgen random mod 10000 < 3000 drop" in out


async def test_bad_cidr_is_invalid_argument_naming_the_field(stack: AgentStack, api: Stub) -> None:
    request = kernel_request(stack.link, {"type": "partition"})
    request.fault.cidr = "10.0.0.300/32"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.CreateInjection(request)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "fault.cidr: '10.0.0.300/32' is not an IP network" in refused.value.details()


async def test_latency_on_an_agent_pod_is_refused_without_netem(
    stack: AgentStack, api: Stub
) -> None:
    if probe_capabilities().netem:
        pytest.skip("this kernel has netem: kernel latency is accepted here")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.CreateInjection(kernel_request(stack.link, {"type": "latency", "fixed_ms": 200}))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details()
    assert f"target: sidecar {stack.target}: latency needs the netem qdisc" in details


async def test_partition_is_active_only_once_the_kernel_has_it_and_ends_at_its_deadline(
    stack: AgentStack, api: Stub
) -> None:
    created = await api.CreateInjection(
        kernel_request(stack.link, {"type": "partition"}, duration=4)
    )
    active = await wait_state(api, created.id, {pb.ACTIVE}, timeout=30)
    # ACTIVE is evidence the agent ACKed, and it ACKs only once nft holds the rules.
    assert f"faultplane:{POD}/{created.id}" in stack.rules()
    to_active = next(t for t in active.transitions if t.to_state == pb.ACTIVE)
    evidence = [e for e in to_active.evidence if e.sidecar == stack.target]
    assert evidence and all(e.type == "kernel" and e.outcome == "acked" for e in evidence)
    assert await connects(stack.link, PORT, 5, 0.5) == {"timeout": 5}

    ended = await wait_state(api, created.id, ENDED, timeout=30)
    assert ended.state == pb.COMPLETED
    assert await _rules_gone(stack)
    assert await connects(stack.link, PORT, 5, 5) == {"ok": 5}

    # The audit holds the agent's own answers: its ACK of the switch-on and of the end.
    audit = await api.ListAudit(pb.ListAuditRequest(injection_id=created.id))
    answers = [
        (entry["to"], e["outcome"])
        for entry in map(lambda a: json.loads(a.entry_json), audit.entries)
        if entry.get("kind") == "transition"
        for e in entry.get("evidence", ())
        if e["sidecar"] == stack.target and e["type"] == "kernel"
    ]
    assert ("ACTIVE", "acked") in answers and ("COMPLETED", "acked") in answers, answers


async def test_packet_loss_through_the_api_fails_connects_within_binomial_bounds(
    stack: AgentStack, api: Stub
) -> None:
    created = await api.CreateInjection(
        kernel_request(stack.link, {"type": "packet_loss", "percentage": 30})
    )
    await wait_state(api, created.id, {pb.ACTIVE}, timeout=30)
    count = 200
    outcomes = await connects(stack.link, PORT, count, 0.5)
    await api.AbortInjection(pb.AbortInjectionRequest(id=created.id, reason="measured"))
    # A connect fails when its SYN is dropped (the retransmit comes after 1 s): binomial
    # n=200, p=0.3, mean 60, sd 6.5; +-4.5 sd.
    assert 31 <= outcomes.get("timeout", 0) <= 89, outcomes
    assert outcomes.get("ok", 0) + outcomes.get("timeout", 0) == count
    assert await _rules_gone(stack)


async def test_abort_all_takes_a_reset_out_of_the_kernel(stack: AgentStack, api: Stub) -> None:
    created = await api.CreateInjection(kernel_request(stack.link, {"type": "reset"}))
    await wait_state(api, created.id, {pb.ACTIVE}, timeout=30)
    assert await connects(stack.link, PORT, 5, 5) == {"refused": 5}  # RST: refused at once

    aborted = await api.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="test over"))
    assert [a.id for a in aborted.aborted] == [created.id]
    # The withdrawal was ACKed by the agent before the abort returned.
    assert await _rules_gone(stack)
    assert await connects(stack.link, PORT, 5, 5) == {"ok": 5}


async def test_kernel_refusal_fails_the_injection_with_nfts_message(
    stack: AgentStack, api: Stub
) -> None:
    created = await api.CreateInjection(
        kernel_request(stack.link, {"type": "bandwidth", "kbps": 4294967295})
    )
    failed = await wait_state(api, created.id, ENDED, timeout=30)
    assert failed.state == pb.FAILED
    assert f"sidecar {stack.target} nacked kernel" in failed.reason
    assert "Value too large for defined data type" in failed.reason
    assert await _rules_gone(stack)


async def test_agent_sigkill_drops_every_rule_and_its_restart_regets_the_live_fault(
    stack: AgentStack, api: Stub
) -> None:
    created = await api.CreateInjection(kernel_request(stack.link, {"type": "partition"}))
    await wait_state(api, created.id, {pb.ACTIVE}, timeout=30)
    assert stack.agent is not None
    stack.agent.kill()
    killed = time.monotonic()
    await wait_until(lambda: _table_gone(stack), 5, "the owner table to go with the agent")
    assert time.monotonic() - killed < 2.0
    assert await connects(stack.link, PORT, 5, 5) == {"ok": 5}

    stack.start_agent()
    await wait_until(
        lambda: _has_rule(stack, created.id), 60, "the restarted agent to re-get the fault",
        stack.children(),
    )  # fmt: skip
    assert await connects(stack.link, PORT, 3, 0.5) == {"timeout": 3}
    await api.AbortInjection(pb.AbortInjectionRequest(id=created.id, reason="test over"))
    assert await _rules_gone(stack)


async def test_server_sigkill_leaves_the_fault_for_at_most_the_ttl(
    stack: AgentStack, api: Stub
) -> None:
    created = await api.CreateInjection(kernel_request(stack.link, {"type": "partition"}))
    await wait_state(api, created.id, {pb.ACTIVE}, timeout=30)
    assert stack.server is not None
    stack.server.kill()
    killed = time.monotonic()
    await wait_until(lambda: _rules_gone(stack), TTL + 5, "the agent to drop the lapsed fault")
    assert time.monotonic() - killed <= TTL + 1.0
    assert await connects(stack.link, PORT, 5, 5) == {"ok": 5}

    # A restarted server resumes the ACTIVE injection (restart semantics) and the agent,
    # reconnected, gets it back; then it is aborted as usual.
    stack.start_server()
    await wait_until(
        lambda: _has_rule(stack, created.id), 60, "the resumed fault on the agent",
        stack.children(),
    )  # fmt: skip
    async with grpc.aio.insecure_channel(stack.api) as channel:
        stub = stack.stub(channel)
        resumed = await stub.GetInjection(pb.GetInjectionRequest(id=created.id))
        assert resumed.state == pb.ACTIVE
        await stub.AbortInjection(pb.AbortInjectionRequest(id=created.id, reason="test over"))
    assert await _rules_gone(stack)


async def _table_gone(stack: AgentStack) -> bool:
    return stack.table not in stack.rules()


async def _has_rule(stack: AgentStack, injection_id: str) -> bool:
    return f"faultplane:{POD}/{injection_id}" in stack.rules()


async def test_server_sigkill_cannot_stretch_a_kernel_fault_past_its_deadline(
    stack: AgentStack,
) -> None:
    """With a TTL far longer than the run, the lease the agent holds still ends at the
    injection's deadline (plus the lifecycle's 0.5 s grace): the agent removes it then."""
    assert stack.server is not None
    stack.server.stop(timeout=10)
    stack.ttl = 60.0
    try:
        stack.start_server()
        await stack.agent_listed()
        async with grpc.aio.insecure_channel(stack.api) as channel:
            stub = stack.stub(channel)
            created = await stub.CreateInjection(
                kernel_request(stack.link, {"type": "partition"}, duration=3)
            )
            active = await wait_state(stub, created.id, {pb.ACTIVE}, timeout=30)
        stack.server.kill()
        await wait_until(lambda: _rules_gone(stack), 15, "the deadline to end the lease")
        assert time.time() <= active.ends_at.ToNanoseconds() / 1e9 + 2.5  # grace + polling
    finally:
        stack.server.stop(timeout=10)
        stack.ttl = TTL
        stack.start_server()  # restored: past its deadline, it completes; nothing comes back
        await stack.agent_listed()
    assert await _rules_gone(stack)
