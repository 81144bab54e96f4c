"""`faultplane serve` as a child process on free loopback ports, stopped by PID.

For tests that need what only a real server process has: its own store, key and anchor
files with their modes, its start-up refusals, and CLI processes talking to it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child
from tests.conftest import MESH_FILE
from tests.test_auth_e2e import _wait_serving, run_cli


@dataclass
class Server:
    """A running `faultplane serve --auth token` on free loopback ports."""

    child: Child
    api: str
    xds_port: int
    db: Path

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--api", self.api, *(("--token", token) if token else ()))

    def stop(self) -> int | None:
        """SIGTERM and wait: a clean stop (the anchor is flushed at close)."""
        return self.child.stop(timeout=30)


class Launcher:
    """Starts servers; every one is stopped by PID at the end, even when a test fails."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[Child] = []

    def __call__(self, db: Path, *flags: str) -> Server:
        ports = PortAllocator()
        api_port, xds_port, metrics_port = ports(), ports(), ports()
        child = Child(
            "faultplane-serve",
            [sys.executable, "-m", "faultplane", "serve", "--mesh", str(MESH_FILE),
             "--auth", "token", "--db", str(db), "--api-port", str(api_port),
             "--xds-port", str(xds_port), "--metrics-port", str(metrics_port), *flags],
            self.logs / f"serve-{len(self.children)}.log",  # never inside the state dir
        )  # fmt: skip
        self.children.append(child)
        child.start()
        api = f"127.0.0.1:{api_port}"
        _wait_serving(child, api, None)
        return Server(child, api, xds_port, db)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path / "logs")
    try:
        yield launcher
    finally:
        for child in reversed(launcher.children):
            child.stop(timeout=10)
