"""Test helpers: traffic through real sidecars, Envoy admin reads, injection requests."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from google.protobuf import json_format

from faultplane.demo.ports import free_port
from faultplane.demo.processes import wait_until
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent

# The example document, exactly as the CLI reads it.
EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent.parent / "examples" / "latency-fraud-scoring.json").read_text()
)


LIFECYCLE_STEADY_STATE = {"slo": "merchant-write-success", "min": 0.0, "abort_after": 600}


def injection_request(
    target: dict[str, Any] | None = None,
    fault: dict[str, Any] | None = None,
    **top: Any,
) -> pb.InjectionRequest:
    """The issue's example document, with `target`/`fault` keys and top-level fields replaced.

    Its steady state is relaxed to one no test mesh breaches by accident (min 0, abort
    after 10 minutes): tests of the lifecycle fault traffic on purpose, and the guard's
    own tests pass the steady state they exercise."""
    document = copy.deepcopy(EXAMPLE)
    document["steady_state"] = LIFECYCLE_STEADY_STATE
    if target is not None:
        document["target"] = {**document["target"], **target}
        document["target"] = {k: v for k, v in document["target"].items() if v is not None}
    if fault is not None:
        document["fault"] = fault
    document.update(top)
    return json_format.ParseDict(document, pb.InjectionRequest())


@dataclass(frozen=True)
class Reply:
    status: int
    ms: float
    headers: dict[str, str]
    size: int


async def send(
    url: str,
    count: int = 1,
    host: str | None = None,
    concurrency: int = 40,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> list[Reply]:
    """`count` requests, at most `concurrency` at a time; each reply's status and latency."""
    all_headers = {**({"Host": host} if host else {}), **(headers or {})}
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async def one(session: aiohttp.ClientSession) -> Reply:
        async with limit:
            started = time.monotonic()
            async with session.request(method, url, headers=all_headers) as response:
                body = await response.read()
                return Reply(
                    response.status,
                    (time.monotonic() - started) * 1000,
                    {k.lower(): v for k, v in response.headers.items()},
                    len(body),
                )

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return list(await asyncio.gather(*(one(session) for _ in range(count))))


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def admin_json(admin: str, path: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{admin}{path}") as response,
    ):
        return dict(await response.json(content_type=None))


async def faulted_routes(admin: str) -> dict[str, list[str]]:
    """Per route config, the fault slots configured on any of its routes (config_dump)."""
    dump = await admin_json(admin, "/config_dump?resource=dynamic_route_configs")
    found: dict[str, list[str]] = {}
    for entry in dump.get("configs", []):
        config = entry["route_config"]
        slots = sorted(
            {
                slot
                for vhost in config.get("virtual_hosts", [])
                for route in vhost.get("routes", [])
                for slot in route.get("typed_per_filter_config", {})
            }
        )
        found[config["name"]] = slots
    return found


async def fault_runtime_keys(admin: str) -> list[str]:
    runtime = await admin_json(admin, "/runtime")
    return sorted(key for key in runtime.get("entries", {}) if key.startswith("faultplane."))


async def wait_state(
    stub: faultplane_pb2_grpc.FaultServiceStub,
    injection_id: str,
    states: set[int],
    timeout: float = 20.0,
) -> pb.Injection:
    latest: list[pb.Injection] = []

    async def reached() -> bool:
        injection = await stub.GetInjection(pb.GetInjectionRequest(id=injection_id), timeout=5)
        latest[:] = [injection]
        return injection.state in states

    names = ", ".join(pb.State.Name(s) for s in states)
    await wait_until(reached, timeout, f"{injection_id} to reach {names}")
    return latest[0]


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    """The AioRpcError an awaited call raises (fails the test if it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded; expected an error")


CLI_TIMEOUT = 60.0  # an interpreter, grpc and one call, on a loaded 2-core machine


async def run_cli(*args: str) -> tuple[int, str, str]:
    """One `faultplane ARGS` process, without blocking the event loop: (exit, out, err)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "faultplane", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Return as soon as `condition()` holds; fail after `timeout` seconds.

    Polls, because what it waits for is server state with no event to await. The timeout
    only bounds a failing test: a passing one returns when the condition holds.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}")
        await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def ok_upstream() -> AsyncIterator[int]:
    """An app behind a sidecar: 200 "ok" to every method and path; yields its port."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()
