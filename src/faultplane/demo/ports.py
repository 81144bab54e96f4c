"""Free loopback ports, for meshes and tests that must not collide with anything.

Ports are picked below the kernel's ephemeral range: a port the kernel hands out for
`bind(0)` is also one it may hand to any outgoing connection (Envoy's to its upstreams,
a client's to an app) between our check and the listener's bind, which made a mesh fail
now and then with "Address already in use". Below the range only another listener can
take it.

`FAULTPLANE_PORT_RANGE=LOW-HIGH` confines the choice to a range of its own, so several
meshes started side by side on one host (parallel test workers, two developers) never
pick the same port between one's check and its bind. Child processes inherit it.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOCAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000  # above the well-known and most registered service ports
ATTEMPTS = 200
RANGE_VARIABLE = "FAULTPLANE_PORT_RANGE"


class PortAllocator:
    """Hands out distinct free loopback ports (the OS may offer a just-closed one twice)."""

    def __init__(self) -> None:
        self._given: set[int] = set()

    def __call__(self) -> int:
        while True:
            port = free_port()
            if port not in self._given:
                self._given.add(port)
                return port


def free_port() -> int:
    """A port nothing listens on: in $FAULTPLANE_PORT_RANGE if set, else below the
    ephemeral range when there is room there."""
    low, high = _configured_range() or (LOWEST, _ephemeral_start())
    if high - low > ATTEMPTS:
        for _ in range(ATTEMPTS):
            port = random.randrange(low, high)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _configured_range() -> tuple[int, int] | None:
    """(low, high) from $FAULTPLANE_PORT_RANGE ("LOW-HIGH", high exclusive), or None."""
    value = os.environ.get(RANGE_VARIABLE)
    if not value:
        return None
    try:
        low, high = (int(part) for part in value.split("-"))
    except ValueError:
        raise ValueError(
            f"{RANGE_VARIABLE}={value!r}: expected LOW-HIGH, e.g. 20000-25000"
        ) from None
    if not 1024 <= low < high <= 65536:
        raise ValueError(f"{RANGE_VARIABLE}={value!r}: need 1024 <= LOW < HIGH <= 65536")
    return low, high


def _ephemeral_start() -> int:
    try:
        return int(LOCAL_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
