"""Network namespaces joined by a veth pair, for the kernel-fault tests (root only).

The namespaces and the veth pair are faultplane.demo.netns's (the kernel demo's too).
A `Link` is two namespaces the test creates: `pod` (where faults go, as the agent's pods
file names it) and `far` (the far end: a database, say), on a /30 of 10.200.0.0/16 that
exists only inside them. Sockets are opened inside a namespace by a thread that has
joined it (setns), then used from asyncio in this process, so traffic is measured without
a subprocess per connection. Deleting the namespaces removes the veth pair with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from faultplane.demo.netns import Link, ip, missing_privileges, ruleset, run, veth_link

__all__ = ["Link", "ip", "ruleset", "run", "veth_link"]

# Kernel tests skip, saying why, where they cannot run (not root, no nft).
needs_root_and_nft = pytest.mark.skipif(
    missing_privileges() is not None, reason=missing_privileges() or ""
)


def unique_tag() -> str:
    """Short (interface names are at most 15 bytes) and unique to this process."""
    return f"{os.getpid() % 100000}{int(time.monotonic() * 1000) % 100}"


def unique_subnet() -> int:
    return os.getpid() % 250 + 1


@contextlib.asynccontextmanager
async def sink_server(link: Link, port: int) -> AsyncIterator[Callable[[], int]]:
    """A TCP server in the far namespace that reads until EOF and answers with the
    number of bytes it read; yields how many connections it accepted."""
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        total = 0
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                total += len(chunk)
            writer.write(f"{total}\n".encode())
            await writer.drain()
        writer.close()

    sock = link.socket_in(link.far)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((link.far_address, port))
    sock.listen(1024)
    server = await asyncio.start_server(serve, sock=sock, backlog=1024)
    try:
        yield lambda: accepted
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


async def connect(link: Link, port: int, timeout: float) -> str:
    """One TCP connect from the pod to the far end: "ok", "timeout", "refused", "reset"."""
    sock = link.socket_in(link.pod)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (link.far_address, port)), timeout)
        return "ok"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    finally:
        sock.close()


async def connects(link: Link, port: int, count: int, timeout: float) -> dict[str, int]:
    """`count` concurrent connects; how many ended each way."""
    outcomes = await asyncio.gather(*(connect(link, port, timeout) for _ in range(count)))
    return {outcome: outcomes.count(outcome) for outcome in set(outcomes)}


async def upload(link: Link, port: int, size: int, timeout: float) -> tuple[int, float]:
    """Send `size` bytes to the sink; (bytes it counted, seconds until it answered)."""
    sock = link.socket_in(link.pod)
    await asyncio.get_running_loop().sock_connect(sock, (link.far_address, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    started = time.monotonic()
    try:
        writer.write(b"x" * size)
        await asyncio.wait_for(writer.drain(), timeout)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.readline(), timeout)
        return int(answer), time.monotonic() - started
    finally:
        writer.close()
