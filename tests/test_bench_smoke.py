"""The benchmark harness still runs: one cheap scenario with tiny parameters, and its report.

Numbers are not checked here (performance goals live in bench/, never as timed
assertions in tests); only that the harness measures and writes what it should.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("psutil", reason="the bench extra is not installed")

from bench import report
from bench.core import Context, Result
from bench.procs import Processes
from bench.scenarios import fanout
from tests.postgres import PostgresCluster, postgres_cluster  # noqa: F401  (a fixture)


async def test_fanout_with_twenty_simulated_sidecars_measures_and_reports(
    tmp_path: Path,
) -> None:
    result = Result("fanout", "smoke")
    with Processes(tmp_path / "logs") as procs:
        ctx = Context(quick=True, work=tmp_path, procs=procs)
        await fanout.one_size(ctx, result, 20, reps=1, window=0.5)
        assert not [c for c in procs._children if c.alive()]  # every process stopped

    figures = {f.name: f for f in result.figures}
    assert figures["K=20: streams held"].samples == [20.0]
    assert len(figures["K=20: change accepted -> all K ACKed"].samples) == 1
    assert figures["K=20: server RSS per stream"].samples[0] > 0
    # The floor ran in the same call, and faultplane's CPU per update is a ratio to it.
    assert figures["K=20: server CPU per sidecar update (response + ACK)"].samples[0] > 0
    assert [f for f in figures if f.startswith("K=20: floor: grpc.aio echo")]
    assert next(r.value for r in result.ratios if "/ floor" in r.name) > 0

    document = {
        "machine": {"cores": 2, "memory_gib": 1, "cpu": "x", "os": "x", "python": "3",
                    "envoy": "1.40.0", "grpcio": "1", "faultplane_commit": "abc",
                    "faultplane_dirty": False},
        "run": {"mode": "quick", "started": "now", "seconds": 1.0},
        "results": {"fanout": result.to_dict()},
    }  # fmt: skip
    report.write(tmp_path / "results", document, [result])
    written = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert written["results"]["fanout"]["figures"][0]["n"] == 1
    assert "K=20: streams held" in (tmp_path / "results" / "latest.md").read_text()


def test_simulated_sidecars_read_only_version_type_and_nonce_and_ack_in_bytes() -> None:
    """The load generator never parses resources, yet its ACK is the DiscoveryRequest
    Envoy would send (without the node, as with set_node_on_first_message_only)."""
    from envoy.service.discovery.v3 import discovery_pb2

    from bench import adsload
    from faultplane.xds import types

    response = discovery_pb2.DiscoveryResponse(version_info="v-3", type_url=types.ROUTE, nonce="17")
    response.resources.add(type_url="x", value=b"\x08" * 300)  # never looked into

    version, type_url, nonce = adsload.scan(response.SerializeToString())
    ack = discovery_pb2.DiscoveryRequest.FromString(adsload.ack(version, type_url, nonce))

    assert (version, type_url, nonce) == (b"v-3", types.ROUTE, b"17")
    assert (ack.version_info, ack.type_url, ack.response_nonce) == ("v-3", types.ROUTE, "17")
    assert list(ack.resource_names) == ["ingress", "egress"]
    assert not ack.HasField("node")


async def test_replica_fanout_over_two_replicas_measures_each_replica(
    tmp_path: Path,
    postgres_cluster: PostgresCluster,  # noqa: F811
) -> None:
    """Ten simulated sidecars split over two replicas on one PostgreSQL: the change
    created on r1 is ACKed by r2's sidecars too, and each replica's CPU is measured."""
    from bench.scenarios import replica_fanout

    result = Result("replica_fanout", "smoke")
    with Processes(tmp_path / "logs") as procs:
        ctx = Context(quick=True, work=tmp_path, procs=procs)
        url = postgres_cluster.create_database()
        await replica_fanout.one_layout(ctx, result, url, 10, 2, reps=1, idle_window=0.2)
        assert not [c for c in procs._children if c.alive()]  # every process stopped

    figures = {f.name: f for f in result.figures}
    assert len(figures["K=10 over 2 replicas: change accepted -> all K ACKed"].samples) == 1
    for replica in ("r1", "r2"):
        name = f"K=10 over 2 replicas: {replica} CPU per sidecar update (response + ACK)"
        assert figures[name].samples[0] > 0


def test_simulated_sidecars_tell_a_runtime_layer_with_a_fault_from_an_empty_one() -> None:
    """The soak's "faults left" counts what sidecars hold: a layer with keys, leased (in
    its TTL envelope) or not, is a fault; an empty layer is none."""
    from envoy.service.discovery.v3 import discovery_pb2
    from envoy.service.runtime.v3 import rtds_pb2
    from google.protobuf import duration_pb2

    from bench import adsload

    def response(keys: dict[str, float], leased: bool) -> bytes:
        runtime = rtds_pb2.Runtime(name="faultplane")
        runtime.layer.update(keys)
        message = discovery_pb2.DiscoveryResponse(version_info="1")
        if leased:
            envelope = discovery_pb2.Resource(
                name="faultplane", ttl=duration_pb2.Duration(seconds=9)
            )
            envelope.resource.Pack(runtime)
            message.resources.add().Pack(envelope)
        else:
            message.resources.add().Pack(runtime)
        return message.SerializeToString()

    assert adsload.runtime_has_fault(response({"faultplane.x.abort.percent": 50.0}, leased=True))
    assert adsload.runtime_has_fault(response({"faultplane.x.abort.percent": 50.0}, leased=False))
    assert not adsload.runtime_has_fault(response({}, leased=True))
    assert not adsload.runtime_has_fault(response({}, leased=False))
