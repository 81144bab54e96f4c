"""Network namespaces joined by a veth pair: a pod and the far end it talks to (root).

A `Link` is two namespaces, `pod` (where kernel faults go, as an agent's pods file names
it) and `far` (a database, say), on a /30 of 10.200.0.0/16 that exists only inside them.
Sockets (and libpq connections) are opened inside a namespace by a thread that joined it
(setns), then used from anywhere in the process. Deleting the namespaces removes the veth
pair with them. The kernel demo and the kernel tests both build on this.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

_CLONE_NEWNET = 0x40000000
THREADS = 8  # per namespace: blocking clients (libpq) run this many at once


def missing_privileges() -> str | None:
    """Why namespaces and nftables cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root: it creates network namespaces and nftables tables"
    missing = [tool for tool in ("nft", "ip") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH (Debian: apt-get install nftables iproute2)"
    return None


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


def enter(netns: str) -> None:
    """Move the calling thread into `netns` (a thread pool's initializer)."""
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

    def executor(self, netns: str, threads: int = THREADS) -> ThreadPoolExecutor:
        """Threads that have joined `netns`: what they open (sockets, libpq connections)
        belongs to it, wherever it is used from afterwards."""
        pool = self._threads.get(netns)
        if pool is None:
            pool = ThreadPoolExecutor(threads, initializer=enter, initargs=(netns,))
            self._threads[netns] = pool
        return pool

    def socket_in(self, netns: str) -> socket.socket:
        """A non-blocking TCP socket that belongs to `netns`."""
        sock = self.executor(netns).submit(socket.socket).result()
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        for pool in self._threads.values():
            pool.shutdown(wait=False, cancel_futures=True)
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
