"""Real `faultplane serve` and `faultplane` CLI processes for tests that drive the CLI
the way an operator does: each command a fresh process with its exit code, stdout and
stderr; servers on free loopback ports with their own store, restartable in place; fake
payments-api sidecars connected to a server's xDS port. Every process is stopped by PID.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from faultplane.demo.launcher import grpc_serving
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, wait_until
from faultplane.model.mesh import load_mesh
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, ROOT
from tests.fake_sidecar import fake_sidecars
from tests.helpers import EXAMPLE

# Generous for a loaded 2-core machine: each CLI run is a fresh interpreter with grpc.
START_TIMEOUT = 60.0
CLI_TIMEOUT = 60.0
SLOS = ROOT / "envoy-configs" / "slos.yaml"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment without any FAULTPLANE_ variable, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FAULTPLANE_")}
    return {**clean, **(env or {})}


async def cli(*args: str, env: Mapping[str, str] | None = None, stdin: str | None = None) -> Result:
    """One `faultplane ARGS` process, awaited without blocking the loop (the fake
    sidecars keep ACKing meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "faultplane", *args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=environment(env),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), CLI_TIMEOUT
        )
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def ok(result: Result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def failed(result: Result, code: int) -> str:
    """The CLI exited with `code`, a message on stderr, no traceback; the message."""
    assert result.returncode == code, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


@dataclass
class Server:
    """A `faultplane serve` process, restartable on the same ports and store."""

    api: str
    xds: str
    db: Path
    argv: list[str]
    log: Path
    child: Child | None = None

    def start(self) -> None:
        self.child = Child("faultplane-serve", self.argv, self.log).start()

    async def healthy(self) -> None:
        assert self.child is not None
        await wait_until(
            lambda: grpc_serving(self.api), START_TIMEOUT, "faultplane serve", [self.child]
        )

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=10)

    def cli(self, *args: str, **kwargs: Any) -> Any:
        return cli(*args, "--api", self.api, **kwargs)


Serve = Callable[..., Any]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Starts `faultplane serve` (local auth, the mesh's SLO catalogue, no baseline
    history required); every one is stopped by PID at the end, even if the test fails."""
    servers: list[Server] = []

    async def start(*flags: str) -> Server:
        ports = PortAllocator()
        api, xds = ports(), ports()
        run_dir = tmp_path / f"server-{len(servers)}"
        argv = [
            sys.executable, "-m", "faultplane", "serve", "--mesh", str(MESH_FILE),
            "--auth", "local", "--db", str(run_dir / "faultplane.db"),
            "--slos", str(SLOS), "--baseline-min-seconds", "0",
            "--api-port", str(api), "--xds-port", str(xds), "--metrics-port", str(ports()),
            *flags,
        ]  # fmt: skip
        db = run_dir / "faultplane.db"
        server = Server(f"127.0.0.1:{api}", f"127.0.0.1:{xds}", db, argv, run_dir / "serve.log")
        servers.append(server)
        server.start()
        await server.healthy()
        return server

    try:
        yield start
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture
async def spawned() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Long-running CLI processes (watch); killed by PID and reaped at the end."""
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def spawn(
    processes: list[asyncio.subprocess.Process], *args: str
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "faultplane", *args, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=environment(None),
    )  # fmt: skip
    processes.append(process)
    return process


async def line_with(stream: asyncio.StreamReader, text: str, timeout: float = 60) -> str:
    """Read lines until one contains `text` (fails at EOF or after `timeout`)."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no line with {text!r} in {timeout:g}s; saw {seen}"
        line = (await asyncio.wait_for(stream.readline(), remaining)).decode()
        assert line, f"EOF before a line with {text!r}; saw {seen}"
        seen.append(line)
        if text in line:
            return line


@pytest.fixture
async def sidecars_of(serve: Serve) -> AsyncIterator[Callable[[Server], Any]]:
    """Connects the four payments-api fake sidecars to a server; waits until they are."""
    mesh = load_mesh(MESH_FILE)
    opened: list[Any] = []

    async def connect(server: Server) -> None:
        context = fake_sidecars(server.xds, mesh, list(mesh.services["payments-api"].pods))
        await context.__aenter__()
        opened.append(context)

        async def all_connected() -> bool:
            async with grpc.aio.insecure_channel(server.api) as channel:
                stub = faultplane_pb2_grpc.FaultServiceStub(channel)
                reply = await stub.ListSidecars(pb.ListSidecarsRequest(), timeout=5)
            return sum(s.connected for s in reply.sidecars) == 4

        await wait_until(all_connected, 30, "4 fake sidecars to connect")

    yield connect
    for context in reversed(opened):
        await context.__aexit__(None, None, None)


def document(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def example(**changes: Any) -> dict[str, Any]:
    """The README's example document with top-level fields replaced."""
    return {**copy.deepcopy(EXAMPLE), **changes}


ABORT_ALL = {
    "target": {"service": "payments-api", "selector": "", "max_pods": 4},
    "fault": {"type": "abort", "http_status": 503},
}
