"""identity_of: who an overlay sidecar is, from plain-Envoy or Istio-shaped node metadata."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from faultplane.delivery.identity import MAX_LABELS, MAX_TEXT, Identity, identity_of


def node(metadata: dict[str, Any] | None = None, cluster: str = "") -> base_pb2.Node:
    built = base_pb2.Node(id="sidecar-1", cluster=cluster)
    if metadata is not None:
        built.metadata.CopyFrom(struct_pb2.Struct())
        built.metadata.update(metadata)
    return built


ISTIO = {
    "LABELS": {
        "app": "payments-api",
        "service.istio.io/canonical-name": "payments",
        "version": "v2",
    },
    "NAMESPACE": "payments",
    "NAME": "payments-api-7d9f-abcde",
    "INSTANCE_IPS": "10.1.2.3,fe80::1",
}


def test_plain_envoy_keys() -> None:
    metadata = {
        "service": "payments-api",
        "labels": {"shard": "a", "canary": "true"},
        "namespace": "payments",
        "name": "payments-api-1",
        "stats_address": "127.0.0.1:9901",
    }
    assert identity_of(node(metadata, cluster="ignored")) == Identity(
        service="payments-api",
        labels={"shard": "a", "canary": "true"},
        namespace="payments",
        name="payments-api-1",
        stats_address="127.0.0.1:9901",
    )


def test_plain_envoy_without_metadata_is_its_cluster() -> None:
    assert identity_of(node(cluster="ledger")) == Identity(service="ledger")


def test_istio_keys() -> None:
    identity = identity_of(node(ISTIO, cluster="payments-api.payments"))
    assert identity == Identity(
        service="payments-api",
        labels=ISTIO["LABELS"],
        namespace="payments",
        name="payments-api-7d9f-abcde",
        stats_address="10.1.2.3:15090",
    )


def test_istio_service_from_canonical_name_and_stats_on_the_given_port() -> None:
    metadata = {**ISTIO, "LABELS": {"service.istio.io/canonical-name": "ledger"}}
    identity = identity_of(node(metadata), istio_stats_port=15020)
    assert identity.service == "ledger"
    assert identity.stats_address == "10.1.2.3:15020"


def test_istio_ipv6_instance_ip_is_bracketed() -> None:
    identity = identity_of(node({"INSTANCE_IPS": "fd00::7,10.0.0.1"}, cluster="c"))
    assert identity.stats_address == "[fd00::7]:15090"


def test_mixed_keys_combine() -> None:
    # Istio metadata plus only faultplane's stats address: each value from where it is.
    identity = identity_of(node({**ISTIO, "stats_address": "[::1]:9901"}))
    assert identity.service == "payments-api"
    assert identity.labels == ISTIO["LABELS"]
    assert identity.namespace == "payments"
    assert identity.stats_address == "[::1]:9901"


def test_explicit_keys_win_over_istio_ones() -> None:
    explicit = {
        "service": "checkout",
        "labels": {"shard": "b"},
        "namespace": "shop",
        "name": "checkout-1",
        "stats_address": "127.0.0.1:19000",
    }
    assert identity_of(node({**ISTIO, **explicit})) == Identity(
        service="checkout",
        # Whole, not merged: the Istio labels do not leak into an explicit label set.
        labels={"shard": "b"},
        namespace="shop",
        name="checkout-1",
        stats_address="127.0.0.1:19000",
    )


def test_explicit_empty_labels_still_win() -> None:
    assert identity_of(node({**ISTIO, "labels": {}})).labels == {}


def test_label_values_typed_by_yaml_become_their_text() -> None:
    labels = {"shard": 1, "canary": True, "weight": 0.5, "nested": {"a": "b"}, "list": [1]}
    assert identity_of(node({"labels": labels}, cluster="c")).labels == {
        "shard": "1",
        "canary": "true",
        "weight": "0.5",
    }


@pytest.mark.parametrize(
    "metadata",
    [
        {"service": 7, "labels": "app=x", "namespace": ["a"], "stats_address": 9901},
        {"service": "", "labels": None, "NAMESPACE": {"x": 1}, "INSTANCE_IPS": 42},
        {"service": "x" * (MAX_TEXT + 1), "stats_address": "no-port"},
        {"stats_address": "host:0", "INSTANCE_IPS": "not-an-ip, also not"},
        {"stats_address": "host:99999", "INSTANCE_IPS": ["x", 3]},
        {"stats_address": "::1:9901"},  # IPv6 without brackets: ambiguous
        {"stats_address": "[not-ip]:9901"},
        {"stats_address": "host:٩٩٠١"},  # non-ASCII digits
        {"LABELS": {"app": {"nested": 1}}},
    ],
)
def test_garbage_metadata_is_treated_as_absent(metadata: dict[str, Any]) -> None:
    identity = identity_of(node(metadata, cluster="fallback"))
    assert identity == Identity(service="fallback")


def test_a_label_map_too_large_is_refused_whole_and_long_labels_dropped() -> None:
    too_many = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
    assert identity_of(node({"labels": too_many}, cluster="c")).labels == {}
    # Refused explicit labels count as absent, so Istio's apply.
    assert identity_of(node({**ISTIO, "labels": too_many})).labels == ISTIO["LABELS"]
    long_value = {"ok": "v", "long": "x" * (MAX_TEXT + 1), "k" * (MAX_TEXT + 1): "v"}
    assert identity_of(node({"labels": long_value}, cluster="c")).labels == {"ok": "v"}


def test_instance_ips_may_be_a_list_and_the_first_valid_one_counts() -> None:
    identity = identity_of(node({"INSTANCE_IPS": ["bogus", "10.9.8.7", "10.0.0.1"]}, "c"))
    assert identity.stats_address == "10.9.8.7:15090"
