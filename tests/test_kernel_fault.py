"""Kernel faults as data: validation at the edge, and the exact nftables text they become.

No kernel here (no root needed): these pin what the agent will ask nft for, and that a
bad fault is refused naming the field and the reason before anything reaches nft.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from faultplane.agent.capabilities import Capabilities
from faultplane.agent.pods import PodsError, parse_pods
from faultplane.kernel import ruleset
from faultplane.kernel.fault import KernelFaultError, parse_fault, parse_network_fault

ROOT = Path(__file__).parent.parent
TABLE = "faultplane_node_1"


def fields(**overrides: Any) -> dict[str, Any]:
    base = {"pod": "app-1", "id": "inj-1", "kind": "packet_loss", "direction": "egress"}
    return {**base, "cidr": "10.200.0.2/32", "port": 5432, "percentage": 30, **overrides}


def problems(**overrides: Any) -> list[tuple[str, str]]:
    with pytest.raises(KernelFaultError) as raised:
        parse_fault(fields(**overrides))
    return raised.value.problems


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"cidr": "10.0.0.300/8"}, "fault.cidr", "'10.0.0.300/8' is not an IP network"),
        ({"port": 70000}, "fault.port", "must be a port in 1-65535, not 70000"),
        ({"port": -1}, "fault.port", "must be a port in 1-65535"),
        ({"percentage": 130}, "fault.percentage", "percentage in (0, 100], not 130"),
        ({"percentage": 0}, "fault.percentage", "percentage in (0, 100], not 0"),
        ({"direction": "up"}, "fault.direction", "must be egress or ingress, not 'up'"),
        ({"kind": "jitter"}, "fault.kind", "unknown kind 'jitter'"),
        ({"id": 'a"b'}, "fault.id", "is not a name"),
        ({"kbps": 10}, "fault.kbps", "not a field of a packet_loss fault"),
        ({"kind": "bandwidth", "percentage": None, "kbps": 0.5}, "fault.kbps", "whole KiB/s"),
    ],
)
def test_invalid_fault_names_the_field_and_the_reason(
    overrides: dict[str, Any], field: str, reason: str
) -> None:
    found = problems(**overrides)
    assert any(path == field and reason in why for path, why in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(cidr="nope", port=0x10000, percentage=101)
    assert [path for path, _ in found] == ["fault.cidr", "fault.port", "fault.percentage"]


def test_a_request_is_validated_before_any_pod_is_chosen() -> None:
    request = {"kind": "partition", "direction": "ingress", "cidr": "10.1.0.0/16"}
    spec = parse_network_fault(request)
    assert spec.on("db-1", "inj-9") == parse_fault({**request, "pod": "db-1", "id": "inj-9"})
    with pytest.raises(KernelFaultError, match=r"fault\.port: must be a port in 1-65535"):
        parse_network_fault({**request, "port": 0x10000})


def test_packet_loss_renders_one_tagged_rule_in_basis_points() -> None:
    fault = parse_fault(fields(percentage=25.5))
    assert ruleset.replace_pod(TABLE, [fault]) == (
        f"flush table inet {TABLE}; add rule inet {TABLE} egress ip daddr 10.200.0.2/32 "
        "meta l4proto { tcp, udp } th dport 5432 numgen random mod 10000 < 2550 drop "
        'comment "faultplane:app-1/inj-1"'
    )


def test_ingress_matches_the_far_end_as_source() -> None:
    fault = parse_fault(fields(kind="partition", direction="ingress", percentage=None))
    assert ruleset.fault_rules(fault) == [
        "ip saddr 10.200.0.2/32 meta l4proto { tcp, udp } th sport 5432 drop "
        'comment "faultplane:app-1/inj-1"'
    ]


def test_reset_answers_tcp_with_rst_and_udp_with_icmp() -> None:
    fault = parse_fault(fields(kind="reset", cidr="2001:db8::/64", port=None, percentage=None))
    assert [rule.split(" comment")[0] for rule in ruleset.fault_rules(fault)] == [
        "ip6 daddr 2001:db8::/64 meta l4proto tcp reject with tcp reset",
        "ip6 daddr 2001:db8::/64 meta l4proto udp reject with icmpx type port-unreachable",
    ]


def test_bandwidth_is_a_byte_rate_policer() -> None:
    fault = parse_fault(fields(kind="bandwidth", percentage=None, kbps=256, cidr=None))
    assert ruleset.fault_rules(fault) == [
        "meta l4proto { tcp, udp } th dport 5432 limit rate over 256 kbytes/second drop "
        'comment "faultplane:app-1/inj-1"'
    ]
    assert fault.describe() == "bandwidth 256KiB/s egress port 5432"


def test_an_empty_set_flushes_the_table_and_the_table_is_owned() -> None:
    assert ruleset.replace_pod(TABLE, []) == f"flush table inet {TABLE}"
    assert ruleset.create_table(TABLE).startswith(f"add table inet {TABLE} {{ flags owner; }}")
    assert ruleset.table_name("Node-1.a") == "faultplane_node_1_a"
    with pytest.raises(ValueError, match="agent name"):
        ruleset.table_name("node 1")


def test_latency_is_refused_without_netem_with_the_probes_reason() -> None:
    without = Capabilities(netem=False, netem_reason="Specified qdisc kind is unknown.")
    assert "latency" not in without.kinds
    assert without.refusal("latency") == (
        "latency needs the netem qdisc, which this kernel lacks (Specified qdisc kind is unknown.)"
    )
    assert without.refusal("packet_loss") is None
    # A kernel with netem: the agent still renders nftables rules only, so it does not
    # offer latency (admission refuses it by name) rather than accept one it cannot apply.
    with_netem = Capabilities(netem=True)
    assert "latency" not in with_netem.kinds and "packet_loss" in with_netem.kinds
    assert with_netem.refusal("latency") == (
        "latency needs the netem qdisc, which this agent does not drive yet"
    )


def test_pods_file_errors_name_the_entry_and_field() -> None:
    pods = parse_pods({"pods": [{"name": "a", "service": "db", "netns": "ns-a"}]})
    assert pods[0].metadata() == {"name": "a", "service": "db", "labels": {}, "netns": "ns-a"}
    with pytest.raises(PodsError, match=r"pods\[0\]\.netns: None is not a name"):
        parse_pods({"pods": [{"name": "a", "service": "db"}]})
    with pytest.raises(PodsError, match=r"pods\[0\]\.labels: must map text to text"):
        parse_pods({"pods": [{"name": "a", "service": "db", "netns": "n", "labels": [1]}]})
    twice = {"name": "a", "service": "db", "netns": "n"}
    with pytest.raises(PodsError, match=r"pods\[\]\.name 'a' appears twice"):
        parse_pods({"pods": [twice, {**twice, "netns": "m"}]})


def test_committed_kernel_stubs_match_regeneration(tmp_path: Path) -> None:
    proto = "protos/faultplane/kernel/v1/kernel.proto"
    command = [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos"]
    command += [f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}"]
    command += [f"--pyi_out={tmp_path}", proto]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    generated = tmp_path / "faultplane" / "kernel" / "v1"
    for name in ("kernel_pb2.py", "kernel_pb2.pyi", "kernel_pb2_grpc.py"):
        committed = ROOT / "src" / "faultplane" / "kernel" / "v1" / name
        assert committed.read_text() == (generated / name).read_text(), (
            f"{committed} is stale; run: python -m grpc_tools.protoc -Iprotos "
            f"--python_out=src --grpc_python_out=src --pyi_out=src {proto}"
        )
