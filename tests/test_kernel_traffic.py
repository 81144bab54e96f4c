"""Kernel faults as the agent renders them, measured in real TCP traffic across a veth.

Each fault is put in the pod namespace's owner table through an `NftSession` (the agent's
long-lived nft), then a client in the pod namespace connects to (or uploads to) a server
in the far namespace. Clean traffic is measured first in the same test, so a fault that
did nothing fails the test.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from faultplane.agent.nft import NftError, NftSession
from faultplane.kernel import ruleset
from faultplane.kernel.fault import KernelFault, parse_fault
from tests.netns import (
    Link,
    connects,
    needs_root_and_nft,
    sink_server,
    unique_subnet,
    unique_tag,
    upload,
    veth_link,
)
from tests.netns import ruleset as list_ruleset

pytestmark = [needs_root_and_nft, pytest.mark.asyncio(loop_scope="module")]

PORT = 5432
TABLE = ruleset.table_name("test")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def link() -> AsyncIterator[Link]:
    with veth_link(unique_tag(), unique_subnet()) as made:
        yield made


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def nft(link: Link) -> AsyncIterator[NftSession]:
    session = NftSession(link.pod, TABLE)
    await session.start()
    try:
        yield session
    finally:
        await session.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(link: Link) -> AsyncIterator[None]:
    async with sink_server(link, PORT):
        # Resolve the far end's MAC first: while ARP is pending the kernel queues only
        # about 100 packets, and a burst of connects beyond that would time out.
        assert await connects(link, PORT, 1, 5) == {"ok": 1}
        yield


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(nft: NftSession) -> AsyncIterator[None]:
    """Every test starts and ends with the pod's table empty."""
    await nft.run(ruleset.replace_pod(TABLE, []))
    yield
    await nft.run(ruleset.replace_pod(TABLE, []))


def fault(link: Link, kind: str, **fields: Any) -> KernelFault:
    base = {"pod": "app-1", "id": "f1", "kind": kind, "direction": "egress"}
    base.update({"cidr": f"{link.far_address}/32", "port": PORT})
    return parse_fault({**base, **fields})


async def test_packet_loss_fails_connects_within_binomial_bounds(
    link: Link, nft: NftSession, server: None
) -> None:
    count, timeout = 200, 0.5
    assert await connects(link, PORT, count, timeout) == {"ok": count}
    await nft.run(ruleset.replace_pod(TABLE, [fault(link, "packet_loss", percentage=30)]))
    outcomes = await connects(link, PORT, count, timeout)
    # A connect fails when its SYN is dropped (the retransmit comes after 1 s): binomial
    # n=200, p=0.3, mean 60, sd 6.5; +-4.5 sd.
    assert 31 <= outcomes.get("timeout", 0) <= 89, outcomes
    assert outcomes.get("ok", 0) + outcomes.get("timeout", 0) == count


async def test_partition_times_out_every_connect_to_the_far_end_only(
    link: Link, nft: NftSession, server: None
) -> None:
    await nft.run(ruleset.replace_pod(TABLE, [fault(link, "partition")]))
    assert await connects(link, PORT, 10, 0.5) == {"timeout": 10}
    # The scope is the far end's port: another port on the same host still answers
    # (refused, since nothing listens there), instead of timing out.
    assert await connects(link, PORT + 1, 3, 0.5) == {"refused": 3}


async def test_reset_refuses_connects_at_once(link: Link, nft: NftSession, server: None) -> None:
    await nft.run(ruleset.replace_pod(TABLE, [fault(link, "reset")]))
    assert await connects(link, PORT, 10, 0.5) == {"refused": 10}


async def test_ingress_partition_drops_the_far_ends_answers(
    link: Link, nft: NftSession, server: None
) -> None:
    await nft.run(ruleset.replace_pod(TABLE, [fault(link, "partition", direction="ingress")]))
    assert await connects(link, PORT, 5, 0.5) == {"timeout": 5}


async def test_bandwidth_limits_an_upload_to_the_rate(
    link: Link, nft: NftSession, server: None
) -> None:
    size = 1024 * 1024
    received, clean_seconds = await upload(link, PORT, size, 10)
    assert received == size
    kbps = 256
    await nft.run(ruleset.replace_pod(TABLE, [fault(link, "bandwidth", kbps=kbps)]))
    received, seconds = await upload(link, PORT, size, 30)
    assert received == size
    # nft's byte limit starts with one second's worth of tokens (its default burst), so
    # the rest of the upload, (1024 - 256) KiB, is what the rate paces: about 3 s.
    paced = (size / 1024 - kbps) / seconds
    assert 0.5 * kbps <= paced <= 1.25 * kbps, f"{paced:.0f} KiB/s, limit {kbps} KiB/s"
    assert seconds > 10 * clean_seconds, (seconds, clean_seconds)


async def test_a_refused_change_leaves_the_table_as_it_was(
    link: Link, nft: NftSession, server: None
) -> None:
    loss = fault(link, "partition", id="kept")
    await nft.run(ruleset.replace_pod(TABLE, [loss]))
    too_fast = fault(link, "bandwidth", id="bad", kbps=4294967295)
    with pytest.raises(NftError, match="Value too large"):
        await nft.run(ruleset.replace_pod(TABLE, [too_fast]))
    listing = await nft.run(ruleset.list_table(TABLE))
    assert "faultplane:app-1/kept" in listing and "app-1/bad" not in listing
    assert await connects(link, PORT, 3, 0.5) == {"timeout": 3}


async def test_table_is_gone_when_its_nft_is_killed(link: Link, server: None) -> None:
    session = NftSession(link.pod, ruleset.table_name("doomed"))
    await session.start()
    await session.run(ruleset.replace_pod(session.table, [fault(link, "partition")]))
    assert session.table in list_ruleset(link.pod)
    assert await connects(link, PORT, 3, 0.5) == {"timeout": 3}
    assert session.pid is not None
    os.kill(session.pid, signal.SIGKILL)  # no cleanup runs: only the kernel's owner flag
    with pytest.raises(NftError, match="exited"):
        await session.run(ruleset.replace_pod(session.table, []))
    assert session.table not in list_ruleset(link.pod)
    assert await connects(link, PORT, 20, 0.5) == {"ok": 20}
