"""Free loopback ports, for meshes and tests that must not collide with anything."""

import socket


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
