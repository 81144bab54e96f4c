"""docker-compose.yml and the committed sidecar bootstraps agree with envoy-configs/mesh.yaml.

No Docker engine is needed: the compose file is parsed as YAML and every container is
checked against the mesh model, the way `faultplane mesh up --declared-ports` would run it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from faultplane.demo.bootstrap import render_bootstrap, template_beside
from faultplane.demo.launcher import HOST, envoy_argv
from faultplane.demo.replicas import with_xds_endpoints
from faultplane.model.mesh import Mesh, Pod, load_mesh

ROOT = Path(__file__).parent.parent
MESH_FILE = ROOT / "envoy-configs" / "mesh.yaml"
BOOTSTRAP_DIR = ROOT / "envoy-configs" / "bootstrap"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
FAULTPLANE_ROLES = ("control-server", "control-server-2", "loadgen")
POSTGRES_IMAGE = "postgres:16"
# The replicas' xDS ports, every sidecar's bootstrap lists both (faultplane.demo.replicas).
REPLICA_XDS_PORTS = (18000, 18004)
STORE_URL = "postgresql://postgres@127.0.0.1:15432/postgres"

MESH: Mesh = load_mesh(MESH_FILE)
PODS = MESH.pods
POD_IDS = [pod.name for pod in PODS]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def app_name(pod: Pod) -> str:
    return f"app-{pod.name}"


def sidecar_name(pod: Pod) -> str:
    return f"envoy-{pod.name}"


def command(service: dict[str, Any]) -> list[str]:
    argv = service["command"]
    assert isinstance(argv, list), "commands are argv lists, not shell strings"
    assert all(isinstance(a, str) for a in argv), f"non-string argv element in {argv}"
    return argv


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def one_flag(argv: list[str], flag: str) -> str:
    values = flag_values(argv, flag)
    assert len(values) == 1, f"{flag} given {len(values)} times in {argv}"
    return values[0]


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume."""
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), "volumes use the short syntax"
        source, target, *mode = volume.split(":")
        mounts.append((source, target, mode[0] if mode else "rw"))
    return mounts


def test_the_mesh_has_pods_and_load() -> None:
    # The other tests iterate over these; an empty mesh would make them pass vacuously.
    assert len(PODS) >= 2
    assert MESH.load is not None
    assert MESH.services[MESH.load.service].pods


def test_top_level_has_only_services_and_extension_fields(compose: dict[str, Any]) -> None:
    assert "services" in compose
    assert all(key in ("services", "volumes") or key.startswith("x-") for key in compose)
    assert compose["volumes"] == {"faultplane-keys": {}}  # the replicas' one audit key


def test_exactly_one_app_and_one_sidecar_per_pod_and_nothing_else(
    services: dict[str, dict[str, Any]],
) -> None:
    expected = {*FAULTPLANE_ROLES, "postgres"}
    expected |= {app_name(pod) for pod in PODS} | {sidecar_name(pod) for pod in PODS}
    assert set(services) == expected

    # By what they run, not only by name: one app process and one Envoy per pod.
    apps: dict[str, int] = {}
    sidecars: dict[str, int] = {}
    for name, service in services.items():
        if service.get("image") == POSTGRES_IMAGE:
            assert name == "postgres"
        elif service.get("image") == ENVOY_IMAGE:
            mounts = bind_mounts(service)
            assert len(mounts) == 1, name
            pod = Path(mounts[0][0]).stem
            sidecars[pod] = sidecars.get(pod, 0) + 1
        elif "faultplane.demo.app" in command(service):
            pod = one_flag(command(service), "--pod")
            apps[pod] = apps.get(pod, 0) + 1
        else:
            assert name in FAULTPLANE_ROLES, f"unexpected service {name}"
    assert apps == dict.fromkeys(POD_IDS, 1)
    assert sidecars == dict.fromkeys(POD_IDS, 1)


def test_every_container_uses_the_host_network(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("network_mode") == "host", name
        # Published ports mean nothing with host networking; the mesh's ports are used as is.
        assert "ports" not in service, name


def test_faultplane_containers_are_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    built = [
        name
        for name, service in services.items()
        if service.get("image") not in (ENVOY_IMAGE, POSTGRES_IMAGE)
    ]
    assert set(built) == {*FAULTPLANE_ROLES} | {app_name(pod) for pod in PODS}
    for name in built:
        build = services[name].get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context == ".", f"{name} is not built from the repo root"
        assert (ROOT / context / "Dockerfile").is_file()


def test_dockerfile() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert 'RUN pip install ".[postgresql]"' in instructions  # the replicas' store
    assert instructions[-1] == 'CMD ["faultplane", "serve", "--mesh", "envoy-configs/mesh.yaml"]'
    copied = [line.split()[1] for line in instructions if line.startswith("COPY ")]
    for source in ("pyproject.toml", "src", "envoy-configs"):
        assert source in copied or "." in copied, f"the image lacks {source}"
        assert (ROOT / source).exists()


def test_control_server_serves_on_the_mesh_control_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    server = services["control-server"]
    argv = command(server)
    assert argv[:2] == ["faultplane", "serve"]
    mesh_arg = one_flag(argv, "--mesh")
    assert (ROOT / mesh_arg).resolve() == MESH_FILE.resolve()
    assert int(one_flag(argv, "--xds-port")) == MESH.control.xds_port
    assert int(one_flag(argv, "--api-port")) == MESH.control.api_port
    assert int(one_flag(argv, "--metrics-port")) == MESH.control.metrics_port
    probe = " ".join(server["healthcheck"]["test"])
    assert f"127.0.0.1:{MESH.control.metrics_port}/" in probe


@pytest.mark.parametrize("pod", PODS, ids=POD_IDS)
def test_app_runs_the_pods_service_ports_and_dependencies(
    services: dict[str, dict[str, Any]], pod: Pod
) -> None:
    argv = command(services[app_name(pod)])
    assert argv[:3] == ["python", "-m", "faultplane.demo.app"]
    assert one_flag(argv, "--service") == pod.service
    assert one_flag(argv, "--pod") == pod.name
    assert int(one_flag(argv, "--port")) == pod.ports.app
    assert int(one_flag(argv, "--egress-port")) == pod.ports.egress
    assert flag_values(argv, "--dependency") == list(MESH.services[pod.service].dependencies)
    # Nothing beyond those flags (an unknown one would stop the app at start-up).
    deps = 2 * len(MESH.services[pod.service].dependencies)
    assert len(argv) == 3 + 8 + deps


@pytest.mark.parametrize("pod", PODS, ids=POD_IDS)
def test_sidecar_runs_envoy_on_the_pods_committed_bootstrap(
    services: dict[str, dict[str, Any]], pod: Pod
) -> None:
    sidecar = services[sidecar_name(pod)]
    assert sidecar["image"] == ENVOY_IMAGE
    [(source, target, mode)] = bind_mounts(sidecar)
    assert (ROOT / source).resolve() == (BOOTSTRAP_DIR / f"{pod.name}.yaml").resolve()
    assert mode == "ro"
    # The same Envoy flags as the local mesh, on the mounted bootstrap.
    argv = command(sidecar)
    assert argv == envoy_argv("envoy", Path(target))
    assert one_flag(argv, "-c") == target
    assert one_flag(argv, "--concurrency") == "1"
    depends = sidecar["depends_on"]
    assert "control-server" in depends

    bootstrap = yaml.safe_load((ROOT / source).read_text())
    assert bootstrap["node"]["id"] == pod.name
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == pod.ports.admin
    [xds] = bootstrap["static_resources"]["clusters"]
    endpoints = xds["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"] for e in endpoints] == [
        {"address": HOST, "port_value": port} for port in REPLICA_XDS_PORTS
    ]
    assert REPLICA_XDS_PORTS[0] == MESH.control.xds_port


def test_every_mounted_file_exists(services: dict[str, dict[str, Any]]) -> None:
    mounted = [
        (name, m)
        for name, service in services.items()
        for m in bind_mounts(service)
        if not m[0].startswith("faultplane-keys")  # the named volume of the audit key
    ]
    assert len(mounted) == len(PODS)
    for name, (source, _, _) in mounted:
        assert source.startswith("./"), f"{name}: mount {source} is not relative to the repo"
        assert (ROOT / source).is_file(), f"{name}: {source} does not exist"


def test_loadgen_targets_the_load_services_ingress_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    assert MESH.load is not None
    loadgen = services["loadgen"]
    argv = command(loadgen)
    assert argv[:3] == ["python", "-m", "faultplane.demo.loadgen"]
    targets = [int(t) for t in flag_values(argv, "--target")]
    assert targets == [pod.ports.ingress for pod in MESH.services[MESH.load.service].pods]
    assert one_flag(argv, "--method") == MESH.load.method
    assert one_flag(argv, "--path") == MESH.load.path
    assert float(one_flag(argv, "--rate")) == MESH.load.rate_per_second
    # Its own stats port must not take one of the mesh's ports.
    stats_port = int(one_flag(argv, "--port"))
    control = MESH.control
    taken = {port for pod in PODS for _, port in pod.ports.items()}
    taken |= {control.xds_port, control.api_port, control.metrics_port}
    assert stats_port not in taken
    load_pods = MESH.services[MESH.load.service].pods
    assert set(loadgen["depends_on"]) >= {app_name(p) for p in load_pods}


def test_committed_bootstraps_are_exactly_one_per_pod() -> None:
    committed = sorted(path.name for path in BOOTSTRAP_DIR.glob("*.yaml"))
    assert committed == sorted(f"{pod.name}.yaml" for pod in PODS)


@pytest.mark.parametrize("pod", PODS, ids=POD_IDS)
def test_committed_bootstrap_is_what_render_bootstrap_produces(pod: Pod) -> None:
    """Regenerate with: faultplane mesh bootstraps --mesh envoy-configs/mesh.yaml
    --out envoy-configs/bootstrap --xds-port 18000 --xds-port 18004"""
    rendered = render_bootstrap(template_beside(MESH_FILE), pod, HOST, MESH.control.xds_port)
    expected = with_xds_endpoints(rendered, HOST, REPLICA_XDS_PORTS)
    committed = (BOOTSTRAP_DIR / f"{pod.name}.yaml").read_text()
    assert committed == expected
    parsed = yaml.safe_load(committed)
    assert parsed["node"]["id"] == pod.name
    assert parsed["node"]["cluster"] == pod.service
    assert parsed["node"]["metadata"]["labels"] == dict(pod.labels)


def test_two_replicas_share_the_postgres_store_and_the_audit_key(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    assert postgres["network_mode"] == "host" and "15432" in command(postgres)
    assert "pg_isready" in postgres["healthcheck"]["test"]
    ports = {}
    for name, replica in (("control-server", "r1"), ("control-server-2", "r2")):
        argv = command(services[name])
        assert one_flag(argv, "--store") == STORE_URL
        assert one_flag(argv, "--replica-name") == replica
        assert one_flag(argv, "--audit-key-file") == "/run/faultplane/audit.key"
        assert services[name]["volumes"] == ["faultplane-keys:/run/faultplane"]
        ports[name] = [int(one_flag(argv, f"--{p}-port")) for p in ("xds", "api", "metrics")]
    assert [ports[n][0] for n in ("control-server", "control-server-2")] == list(REPLICA_XDS_PORTS)
    taken = {port for pod in PODS for _, port in pod.ports.items()} | {18003}  # + loadgen
    assert not set(ports["control-server-2"]) & taken
    assert "postgres" in services["control-server"]["depends_on"]
