"""A demo service: answers every request after calling each dependency through its sidecar.

Run as `python -m faultplane.demo.app --service S --pod P --port N --egress-port E
--dependency D ...`. Dependencies are reached at the sidecar's egress listener with the
dependency's name as Host, exactly as a meshed app would; the response says how each
call went, so a fault on one dependency is visible to the caller.

`?size=N` pads the response to about N bytes (for bandwidth faults). GET /calls reports
the latency of this app's own calls to a dependency over a time window: what a fault on
the egress path does to the caller, as the caller saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque

from aiohttp import ClientError, ClientSession, ClientTimeout, web

CALL_TIMEOUT = ClientTimeout(total=30)
MAX_PADDING = 16 * 1024 * 1024
CALL_HISTORY = 200_000


def build_app(service: str, pod: str, egress_port: int, dependencies: list[str]) -> web.Application:
    app = web.Application()
    # (wall-clock end, dependency, milliseconds, status) of every call this app made.
    history: deque[tuple[float, str, float, int]] = deque(maxlen=CALL_HISTORY)

    async def start_session(app: web.Application) -> None:
        app["session"] = ClientSession(timeout=CALL_TIMEOUT)

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    async def call(session: ClientSession, dep: str, method: str, path: str) -> dict[str, object]:
        started = time.monotonic()
        url = f"http://127.0.0.1:{egress_port}{path}"
        try:
            async with session.request(method, url, headers={"Host": dep}) as response:
                await response.read()
                status = response.status
        except (ClientError, TimeoutError) as exc:
            status, error = 0, type(exc).__name__
        else:
            error = ""
        elapsed_ms = (time.monotonic() - started) * 1000
        history.append((time.time(), dep, elapsed_ms, status))
        result: dict[str, object] = {"service": dep, "status": status, "ms": round(elapsed_ms, 3)}
        if error:
            result["error"] = error
        return result

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        calls = await asyncio.gather(
            *(call(app["session"], dep, request.method, request.path) for dep in dependencies)
        )
        failed = [c for c in calls if not 200 <= int(c["status"]) < 300]  # type: ignore[call-overload]
        body: dict[str, object] = {"service": service, "pod": pod, "calls": calls}
        size = request.query.get("size", "")
        if size.isdigit():
            body["padding"] = "x" * min(int(size), MAX_PADDING)
        return web.json_response(body, status=502 if failed else 200)

    async def calls(request: web.Request) -> web.Response:
        dependency = request.query.get("dependency", "")
        since = float(request.query.get("since", 0))
        until = float(request.query.get("until", "inf"))
        window = [
            (ms, status)
            for at, dep, ms, status in history
            if since <= at <= until and (not dependency or dep == dependency)
        ]
        return web.json_response(
            {
                "latencies_ms": [ms for ms, _ in window],
                "statuses": [status for _, status in window],
            }
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"service": service, "pod": pod})

    app.on_startup.append(start_session)
    app.on_cleanup.append(close_session)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/calls", calls)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--service", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--egress-port", type=int, required=True)
    parser.add_argument("--dependency", action="append", default=[])
    args = parser.parse_args()
    app = build_app(args.service, args.pod, args.egress_port, args.dependency)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
