"""What a user pastes to attach an Envoy to faultplane (issue 11, item 6), on the real binary.

`faultplane overlay envoy --json` must load into a real Envoy bootstrap, and such an
Envoy must start and serve through its fault slots while faultplane is unreachable: a
dead fault layer may never take a sidecar down. `overlay istio` must carry the same
pieces, and they must load the way Istio merges them (`--config-yaml`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from faultplane.cli.main import build_parser
from faultplane.demo.launcher import envoy_argv
from faultplane.demo.ports import PortAllocator, free_port
from faultplane.demo.processes import Child, ProcessGroup, envoy_binary, wait_until
from faultplane.render.ecds import slot_name
from faultplane.render.overlay_config import (
    HCM_FILTER,
    HTTP_FAULT_TYPE,
    ROUTER_FILTER,
    XDS_CLUSTER,
    envoy_overlay,
    parse_xds_address,
)
from faultplane.render.resources import RUNTIME_LAYER
from tests.helpers import admin_json, ok_upstream, run_cli, send
from tests.overlay_envoy import overlay_bootstrap

VALIDATE_TIMEOUT = 60.0  # one Envoy parsing a bootstrap, on a loaded 2-core machine
# Envoy holds its listeners until RTDS init ends. With the snippet's 1 s fetch timeout a
# sidecar serves ~1-3 s after start even here; with Envoy's default (15 s) or none it
# would not serve before 15 s, or never. 10 s tells the two apart on a loaded machine.
SERVES_WITHIN = 10.0


def envoy_validate(bootstrap: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [envoy_binary(), "--mode", "validate", "-c", str(bootstrap), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=VALIDATE_TIMEOUT)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture(scope="module")
def dead_xds() -> str:
    """faultplane's address as the sidecar sees it, with nothing listening there."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def envoy_json(dead_xds: str) -> tuple[int, str, str]:
    """`faultplane overlay envoy --json` as a real process: (exit, stdout, stderr)."""
    return asyncio.run(run_cli("overlay", "envoy", "--xds-address", dead_xds, "--json"))


@pytest.fixture(scope="module")
def snippet(envoy_json: tuple[int, str, str]) -> dict[str, Any]:
    code, out, err = envoy_json
    assert code == 0, err
    return dict(json.loads(out))


ISTIO_FLAGS = [
    "--xds-address", "faultplane.faultplane.svc.cluster.local:18000",
    "--namespace", "payments", "--slots", "3",
    "--selector", "team=payments,faultplane.io/overlay=on",
]  # fmt: skip


@pytest.fixture(scope="module")
def istio_docs() -> list[dict[str, Any]]:
    code, out, err = asyncio.run(run_cli("overlay", "istio", *ISTIO_FLAGS))
    assert code == 0, err
    return list(yaml.safe_load_all(out))


def test_overlay_envoy_json_prints_one_object_of_cluster_layer_and_slots(
    envoy_json: tuple[int, str, str], dead_xds: str
) -> None:
    code, out, _ = envoy_json

    assert code == 0
    snippet = json.loads(out)  # the whole of stdout: one JSON value, nothing else
    assert set(snippet) == {"clusters", "layers", "http_filters"}
    [cluster] = snippet["clusters"]
    assert (cluster["name"], cluster["type"]) == (XDS_CLUSTER, "STATIC")
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    socket = address["address"]["socket_address"]
    assert f"{socket['address']}:{socket['port_value']}" == dead_xds
    assert [layer["name"] for layer in snippet["layers"]] == [RUNTIME_LAYER]
    assert {d: [f["name"] for f in slots] for d, slots in snippet["http_filters"].items()} == {
        "inbound": [slot_name("inbound", 0), slot_name("inbound", 1)],
        "outbound": [slot_name("outbound", 0), slot_name("outbound", 1)],
    }


def test_every_slot_and_the_layer_share_one_config_source(snippet: dict[str, Any]) -> None:
    # Envoy opens one ECDS stream per (config source hash, slot name): a source differing
    # anywhere would cost a stream per HCM instead of one per slot.
    discovery = [
        slot["config_discovery"] for slots in snippet["http_filters"].values() for slot in slots
    ]
    sources = [layer["rtds_layer"]["rtds_config"] for layer in snippet["layers"]] + [
        slot["config_source"] for slot in discovery
    ]
    assert len(sources) == 5
    assert len({json.dumps(source, sort_keys=True) for source in sources}) == 1
    assert sources[0]["initial_fetch_timeout"] == "1s"
    # A slot waiting for faultplane would hold its listener; without a default it would
    # answer 500 while faultplane is unreachable.
    for slot in discovery:
        assert slot["default_config"] == {"@type": HTTP_FAULT_TYPE}
        assert slot["apply_default_config_without_warming"] is True


@pytest.mark.parametrize("variant", ["cli-static-ip", "dns-name-3-slots"])
def test_a_bootstrap_built_from_the_snippet_validates_in_envoy(
    variant: str, snippet: dict[str, Any], tmp_path: Path
) -> None:
    if variant == "dns-name-3-slots":
        snippet = envoy_overlay(parse_xds_address("faultplane.example.internal:18000"), 3)
        assert snippet["clusters"][0]["type"] == "STRICT_DNS"
    ports = PortAllocator()
    bootstrap = overlay_bootstrap(
        snippet, ports(), ports(), {"inbound": ports(), "outbound": ports()}
    )

    checked = envoy_validate(write_json(tmp_path / "bootstrap.json", bootstrap))

    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    """An app behind the sidecar: 200 "ok" on every path."""
    async with ok_upstream() as port:
        yield port


async def test_envoy_with_the_snippet_serves_through_its_slots_while_faultplane_is_down(
    snippet: dict[str, Any], upstream: int, tmp_path: Path
) -> None:
    ports = PortAllocator()
    admin = f"127.0.0.1:{ports()}"
    listeners = {"inbound": ports(), "outbound": ports()}
    bootstrap = overlay_bootstrap(snippet, int(admin.rsplit(":")[1]), upstream, listeners)
    path = write_json(tmp_path / "bootstrap.json", bootstrap)
    group = ProcessGroup()
    try:
        started = time.monotonic()
        envoy = group.spawn(
            Child("envoy", envoy_argv(envoy_binary(), path), tmp_path / "envoy.log")
        )

        async def both_serve() -> bool:
            try:
                replies = [(await send(f"http://127.0.0.1:{p}/pay"))[0] for p in listeners.values()]
            except OSError:  # aiohttp's connection errors: the listener is not up yet
                return False
            return all(reply.status == 200 for reply in replies)

        await wait_until(both_serve, SERVES_WITHIN, "both listeners to answer 200", [envoy])
        serving_after = time.monotonic() - started

        stats = await admin_json(admin, "/stats?format=json&filter=faultplane")
        values = {s["name"]: s.get("value") for s in stats["stats"] if "name" in s}
        runtime = await admin_json(admin, "/runtime")
    finally:
        group.stop_all()

    assert serving_after < SERVES_WITHIN
    # Every slot is a live ECDS subscription of the snippet's cluster, which could not
    # connect: traffic passed through the slots' defaults, not around them.
    for direction in listeners:
        for i in range(2):
            prefix = f"extension_config_discovery.http_filter.{slot_name(direction, i)}."
            assert any(name.startswith(prefix) for name in values), sorted(values)
    assert values[f"cluster.{XDS_CLUSTER}.upstream_cx_connect_fail"] >= 1
    assert RUNTIME_LAYER in runtime["layers"]


def test_overlay_envoy_yaml_parses_to_the_json_and_says_where_each_part_goes(
    snippet: dict[str, Any], dead_xds: str
) -> None:
    code, out, err = asyncio.run(run_cli("overlay", "envoy", "--xds-address", dead_xds))

    assert code == 0, err
    assert yaml.safe_load(out) == snippet
    comments = "\n".join(line for line in out.splitlines() if line.startswith("#"))
    for where in ("static_resources.clusters", "layered_runtime.layers", ROUTER_FILTER):
        assert where in comments
    assert "5 gRPC streams" in comments


def test_overlay_istio_prints_the_bootstrap_override_and_the_envoy_filter(
    istio_docs: list[dict[str, Any]],
) -> None:
    config_map, envoy_filter = istio_docs

    assert (config_map["kind"], envoy_filter["kind"]) == ("ConfigMap", "EnvoyFilter")
    assert envoy_filter["apiVersion"] == "networking.istio.io/v1alpha3"
    assert {config_map["metadata"]["namespace"], envoy_filter["metadata"]["namespace"]} == {
        "payments"
    }
    bootstrap = json.loads(config_map["data"]["custom_bootstrap.json"])
    [cluster] = bootstrap["static_resources"]["clusters"]
    assert (cluster["name"], cluster["type"]) == (XDS_CLUSTER, "STRICT_DNS")
    assert [layer["name"] for layer in bootstrap["layered_runtime"]["layers"]] == [RUNTIME_LAYER]
    spec = envoy_filter["spec"]
    assert spec["workloadSelector"] == {
        "labels": {"team": "payments", "faultplane.io/overlay": "on"}
    }
    patches = spec["configPatches"]
    assert [(p["match"]["context"], p["patch"]["value"]["name"]) for p in patches] == [
        *(("SIDECAR_INBOUND", slot_name("inbound", i)) for i in range(3)),
        *(("SIDECAR_OUTBOUND", slot_name("outbound", i)) for i in range(3)),
    ]
    for patch in patches:
        assert (patch["applyTo"], patch["patch"]["operation"]) == ("HTTP_FILTER", "INSERT_BEFORE")
        hcm = patch["match"]["listener"]["filterChain"]["filter"]
        assert (hcm["name"], hcm["subFilter"]["name"]) == (HCM_FILTER, ROUTER_FILTER)


def test_istio_pieces_load_into_envoy_as_istio_merges_them(
    istio_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    # Istio passes the ConfigMap's JSON to Envoy as --config-yaml (repeated fields are
    # appended) and applies the patches in order before the router.
    config_map, envoy_filter = istio_docs
    patches = envoy_filter["spec"]["configPatches"]
    ports = PortAllocator()
    slots = {
        direction: [p["patch"]["value"] for p in patches if p["match"]["context"] == context]
        for direction, context in (("inbound", "SIDECAR_INBOUND"), ("outbound", "SIDECAR_OUTBOUND"))
    }
    base = overlay_bootstrap(
        {"clusters": [], "layers": [], "http_filters": slots},
        ports(),
        ports(),
        {"inbound": ports(), "outbound": ports()},
    )
    override = config_map["data"]["custom_bootstrap.json"]

    checked = envoy_validate(
        write_json(tmp_path / "istio-base.json", base), "--config-yaml", override
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


# (argv after `overlay`, the flag the error must name, the value it must quote)
BAD_FLAGS = [
    (["envoy", "--xds-address", "faultplane"], "--xds-address", "faultplane"),
    (["envoy", "--xds-address", "faultplane:"], "--xds-address", ""),
    (["envoy", "--xds-address", "faultplane:70000"], "--xds-address", "70000"),
    (["envoy", "--xds-address", "faultplane:0"], "--xds-address", "0"),
    (["envoy", "--xds-address", "::1:18000"], "--xds-address", "::1:18000"),
    (["envoy", "--xds-address", "no_such host:18000"], "--xds-address", "no_such host"),
    (["envoy", "--xds-address", "[faultplane]:18000"], "--xds-address", "faultplane"),
    (["envoy", "--xds-address", "a:\u00b2"], "--xds-address", "\u00b2"),
    (["envoy", "--xds-address", "a:1", "--slots", "0"], "--slots", "0"),
    (["envoy", "--xds-address", "a:1", "--slots", "65"], "--slots", "65"),
    (["istio", "--xds-address", "a:1", "--namespace", "Payments"], "--namespace", "Payments"),
    (["istio", "--xds-address", "a:1", "--selector", "team"], "--selector", "team"),
    (["istio", "--xds-address", "a:1", "--selector", "=x"], "--selector", "=x"),
    (["istio", "--xds-address", "a:1", "--selector", "a!=1"], "--selector", "a!=1"),
    (["istio", "--xds-address", "a:1", "--selector", "a=1,a=2"], "--selector", "a=1,a=2"),
]


@pytest.mark.parametrize(
    ("argv", "flag", "value"), [pytest.param(*case, id=" ".join(case[0])) for case in BAD_FLAGS]
)
def test_overlay_refuses_bad_flags_naming_the_flag(
    argv: list[str], flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["overlay", *argv])

    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert f"argument {flag}: " in stderr, stderr
    assert repr(value) in stderr, stderr


def test_overlay_without_an_address_exits_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["overlay", "istio"])

    assert exited.value.code == 2
    assert "--xds-address" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "host", "cluster_type"),
    [
        ("10.0.0.7:18000", "10.0.0.7", "STATIC"),
        ("[::1]:18000", "::1", "STATIC"),
        (
            "faultplane.faultplane.svc.cluster.local:18000",
            "faultplane.faultplane.svc.cluster.local",
            "STRICT_DNS",
        ),
    ],
)
def test_an_ip_gets_a_static_cluster_and_a_name_a_strict_dns_one(
    text: str, host: str, cluster_type: str
) -> None:
    [cluster] = envoy_overlay(parse_xds_address(text))["clusters"]

    socket = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert socket["address"]["socket_address"] == {"address": host, "port_value": 18000}
    assert cluster["type"] == cluster_type
