"""The load generator: a steady, open-loop stream of merchant writes into a service.

Open loop (requests start on a fixed schedule, whatever the latency) so that a slow
dependency shows up as latency and errors, not as a quietly lower request rate.
Run as `python -m faultplane.demo.loadgen --port N --target PORT ...`; GET /stats on
its port reads the counts, POST /stop stops sending, waits for requests in flight and
returns the final counts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from faultplane.render.faults import INJECTION_HEADER
from faultplane.slo.quantile import quantile

REQUEST_TIMEOUT = ClientTimeout(total=30)
# What Envoy's fault filter answers an aborted request with. On an overlay mesh no route is
# faultplane's, so no x-faultplane-injection header is added: the body tells.
FAULT_ABORT_BODY = b"fault filter abort"


@dataclass
class LoadStats:
    requests: int = 0
    ok: int = 0
    # Failures answered by a fault injection (they carry its x-faultplane-injection
    # header): failed on purpose, not by the mesh.
    injected: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def record(self, status: int, elapsed_ms: float, injected: bool = False) -> None:
        self.requests += 1
        self.ok += 200 <= status < 300
        self.injected += injected and not 200 <= status < 300
        self.by_status[str(status)] += 1
        self.latencies_ms.append(elapsed_ms)

    def as_dict(self) -> dict[str, object]:
        ordered = sorted(self.latencies_ms)
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.requests - self.ok,
            "injected": self.injected,
            "by_status": dict(self.by_status),
            "p50_ms": quantile(ordered, 0.50),
            "p99_ms": quantile(ordered, 0.99),
        }


class LoadGenerator:
    def __init__(self, targets: list[int], method: str, path: str, rate: float) -> None:
        self.stats = LoadStats()
        self._targets = itertools.cycle(targets)
        self._method, self._path, self._interval = method, path, 1.0 / rate
        self._in_flight: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None

    async def start(self) -> None:
        self._session = ClientSession(timeout=REQUEST_TIMEOUT)
        self._runner = asyncio.create_task(self._run())

    async def stop(self) -> LoadStats:
        if self._runner is not None:
            self._runner.cancel()
            self._runner = None
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        if self._session is not None:
            await self._session.close()
            self._session = None
        return self.stats

    async def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            task = asyncio.create_task(self._one(next(self._targets)))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            next_at += self._interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _one(self, port: int) -> None:
        assert self._session is not None
        started = time.monotonic()
        try:
            url = f"http://127.0.0.1:{port}{self._path}"
            async with self._session.request(self._method, url, data=b"{}") as response:
                body = await response.read()
                status = response.status
                injected = INJECTION_HEADER in response.headers or body == FAULT_ABORT_BODY
        except (ClientError, TimeoutError):
            status, injected = 0, False
        self.stats.record(status, (time.monotonic() - started) * 1000, injected)


def build_app(generator: LoadGenerator) -> web.Application:
    app = web.Application()

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(generator.stats.as_dict())

    async def stop(_: web.Request) -> web.Response:
        return web.json_response((await generator.stop()).as_dict())

    async def on_startup(_: web.Application) -> None:
        await generator.start()

    async def on_cleanup(_: web.Application) -> None:
        await generator.stop()

    app.router.add_get("/stats", stats)
    app.router.add_post("/stop", stop)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port of the /stats endpoint")
    parser.add_argument("--target", type=int, action="append", required=True)
    parser.add_argument("--method", default="POST")
    parser.add_argument("--path", default="/merchant-write")
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    generator = LoadGenerator(args.target, args.method, args.path, args.rate)
    web.run_app(build_app(generator), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
