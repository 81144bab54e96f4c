"""The floor: what grpc.aio itself costs per sidecar update on this machine.

`python -m bench.floor --port P` serves the ADS method with no faultplane code: a
minimal echo. It answers each of a stream's opening subscriptions with one small
response, and on `Push(size)` (a unary call) writes one DiscoveryResponse of `size`
bytes, pre-serialized with only the nonce appended, on every open stream, and returns
once every stream has ACKed it. The same simulated sidecars (`bench.adsload`) that load
faultplane load it, so `server CPU per push / streams` is the least a Python gRPC server
can spend on one update (one response and its ACK); faultplane's figure is reported as
a ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.adsload import ADS_METHOD, scan
from bench.procs import Processes, usage
from faultplane.demo.ports import free_port
from faultplane.demo.processes import wait_until
from faultplane.xds import types
from faultplane.xds.wire import field as wire_field

PUSH_METHOD = "/bench.Floor/Push"
# DiscoveryResponse field numbers: version_info, resources, type_url, nonce.
_VERSION, _RESOURCES, _TYPE_URL, _NONCE = 1, 2, 4, 5


def response_body(size: int, version: str, type_url: str = types.RUNTIME) -> bytes:
    """A DiscoveryResponse without its nonce, about `size` bytes with the nonce: one
    resource of opaque bytes (the client never parses resources)."""
    version_field = wire_field(_VERSION, version.encode())
    type_field = wire_field(_TYPE_URL, type_url.encode())
    payload = max(0, size - len(version_field) - len(type_field) - 12)
    return version_field + wire_field(_RESOURCES, b"\0" * payload) + type_field


class Floor:
    def __init__(self) -> None:
        self._streams: set[grpc.aio.ServicerContext] = set()
        self._nonces = itertools.count(1)
        self._pending = 0
        self._done = asyncio.Event()

    async def ads(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        self._streams.add(context)
        try:
            async for request in requests:
                _, type_url, nonce = scan(request)
                if not nonce:  # a subscription: one small answer
                    await context.write(self._stamp(response_body(200, "v0", type_url)))
                elif self._pending:
                    self._pending -= 1
                    if not self._pending:
                        self._done.set()
        finally:
            self._streams.discard(context)

    async def push(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Write one response of `int(request)` bytes on every stream; wait for the ACKs."""
        body = response_body(int(request), f"v{next(self._nonces)}")
        streams = list(self._streams)
        self._pending = len(streams)
        self._done.clear()
        for stream in streams:
            await stream.write(self._stamp(body))
        await asyncio.wait_for(self._done.wait(), 120)
        return str(len(streams)).encode()

    def _stamp(self, body: bytes) -> bytes:
        return body + wire_field(_NONCE, str(next(self._nonces)).encode())


async def serve(port: int) -> None:
    floor = Floor()
    server = grpc.aio.server(options=(("grpc.max_concurrent_streams", 1 << 20),))
    handlers = {
        ADS_METHOD.rsplit("/", 1)[1]: grpc.stream_stream_rpc_method_handler(floor.ads),
    }
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(ADS_METHOD.split("/")[1], handlers),
            grpc.method_handlers_generic_handler(
                "bench.Floor", {"Push": grpc.unary_unary_rpc_method_handler(floor.push)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def push(address: str, size: int) -> int:
    """One push round on the floor server at `address`; how many streams ACKed it."""
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await channel.unary_unary(PUSH_METHOD)(str(size).encode(), timeout=180)
    return int(answer)


@dataclass(frozen=True)
class FloorRun:
    """The floor at one fleet size: server and simulated-sidecar CPU per update (us)."""

    server_us: float
    clients_us: float
    updates: int


async def measure(
    procs: Processes, directory: Path, streams: int, size: int, rounds: int = 8
) -> FloorRun:
    """Serve `streams` simulated sidecars from the floor server (core 0; the sidecars on
    core 1, as in the fan-out) and push `rounds` responses of `size` bytes to all."""
    port = free_port()
    server = procs.python(f"floor-{streams}-server", "bench.floor", "--port", str(port), cpu=0)
    clients = []
    status_files = []
    try:
        per_client = 2500
        count = max(1, -(-streams // per_client))
        for index in range(count):
            first = index * streams // count
            status = directory / f"floor-load-{index}.json"
            status.unlink(missing_ok=True)
            status_files.append(status)
            clients.append(
                procs.python(
                    f"floor-{streams}-load-{index}",
                    "bench.adsload",
                    "--xds", f"127.0.0.1:{port}",
                    "--service", "floor",
                    "--first", str(first),
                    "--count", str((index + 1) * streams // count - first),
                    "--status", str(status),
                    cpu=1,
                )
            )  # fmt: skip

        async def synced() -> bool:
            return sum(_synced(path) for path in status_files) >= streams

        await wait_until(synced, 900, f"floor: {streams} streams", [server, *clients], 0.5)
        await push(f"127.0.0.1:{port}", size)  # warm-up
        cpu0 = usage(server.pid).cpu_seconds
        load0 = sum(usage(c.pid).cpu_seconds for c in clients)
        for _ in range(rounds):
            acked = await push(f"127.0.0.1:{port}", size)
            if acked < streams:
                raise RuntimeError(f"floor: {acked} of {streams} streams ACKed")
        updates = rounds * streams
        server_s = usage(server.pid).cpu_seconds - cpu0
        clients_s = sum(usage(c.pid).cpu_seconds for c in clients) - load0
        return FloorRun(server_s / updates * 1e6, clients_s / updates * 1e6, updates)
    finally:
        for child in [*clients, server]:
            procs.stop(child)


def _synced(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["synced"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
