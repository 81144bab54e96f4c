"""The SLO catalogue: the demo catalogue loads, and every bad one is refused by name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from faultplane.model.mesh import load_mesh
from faultplane.slo.catalogue import CatalogueError, SloDef, load_catalogue, parse_catalogue

ROOT = Path(__file__).resolve().parent.parent
DEMO_MESH = ROOT / "envoy-configs" / "mesh.yaml"
DEMO_SLOS = ROOT / "envoy-configs" / "slos.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, object]:
    return dict(load_mesh(DEMO_MESH).services)


def test_demo_catalogue_loads_against_demo_mesh(services: dict[str, object]) -> None:
    catalogue = load_catalogue(DEMO_SLOS, services)
    assert list(catalogue) == [
        "merchant-write-success",
        "merchant-write-latency",
        "fraud-scoring-success",
    ]
    assert catalogue["merchant-write-success"] == SloDef(
        name="merchant-write-success",
        service="payments-api",
        kind="success_ratio",
        source="envoy",
        listener="ingress",
        window_seconds=60.0,
        description="merchant writes into payments-api that did not fail (non-5xx / all)",
    )
    latency = catalogue["merchant-write-latency"]
    assert (latency.kind, latency.threshold_ms, latency.service) == (
        "latency_under",
        300.0,
        "payments-api",
    )
    # Defaults fill what the file leaves out.
    fraud = catalogue["fraud-scoring-success"]
    assert (fraud.service, fraud.kind, fraud.source, fraud.listener) == (
        "fraud-scoring",
        "success_ratio",
        "envoy",
        "ingress",
    )
    assert fraud.threshold_ms is None and fraud.query is None
    for slo in catalogue.values():
        assert slo.service in services


def test_minimal_slo_gets_defaults(services: dict[str, object]) -> None:
    slo = parse_catalogue({"slos": {"s": {"service": "ledger"}}}, services)["s"]
    assert slo == SloDef(name="s", service="ledger")
    assert isinstance(slo.window_seconds, float) and slo.window_seconds == 60.0


@pytest.mark.parametrize("window", [1, 86400, 2.5])
def test_window_bounds_accepted(services: dict[str, object], window: float) -> None:
    doc = {"slos": {"s": {"service": "ledger", "window_seconds": window}}}
    assert parse_catalogue(doc, services)["s"].window_seconds == float(window)


def test_prometheus_query_accepted(services: dict[str, object]) -> None:
    query = 'avg_over_time(up{pod=~"$pods"}[$window])'
    doc = {"slos": {"q": {"service": "ledger", "source": "prometheus", "query": query}}}
    slo = parse_catalogue(doc, services)["q"]
    assert (slo.source, slo.query) == ("prometheus", query)


def test_load_catalogue_names_the_file(tmp_path: Path, services: dict[str, object]) -> None:
    bad = tmp_path / "slos.yaml"
    bad.write_text("slos:\n  s:\n    service: nope\n")
    with pytest.raises(CatalogueError, match=r"slos\.yaml: slos\.s\.service"):
        load_catalogue(bad, services)
    with pytest.raises(CatalogueError, match="cannot read SLO catalogue"):
        load_catalogue(tmp_path / "missing.yaml", services)


GOOD = {"service": "payments-api", "kind": "success_ratio", "window_seconds": 60}
_DROP = object()


def _with(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return {"slos": {"bad": body}}


BAD_CATALOGUES = [
    ("unknown service", _with(service="checkout"), "slos.bad.service", "checkout"),
    ("missing service", _with(service=_DROP), "slos.bad.service", "None"),
    ("unhashable service", _with(service=["payments-api"]), "slos.bad.service", ""),
    ("bad kind", _with(kind="p99"), "slos.bad.kind", "p99"),
    ("bad stat_prefix regex", _with(stat_prefix="inbound_(["), "slos.bad.stat_prefix", "regex"),
    ("empty stat_prefix", _with(stat_prefix=""), "slos.bad.stat_prefix", "regex"),
    (
        "stat_prefix with prometheus",
        _with(source="prometheus", stat_prefix="inbound_.*"),
        "slos.bad.stat_prefix",
        "only with source envoy",
    ),
    ("bad source", _with(source="datadog"), "slos.bad.source", "datadog"),
    ("bad listener", _with(listener="upstream"), "slos.bad.listener", "upstream"),
    ("window zero", _with(window_seconds=0), "slos.bad.window_seconds", "1 to 86400"),
    ("window too long", _with(window_seconds=86401), "slos.bad.window_seconds", ""),
    ("window negative", _with(window_seconds=-5), "slos.bad.window_seconds", ""),
    ("window bool", _with(window_seconds=True), "slos.bad.window_seconds", ""),
    ("window string", _with(window_seconds="60s"), "slos.bad.window_seconds", ""),
    ("window nan", _with(window_seconds=float("nan")), "slos.bad.window_seconds", ""),
    (
        "latency_under without threshold",
        _with(kind="latency_under"),
        "slos.bad.threshold_ms",
        "required",
    ),
    (
        "latency_under threshold zero",
        _with(kind="latency_under", threshold_ms=0),
        "slos.bad.threshold_ms",
        "",
    ),
    (
        "latency_under threshold string",
        _with(kind="latency_under", threshold_ms="300ms"),
        "slos.bad.threshold_ms",
        "",
    ),
    (
        "latency_under threshold nan",
        _with(kind="latency_under", threshold_ms=float("nan")),
        "slos.bad.threshold_ms",
        "",
    ),
    (
        "threshold on success_ratio",
        _with(threshold_ms=300),
        "slos.bad.threshold_ms",
        "only for latency_under",
    ),
    (
        "query without prometheus source",
        _with(query="up"),
        "slos.bad.query",
        "only with source prometheus",
    ),
    (
        "query not a string",
        _with(source="prometheus", query=["up"]),
        "slos.bad.query",
        "",
    ),
    ("unknown field", _with(treshold_ms=300), "slos.bad", "treshold_ms"),
    ("body not a mapping", {"slos": {"bad": "payments-api"}}, "slos.bad", "mapping"),
    ("name not a string", {"slos": {7: GOOD}}, "slos.7", "name"),
    ("empty slos", {"slos": {}}, "slos", "mapping"),
    ("missing slos", {"services": {}}, "slos", "mapping"),
    ("slos a list", {"slos": [GOOD]}, "slos", "mapping"),
    ("empty document", None, "slos", "mapping"),
]


@pytest.mark.parametrize(
    ("doc", "where", "detail"),
    [pytest.param(doc, where, detail, id=case) for case, doc, where, detail in BAD_CATALOGUES],
)
def test_bad_catalogue_is_refused_by_name(
    services: dict[str, object], doc: Any, where: str, detail: str
) -> None:
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(doc, services)
    message = str(caught.value)
    # The message starts with the exact path of the offending field.
    assert message.startswith(f"{where}:"), message
    assert detail in message


def test_first_bad_slo_is_named_among_good_ones(services: dict[str, object]) -> None:
    doc = {
        "slos": {
            "fine": {"service": "ledger"},
            "broken": {"service": "ledger", "listener": "sideways"},
        }
    }
    with pytest.raises(CatalogueError, match=r"^slos\.broken\.listener: .*'sideways'"):
        parse_catalogue(doc, services)


def test_overlay_mode_accepts_any_service_and_a_stat_prefix() -> None:
    """Without a mesh file (serve --overlay) the services are whatever connects."""
    doc = {"slos": {"istio-ok": {"service": "reviews", "stat_prefix": "inbound_.*"}}}
    (slo,) = parse_catalogue(doc, None).values()
    assert (slo.service, slo.stat_prefix, slo.listener) == ("reviews", "inbound_.*", "ingress")
    with pytest.raises(CatalogueError, match="unknown service 'reviews'"):
        parse_catalogue(doc, {"payments-api": object()})
