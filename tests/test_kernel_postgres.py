"""The database story: a real PostgreSQL across a veth, faulted in the client's kernel.

PostgreSQL (Debian's, as the store tests use it) runs in the far namespace as the
"managed database"; the client is libpq (psycopg) opened by threads that joined the pod
namespace, as an app in that pod would. Faults go in the pod's owner table through the
agent's `NftSession`; each test measures clean traffic first.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from faultplane.agent.nft import NftSession
from faultplane.demo.postgres import OWNER, PostgresCluster, postgres_bindir
from faultplane.demo.processes import Child
from faultplane.kernel import ruleset
from faultplane.kernel.fault import parse_fault
from tests.netns import Link, needs_root_and_nft, unique_subnet, unique_tag, veth_link

pytestmark = [needs_root_and_nft, pytest.mark.asyncio(loop_scope="module")]

PORT = 5432
TABLE = ruleset.table_name("pgtest")
SLOW = 0.1  # seconds: a query slower than this waited for a retransmission (RTO >= 200 ms)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def link() -> AsyncIterator[Link]:
    with veth_link(unique_tag(), unique_subnet()) as made:
        yield made


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def database(link: Link) -> AsyncIterator[str]:
    """PostgreSQL listening on the far end's address only; yields its URL."""
    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="faultplane-pg-")), postgres_bindir())
    cluster.port = PORT
    try:
        cluster.init()
        # Trust the pod's side of the veth: a throwaway server reachable only there.
        hba = cluster.root / "pg_hba.conf"
        hba.write_text(f"host all all {link.pod_address}/32 trust\n")
        hba.chmod(0o644)
        argv = [
            "ip", "netns", "exec", link.far,
            "setpriv", "--reuid", OWNER, "--regid", OWNER, "--init-groups", "--",
            str(cluster.bindir / "postgres"), "-D", str(cluster.data), "-p", str(PORT),
            "-k", str(cluster.root), "-c", f"listen_addresses={link.far_address}",
            "-c", f"hba_file={hba}", "-c", "fsync=off", "-c", "max_connections=50",
        ]  # fmt: skip
        cluster.server = Child("postgres", argv, cluster.root / "postgres.log").start()
        url = f"postgresql://{OWNER}@{link.far_address}:{PORT}/postgres"
        deadline = time.monotonic() + 60
        while await query(link, url) != "ok":
            assert cluster.server.alive(), cluster.server.log_tail()
            assert time.monotonic() < deadline, "postgres not ready in 60 s"
            await asyncio.sleep(0.05)
        yield url
    finally:
        cluster.stop()
        cluster.remove()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def nft(link: Link, database: str) -> AsyncIterator[NftSession]:
    session = NftSession(link.pod, TABLE)
    await session.start()
    try:
        yield session
    finally:
        await session.close()


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(nft: NftSession) -> AsyncIterator[None]:
    yield
    await nft.run(ruleset.replace_pod(TABLE, []))


def _query(url: str) -> str:
    """Connect and `SELECT 1` from the pod: "ok" or libpq's error message."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1").fetchone()
        return "ok"
    except psycopg.OperationalError as exc:
        return str(exc)


def _query_times(conn: psycopg.Connection[tuple[int]], count: int) -> list[float]:
    """`count` queries on an open connection, each one's seconds."""
    times = []
    for _ in range(count):
        started = time.monotonic()
        conn.execute("SELECT 1").fetchone()
        times.append(time.monotonic() - started)
    return times


async def query(link: Link, url: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(link.executor(link.pod), _query, url)


@contextlib.asynccontextmanager
async def connections(link: Link, url: str, count: int) -> AsyncIterator[list[Any]]:
    """`count` open connections from the pod (autocommit: a query is one round trip)."""
    loop = asyncio.get_running_loop()
    pool = link.executor(link.pod)
    opening = [
        loop.run_in_executor(pool, lambda: psycopg.connect(url, autocommit=True))
        for _ in range(count)
    ]
    opened = await asyncio.gather(*opening)
    try:
        yield opened
    finally:
        for conn in opened:
            conn.close()


async def query_times(link: Link, opened: list[Any], count: int) -> list[float]:
    """`count` queries on each connection at once; every query's seconds."""
    loop = asyncio.get_running_loop()
    pool = link.executor(link.pod)
    runs = [loop.run_in_executor(pool, _query_times, conn, count) for conn in opened]
    return [seconds for times in await asyncio.gather(*runs) for seconds in times]


async def put(nft: NftSession, link: Link, kind: str, **fields: object) -> None:
    fault = {"pod": "app-1", "id": kind, "kind": kind, "direction": "egress", **fields}
    fault.update(cidr=f"{link.far_address}/32", port=PORT)
    await nft.run(ruleset.replace_pod(TABLE, [parse_fault(fault)]))


async def test_packet_loss_to_the_database_slows_that_share_of_queries(
    link: Link, database: str, nft: NftSession
) -> None:
    async with connections(link, database, 8) as opened:
        clean = await query_times(link, opened, 25)
        assert sum(seconds > SLOW for seconds in clean) <= 2, sorted(clean)[-5:]
        await put(nft, link, "packet_loss", percentage=30)
        times = await query_times(link, opened, 25)
    slow = sum(seconds > SLOW for seconds in times)
    # A query whose request packet is dropped waits for TCP's retransmission (>= 200 ms).
    # Binomial n=200, p=0.3: mean 60, sd 6.5; +-4.5 sd.
    assert 31 <= slow <= 89, f"{slow} of {len(times)} queries slower than {SLOW}s"


async def test_partition_from_the_database_times_out_new_connections(
    link: Link, database: str, nft: NftSession
) -> None:
    assert await query(link, database) == "ok"
    await put(nft, link, "partition")
    assert "timeout expired" in await query(link, database)


async def test_reset_makes_the_database_refuse_connections(
    link: Link, database: str, nft: NftSession
) -> None:
    await put(nft, link, "reset")
    assert "Connection refused" in await query(link, database)
    await nft.run(ruleset.replace_pod(TABLE, []))
    assert await query(link, database) == "ok"
