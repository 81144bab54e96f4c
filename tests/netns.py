"""Network namespaces joined by a veth pair, for the kernel-fault tests (root only).

A `Link` is two namespaces the test creates: `pod` (where faults go, as the agent's pods
file names it) and `far` (the far end: a database, say), on a /30 of 10.200.0.0/16 that
exists only inside them. Sockets are opened inside a namespace by a thread that has
joined it (setns), then used from asyncio in this process, so traffic is measured without
a subprocess per connection. Deleting the namespaces removes the veth pair with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

_CLONE_NEWNET = 0x40000000
THREADS = 8  # per namespace: blocking clients (libpq) run this many at once


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the test creates network namespaces and nftables tables"
    missing = [tool for tool in ("nft", "ip") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH (Debian: apt-get install nftables)"
    return None


# Kernel tests skip, saying why, where they cannot run (not root, no nft).
needs_root_and_nft = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def run(*command: str, check: bool = True) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def ip(*argv: str, netns: str | None = None, check: bool = True) -> str:
    """`ip ARGV`, inside `netns` if given (`ip -n`)."""
    return run("ip", *(("-n", netns) if netns else ()), *argv, check=check)


def ruleset(netns: str) -> str:
    """`nft list ruleset` inside the namespace."""
    return run("ip", "netns", "exec", netns, "nft", "list", "ruleset")


def _enter(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
    finally:
        os.close(fd)


@dataclass
class Link:
    pod: str
    far: str
    pod_address: str
    far_address: str
    _threads: dict[str, ThreadPoolExecutor] = field(default_factory=dict)

    def executor(self, netns: str) -> ThreadPoolExecutor:
        """Threads that have joined `netns`: what they open (sockets, libpq connections)
        belongs to it, wherever it is used from afterwards."""
        pool = self._threads.get(netns)
        if pool is None:
            pool = ThreadPoolExecutor(THREADS, initializer=_enter, initargs=(netns,))
            self._threads[netns] = pool
        return pool

    def socket_in(self, netns: str) -> socket.socket:
        """A non-blocking TCP socket that belongs to `netns`."""
        sock = self.executor(netns).submit(socket.socket).result()
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        for pool in self._threads.values():
            pool.shutdown()
        for netns in (self.pod, self.far):
            ip("netns", "del", netns, check=False)


@contextlib.contextmanager
def veth_link(tag: str, subnet: int) -> Iterator[Link]:
    """Namespaces `fp<tag>p` and `fp<tag>f` joined by veth, 10.200.<subnet>.{1,2}/30."""
    link = Link(f"fp{tag}p", f"fp{tag}f", f"10.200.{subnet}.1", f"10.200.{subnet}.2")
    try:
        for netns in (link.pod, link.far):
            ip("netns", "add", netns)
            ip("link", "set", "lo", "up", netns=netns)
        ip("link", "add", f"fp{tag}a", "netns", link.pod, "type", "veth",
           "peer", "name", f"fp{tag}b", "netns", link.far)  # fmt: skip
        for netns, dev, address in ((link.pod, "a", link.pod_address),
                                    (link.far, "b", link.far_address)):  # fmt: skip
            ip("addr", "add", f"{address}/30", "dev", f"fp{tag}{dev}", netns=netns)
            ip("link", "set", f"fp{tag}{dev}", "up", netns=netns)
        yield link
    finally:
        link.close()


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
