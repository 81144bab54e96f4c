"""The envoy SLO source against real HTTP: tiny stats servers standing in for sidecars."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from faultplane.slo.catalogue import SloDef
from faultplane.slo.sources import EnvoySource, admin_address
from tests.test_slo_counters import Traffic, envoy_stats

SUCCESS = SloDef(name="pay-ok", service="payments-api", window_seconds=60)
EGRESS_SUCCESS = SloDef(name="pay-out", service="payments-api", listener="egress")
LATENCY = SloDef(name="pay-fast", service="payments-api", kind="latency_under", threshold_ms=300)


@dataclass
class FakeAdmin:
    """One sidecar's admin port: serves whatever stats text it currently holds."""

    text: str = ""
    status: int = 200
    address: str = ""
    queries: list[str] = field(default_factory=list)

    async def stats(self, request: web.Request) -> web.Response:
        self.queries.append(request.query_string)
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        return web.Response(text=self.text, content_type="text/plain")


@pytest.fixture
async def admins() -> AsyncIterator[dict[str, FakeAdmin]]:
    pods = {"payments-api-1": FakeAdmin(), "payments-api-2": FakeAdmin()}
    runners = []
    try:
        for admin in pods.values():
            app = web.Application()
            app.router.add_get("/stats/prometheus", admin.stats)
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            site = web.SockSite(runner, sock)
            await site.start()
            admin.address = f"127.0.0.1:{sock.getsockname()[1]}"
        yield pods
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _closed_address() -> str:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _serve(admin: FakeAdmin, ok: int, errors: int, egress_ok: int = 0) -> None:
    listeners = {"ingress": Traffic({"2": ok, "5": errors}, times_ms=[20] * (ok + errors))}
    if egress_ok:
        listeners["egress"] = Traffic({"2": egress_ok}, times_ms=[5] * egress_ok)
    admin.text = envoy_stats(listeners)


def _addresses(admins: dict[str, FakeAdmin]) -> dict[str, str]:
    return {pod: admin.address for pod, admin in admins.items()}


async def test_ratio_over_two_samples(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    one, two = admins["payments-api-1"], admins["payments-api-2"]
    _serve(one, ok=1000, errors=10, egress_ok=50)
    _serve(two, ok=500, errors=0, egress_ok=20)
    source = EnvoySource(keep_seconds=60)
    await source.sample(session, _addresses(admins))
    pods = list(admins)

    first = await source.read(SUCCESS, pods)
    assert first.value is None
    assert "not enough samples" in first.error

    # In between: pod 1 served 100 more (4 failed), pod 2 served 100 more (1 failed).
    _serve(one, ok=1096, errors=14, egress_ok=60)
    _serve(two, ok=599, errors=1, egress_ok=30)
    await source.sample(session, _addresses(admins))

    reading = await source.read(SUCCESS, pods)
    assert reading.readable
    assert reading.value == pytest.approx(1 - 5 / 200)
    # One pod alone: only its own increase.
    alone = await source.read(SUCCESS, ["payments-api-1"])
    assert alone.value == pytest.approx(1 - 4 / 100)
    # The egress listener is kept apart from ingress.
    egress = await source.read(EGRESS_SUCCESS, pods)
    assert egress.value == 1.0
    # Every request took 20 ms: all within 300 ms.
    assert (await source.read(LATENCY, pods)).value == pytest.approx(1.0)

    # The source asks for the filtered stats, not every Envoy stat.
    assert one.queries[0].startswith("usedonly&filter=")
    assert len(one.queries) == len(two.queries) == 2


async def test_latency_under_over_two_samples(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    admin = admins["payments-api-1"]
    admin.text = envoy_stats({"ingress": Traffic({"2": 10}, times_ms=[20] * 10)})
    source = EnvoySource(keep_seconds=60)
    await source.sample(session, {"payments-api-1": admin.address})
    # 10 more: 6 fast, 4 at 400 ms (between the 250 and 500 bounds).
    admin.text = envoy_stats({"ingress": Traffic({"2": 20}, times_ms=[20] * 16 + [400] * 4)})
    await source.sample(session, {"payments-api-1": admin.address})
    reading = await source.read(LATENCY, ["payments-api-1"])
    # 300 ms is 1/5 of the way from 250 to 500: 6 + 0.2 * 4 of 10.
    assert reading.value == pytest.approx((6 + 0.2 * 4) / 10)


async def test_unreadable_pod_is_named(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    for admin in admins.values():
        _serve(admin, ok=100, errors=0)
    addresses = {**_addresses(admins), "payments-api-3": _closed_address()}
    source = EnvoySource(keep_seconds=60)
    await source.sample(session, addresses)
    for admin in admins.values():
        _serve(admin, ok=200, errors=0)
    await source.sample(session, addresses)

    reading = await source.read(SUCCESS, ["payments-api-1", "payments-api-3"])
    assert reading.value is None
    assert not reading.readable
    assert reading.error.startswith("payments-api-3: stats unreadable")
    assert "payments-api-1" not in reading.error
    # The readable pods alone still read fine.
    fine = await source.read(SUCCESS, ["payments-api-1", "payments-api-2"])
    assert fine.value == 1.0


async def test_http_error_is_unreadable_and_recovers(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    admin = admins["payments-api-2"]
    pods = {"payments-api-2": admin.address}
    source = EnvoySource(keep_seconds=60)
    _serve(admin, ok=10, errors=0)
    await source.sample(session, pods)
    admin.status = 503
    await source.sample(session, pods)
    reading = await source.read(SUCCESS, ["payments-api-2"])
    assert reading.value is None and not reading.readable
    assert reading.error == "payments-api-2: stats unreadable (ClientResponseError)"

    admin.status = 200
    _serve(admin, ok=20, errors=5)
    await source.sample(session, pods)
    recovered = await source.read(SUCCESS, ["payments-api-2"])
    assert recovered.readable
    assert recovered.value == pytest.approx(1 - 5 / 15)


async def test_no_requests_in_the_window(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    for admin in admins.values():
        _serve(admin, ok=300, errors=3)
    source = EnvoySource(keep_seconds=60)
    await source.sample(session, _addresses(admins))
    await source.sample(session, _addresses(admins))  # nothing changed
    reading = await source.read(SUCCESS, list(admins))
    assert reading.value is None
    assert reading.error == "no requests in the last 60s"
    latency = await source.read(LATENCY, list(admins))
    assert latency.value is None and "no requests" in latency.error


async def test_no_pods_and_unknown_pods() -> None:
    source = EnvoySource(keep_seconds=60)
    assert (await source.read(SUCCESS, [])).error == "no sidecars to read"
    unknown = await source.read(SUCCESS, ["payments-api-9"])
    assert unknown.value is None and unknown.error.startswith("payments-api-9:")


# --- one sidecar's trouble stays its own ---------------------------------------------------


async def test_a_garbage_page_makes_only_that_pod_unreadable(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    one, two = admins["payments-api-1"], admins["payments-api-2"]
    source = EnvoySource(keep_seconds=60)
    for ok in (100, 200):
        _serve(one, ok=ok, errors=0)
        two.text = "<html><body>502 Bad Gateway</body></html>"
        await source.sample(session, _addresses(admins))

    garbage = await source.read(SUCCESS, ["payments-api-2"])
    assert not garbage.readable
    assert garbage.error.startswith("payments-api-2: stats unparsable (ValueError")
    assert (await source.read(SUCCESS, ["payments-api-1"])).value == 1.0

    # It recovers once its page parses again (two clean samples for a window).
    for ok in (10, 20):
        _serve(two, ok=ok, errors=0)
        await source.sample(session, _addresses(admins))
    assert (await source.read(SUCCESS, list(admins))).value == 1.0


async def test_a_pod_left_out_of_the_latest_round_is_not_read_from_old_samples(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    """A sidecar that was not sampled this round (it disconnected) has no current value:
    its old history must not keep answering "fine"."""
    source = EnvoySource(keep_seconds=60)
    for ok in (100, 200):
        for admin in admins.values():
            _serve(admin, ok=ok, errors=0)
        await source.sample(session, _addresses(admins))
    await source.sample(session, {"payments-api-1": admins["payments-api-1"].address})

    stale = await source.read(SUCCESS, ["payments-api-2"])
    assert stale.value is None
    assert stale.error == "payments-api-2: not sampled in the latest round"


async def test_a_listener_missing_from_the_latest_page_is_not_read_from_old_samples(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    """After an Envoy restart its page lacks a listener until traffic returns: the
    listener's old samples describe the past, not now."""
    admin = admins["payments-api-1"]
    pods = {"payments-api-1": admin.address}
    source = EnvoySource(keep_seconds=60)
    for ok in (100, 200):
        _serve(admin, ok=ok, errors=0, egress_ok=ok)
        await source.sample(session, pods)
    admin.text = envoy_stats({"ingress": Traffic({"2": 5}, times_ms=[20] * 5)})
    await source.sample(session, pods)

    egress = await source.read(EGRESS_SUCCESS, ["payments-api-1"])
    assert egress.value is None
    assert egress.error == "payments-api-1: no egress stats in its latest sample"


async def test_broken_admins_and_a_failed_round_are_unreadable(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    source = EnvoySource(keep_seconds=60)
    one = {"payments-api-1": admins["payments-api-1"].address}
    for ok in (100, 200):
        _serve(admins["payments-api-1"], ok=ok, errors=0)
        await source.sample(session, one, {"payments-api-9": "admin_port metadata 'x'"})
    assert (await source.read(SUCCESS, ["payments-api-1"])).value == 1.0
    broken = await source.read(SUCCESS, ["payments-api-1", "payments-api-9"])
    assert broken.error == "payments-api-9: admin_port metadata 'x'"

    source.fail("stats sampling failed (TimeoutError)")
    failed = await source.read(SUCCESS, ["payments-api-1"])
    assert failed.error == "payments-api-1: stats sampling failed (TimeoutError)"


@pytest.mark.parametrize(
    ("port", "address"),
    [(18013, "127.0.0.1:18013"), (18013.0, "127.0.0.1:18013"), ("18013", "127.0.0.1:18013")],
    ids=["int", "struct-number", "string"],
)
def test_admin_address_accepts_a_port_however_the_metadata_spells_it(
    port: object, address: str
) -> None:
    assert admin_address(port) == address


@pytest.mark.parametrize("port", [None, "", "18013/tcp", 18013.5, True, 0, 70000, -1, [18013]])
def test_admin_address_refuses_what_is_not_a_port(port: object) -> None:
    with pytest.raises(ValueError, match=r"admin_port metadata .* is not a port"):
        admin_address(port)


async def test_a_stat_prefix_regex_sums_every_matching_hcm(
    admins: dict[str, FakeAdmin], session: aiohttp.ClientSession
) -> None:
    """Overlay mode: Istio names its HCMs inbound_<ip>_<port> (one per port); an SLO with
    `stat_prefix: inbound_.*` reads them all, and nothing of the outbound ones."""
    istio = SloDef(name="pay-ok", service="payments-api", stat_prefix="inbound_.*")
    one = admins["payments-api-1"]

    def serve(http: int, grpc: int, grpc_errors: int, outbound_errors: int) -> None:
        one.text = envoy_stats(
            {
                "inbound_0.0.0.0_8080": Traffic({"2": http}),
                "inbound_0.0.0.0_9090": Traffic({"2": grpc, "5": grpc_errors}),
                "outbound_0.0.0.0_80": Traffic({"5": outbound_errors}),
            }
        )

    serve(http=100, grpc=100, grpc_errors=0, outbound_errors=0)
    source = EnvoySource(keep_seconds=60)
    await source.sample(session, {"payments-api-1": one.address})
    serve(http=150, grpc=140, grpc_errors=10, outbound_errors=500)
    await source.sample(session, {"payments-api-1": one.address})

    reading = await source.read(istio, ["payments-api-1"])
    assert reading.value == pytest.approx(1 - 10 / 100)  # 50 + 50 new, 10 of them 5xx
    # The default (listener: ingress) finds no such HCM on an Istio sidecar, and says so.
    missing = await source.read(SUCCESS, ["payments-api-1"])
    assert missing.value is None and "no ingress stats" in missing.error


def test_an_unreadable_fleet_is_told_by_its_first_pods_and_a_count() -> None:
    """Readings are kept for the whole baseline window: their text stays short however
    many pods are unreadable."""
    from faultplane.slo.sources import unreadable_pods

    errors = [f"fleet-{i}: stats unreadable (ClientConnectorError)" for i in range(1000)]
    told = unreadable_pods(errors)
    assert told.startswith("fleet-0: stats unreadable") and "fleet-2:" in told
    assert "fleet-3:" not in told and told.endswith("; and 997 more pods")
    assert len(told) < 300
    assert unreadable_pods(errors[:2]) == "; ".join(errors[:2])
