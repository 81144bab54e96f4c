"""The mesh model: the demo mesh's shape, validation of bad meshes, round trips."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from faultplane.model.mesh import PORT_NAMES, LoadSpec, Mesh, MeshError, load_mesh, parse_mesh

ROOT = Path(__file__).parent.parent
DEMO_MESH = ROOT / "envoy-configs" / "mesh.yaml"


@pytest.fixture(scope="module")
def demo() -> Mesh:
    return load_mesh(DEMO_MESH)


# --- the demo mesh ------------------------------------------------------------------------


def test_demo_mesh_services_and_dependencies(demo: Mesh) -> None:
    assert list(demo.services) == ["payments-api", "fraud-scoring", "ledger"]
    assert demo.services["payments-api"].dependencies == ("fraud-scoring", "ledger")
    assert demo.services["fraud-scoring"].dependencies == ()
    assert demo.services["ledger"].dependencies == ()


def test_demo_mesh_pods(demo: Mesh) -> None:
    counts = {name: len(service.pods) for name, service in demo.services.items()}
    assert counts == {"payments-api": 4, "fraud-scoring": 2, "ledger": 1}
    assert len(demo.pods) == 7
    assert len({pod.name for pod in demo.pods}) == 7
    for name, service in demo.services.items():
        assert all(pod.service == name for pod in service.pods)

    shards = Counter(pod.labels["shard"] for pod in demo.services["payments-api"].pods)
    assert shards == Counter({"south-1": 3, "north-1": 1})
    assert demo.pod("payments-api-4") is not None
    assert demo.pod("payments-api-4").labels == {"shard": "north-1", "tier": "critical"}
    assert demo.pod("ledger-1").service == "ledger"
    assert demo.pod("no-such-pod") is None


def test_demo_mesh_ports_load_and_control(demo: Mesh) -> None:
    assert dict(demo.pod("payments-api-1").ports.items()) == {
        "app": 18010,
        "ingress": 18011,
        "egress": 18012,
        "admin": 18013,
    }
    all_ports = [port for pod in demo.pods for _, port in pod.ports.items()]
    assert len(all_ports) == len(set(all_ports)) == 7 * len(PORT_NAMES)
    assert (demo.control.xds_port, demo.control.api_port, demo.control.metrics_port) == (
        18000,
        18001,
        18002,
    )
    assert demo.load == LoadSpec(
        service="payments-api", method="POST", path="/merchant-write", rate_per_second=20.0
    )


# --- bad meshes ---------------------------------------------------------------------------


def _ports(base: int) -> dict[str, int]:
    return {name: base + i for i, name in enumerate(PORT_NAMES)}


def good_doc() -> dict[str, Any]:
    """A small valid mesh; each bad case below breaks exactly one thing in it."""
    return {
        "services": {
            "api": {
                "dependencies": ["db"],
                "pods": [
                    {"name": "api-1", "labels": {"shard": "a"}, "ports": _ports(20010)},
                    {"name": "api-2", "labels": {"shard": "b"}, "ports": _ports(20020)},
                ],
            },
            "db": {
                "dependencies": [],
                "pods": [{"name": "db-1", "labels": {}, "ports": _ports(20110)}],
            },
        },
        "load": {"service": "api", "method": "POST", "path": "/w", "rate_per_second": 5},
        "control": {"xds_port": 20000, "api_port": 20001, "metrics_port": 20002},
    }


def test_good_doc_is_valid() -> None:
    """The base of the bad cases parses, so each bad case fails for its own reason."""
    mesh = parse_mesh(good_doc())
    assert [pod.name for pod in mesh.pods] == ["api-1", "api-2", "db-1"]


def _edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = good_doc()
    change(doc)
    return doc


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path in doc; integer parts index lists."""
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value


def _with(path: str, value: Any) -> dict[str, Any]:
    return _edit(lambda doc: _set(doc, path, value))


def _without(path: str) -> dict[str, Any]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return _edit(change)


def _append_pod(service: str, pod: dict[str, Any]) -> dict[str, Any]:
    return _edit(lambda doc: doc["services"][service]["pods"].append(pod))


def _three_service_cycle(doc: dict[str, Any]) -> None:
    doc["services"]["db"]["dependencies"] = ["cache"]
    doc["services"]["cache"] = {
        "dependencies": ["api"],
        "pods": [{"name": "cache-1", "ports": _ports(20210)}],
    }


BAD_MESHES = [
    pytest.param(
        _with("services.api.dependencies", ["db", "cache"]),
        ["services.api.dependencies", "unknown dependency 'cache'"],
        id="unknown-dependency",
    ),
    pytest.param(
        _with("services.db.pods.0.name", "api-2"),
        ["services.db.pods", "duplicate pod 'api-2'", "already in services.api"],
        id="duplicate-pod-across-services",
    ),
    pytest.param(
        _with("services.api.pods.1.name", "api-1"),
        ["services.api.pods", "duplicate pod 'api-1'", "already in services.api"],
        id="duplicate-pod-within-service",
    ),
    pytest.param(
        _with("services.db.pods.0.ports.ingress", 20021),
        ["port clash", "20021", "api-2.ports.ingress", "db-1.ports.ingress"],
        id="port-clash-between-pods",
    ),
    pytest.param(
        _with("services.api.pods.0.ports.admin", 20000),
        ["port clash", "20000", "control.xds_port", "api-1.ports.admin"],
        id="port-clash-with-control",
    ),
    pytest.param(
        _with("services.api.pods.0.ports.egress", 20010),
        ["port clash", "20010", "api-1.ports.app", "api-1.ports.egress"],
        id="port-clash-within-pod",
    ),
    pytest.param(
        _with("services.db.dependencies", ["api"]),
        ["dependency cycle", "api -> db -> api"],
        id="dependency-cycle",
    ),
    pytest.param(
        _edit(_three_service_cycle),
        ["dependency cycle", "api -> db -> cache -> api"],
        id="dependency-cycle-of-three",
    ),
    pytest.param(
        _with("services.db.dependencies", ["db"]),
        ["services.db.dependencies", "cannot call itself"],
        id="self-dependency",
    ),
    pytest.param(
        _with("services.api.dependencies", ["db", "db"]),
        ["services.api.dependencies", "lists a service twice"],
        id="duplicate-dependency",
    ),
    pytest.param(
        _without("services.api.pods.1.ports"),
        ["services.api.pods[1].ports", "must be a mapping"],
        id="missing-ports",
    ),
    pytest.param(
        _without("services.api.pods.1.ports.admin"),
        ["services.api.pods[1].ports.admin", "1-65535"],
        id="missing-one-port",
    ),
    pytest.param(
        _with("services.api.pods.0.ports.extra", 20099),
        ["services.api.pods[0].ports", "unknown port name", "extra"],
        id="unknown-port-name",
    ),
    pytest.param(
        _with("services.db.pods.0.ports.egress", 70000),
        ["services.db.pods[0].ports.egress", "1-65535"],
        id="port-above-range",
    ),
    pytest.param(
        _with("services.db.pods.0.ports.app", 0),
        ["services.db.pods[0].ports.app", "1-65535"],
        id="port-zero",
    ),
    pytest.param(
        _with("services.db.pods.0.ports.app", "20110"),
        ["services.db.pods[0].ports.app", "1-65535"],
        id="port-as-string",
    ),
    pytest.param(
        _with("control.api_port", 65536),
        ["control.api_port", "1-65535"],
        id="control-port-out-of-range",
    ),
    pytest.param(
        _with("services.api.pods.0.labels.shard", "south 1"),
        ["services.api.pods[0].labels.shard", "'south 1'", "not a valid label value"],
        id="bad-label-value",
    ),
    pytest.param(
        _with("services.api.pods.0.labels.shard", 7),
        ["services.api.pods[0].labels.shard", "not a valid label value"],
        id="non-string-label-value",
    ),
    pytest.param(
        _with("services.api.pods.0.labels.-bad", "x"),
        ["services.api.pods[0].labels", "'-bad'", "not a valid label key"],
        id="bad-label-key",
    ),
    pytest.param(
        _with("services.api.pods.0.name", "API_1"),
        ["services.api.pods[0].name", "DNS label"],
        id="bad-pod-name",
    ),
    pytest.param(
        _edit(lambda doc: doc["services"].update({"Bad_Name": doc["services"].pop("db")})),
        ["services.Bad_Name", "DNS label"],
        id="bad-service-name",
    ),
    pytest.param(
        _with("services.db.pods", []),
        ["services.db.pods", "at least one pod"],
        id="service-without-pods",
    ),
    pytest.param(
        _with("load.service", "billing"),
        ["load.service", "unknown service 'billing'"],
        id="unknown-load-service",
    ),
    pytest.param(
        _with("load.method", "DELETE"),
        ["load.method"],
        id="bad-load-method",
    ),
    pytest.param(
        _with("load.rate_per_second", 0),
        ["load.rate_per_second"],
        id="zero-load-rate",
    ),
    pytest.param(
        _with("services", {}),
        ["services", "at least one service"],
        id="empty-services",
    ),
    pytest.param(
        _without("services"),
        ["services", "must be a mapping"],
        id="no-services-key",
    ),
    pytest.param(
        _with("services", ["api", "db"]),
        ["services", "must be a mapping"],
        id="services-not-a-mapping",
    ),
    pytest.param(
        ["services"],
        ["must be a mapping", "services"],
        id="document-is-a-list",
    ),
    pytest.param(
        "services: {}",
        ["must be a mapping"],
        id="document-is-a-string",
    ),
    pytest.param(
        None,
        ["must be a mapping"],
        id="document-is-empty",
    ),
]


@pytest.mark.parametrize(("doc", "expected"), BAD_MESHES)
def test_bad_mesh_is_rejected_with_a_precise_message(doc: Any, expected: list[str]) -> None:
    with pytest.raises(MeshError) as info:
        parse_mesh(copy.deepcopy(doc))
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_bad_mesh_file_message_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(_with("services.api.dependencies", ["db", "cache"])))
    with pytest.raises(MeshError) as info:
        load_mesh(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "services.api.dependencies: unknown dependency 'cache'" in message


def test_invalid_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("services:\n  api: {dependencies: [db\n  db: }\n")
    with pytest.raises(MeshError) as info:
        load_mesh(path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid YAML" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "mesh.yaml"
    with pytest.raises(MeshError) as info:
        load_mesh(path)
    message = str(info.value)
    assert str(path) in message
    assert "cannot read mesh file" in message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("")
    with pytest.raises(MeshError, match="must be a mapping"):
        load_mesh(path)


# --- round trips --------------------------------------------------------------------------


def test_demo_mesh_round_trips_through_to_dict(demo: Mesh) -> None:
    assert parse_mesh(demo.to_dict()) == demo


def test_demo_mesh_round_trips_through_yaml_text(demo: Mesh) -> None:
    assert parse_mesh(yaml.safe_load(yaml.safe_dump(demo.to_dict()))) == demo


def test_round_trip_without_load() -> None:
    mesh = parse_mesh(_without("load"))
    assert mesh.load is None
    assert "load" not in mesh.to_dict()
    assert parse_mesh(mesh.to_dict()) == mesh


def test_round_trip_is_sensitive_to_changes(demo: Mesh) -> None:
    """Guards the round-trip tests: equality really compares the content."""
    doc = demo.to_dict()
    doc["services"]["ledger"]["pods"][0]["labels"]["shard"] = "north-1"
    assert parse_mesh(doc) != demo


def test_with_ports_allocates_distinct_ports_and_keeps_the_rest(demo: Mesh) -> None:
    counter = itertools.count(40000)
    handed_out: list[int] = []

    def allocate() -> int:
        port = next(counter)
        handed_out.append(port)
        return port

    moved = demo.with_ports(allocate)

    pod_ports = [port for pod in moved.pods for _, port in pod.ports.items()]
    control_ports = [moved.control.xds_port, moved.control.api_port, moved.control.metrics_port]
    every_port = pod_ports + control_ports
    assert len(every_port) == 7 * len(PORT_NAMES) + 3
    assert len(set(every_port)) == len(every_port)
    assert sorted(every_port) == sorted(handed_out)
    assert not set(every_port) & {port for pod in demo.pods for _, port in pod.ports.items()}

    assert list(moved.services) == list(demo.services)
    for name, service in demo.services.items():
        assert moved.services[name].dependencies == service.dependencies
        assert [(p.name, p.service, p.labels, p.address) for p in moved.services[name].pods] == [
            (p.name, p.service, p.labels, p.address) for p in service.pods
        ]
    assert moved.load == demo.load
    # The original is untouched and the copy is itself a valid, round-trippable mesh.
    assert demo == load_mesh(DEMO_MESH)
    assert parse_mesh(moved.to_dict()) == moved
