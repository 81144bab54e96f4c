"""`faultplane serve --xds-listen/--api-listen/--metrics-listen HOST:PORT` (issue 11, item 2).

The listen addresses are configurable in both modes (0.0.0.0 allowed for production);
the tests stay on loopback. The old `--*-port` flags keep working; giving both forms for
one part is refused, as is local (no-auth) mode on a non-loopback API address.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from faultplane.cli.main import build_parser
from faultplane.demo.launcher import grpc_serving
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import Child, wait_until
from faultplane.server.config import listen_address, parse_listen_address
from tests.conftest import MESH_FILE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:18001", ("127.0.0.1", 18001)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_listen_addresses_parse_and_format_back(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected
    assert listen_address(*expected) == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("18001", "is not HOST:PORT"),
        (":18001", "is not HOST:PORT"),
        ("example.com:80", "is not an IP address or localhost"),
        ("127.0.0.1:65536", "is not a number from 0 to 65535"),
        ("127.0.0.1:x", "is not a number from 0 to 65535"),
    ],
)
def test_a_bad_listen_address_is_refused_naming_the_flag(
    value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--api-listen", value])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert "argument --api-listen:" in stderr and reason in stderr, stderr


def _serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "faultplane", "serve", "--db", str(tmp_path / "db"), *flags]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--api-listen", "127.0.0.1:0", "--api-port", "0"], "--api-listen or --api-port"),
        (
            ["--mesh", str(MESH_FILE), "--auth", "local", "--api-listen", "0.0.0.0:0"],
            "binds only to loopback",
        ),
        (["--overlay", "--mesh", str(MESH_FILE)], "--overlay serves Envoys of any mesh"),
    ],
)
def test_flags_that_cannot_work_together_exit_2_before_starting(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    result = _serve(tmp_path, *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "db").exists()  # nothing was opened


async def test_the_server_listens_where_it_is_told(tmp_path: Path) -> None:
    ports = PortAllocator()
    xds, api, metrics = (f"127.0.0.1:{ports()}" for _ in range(3))
    child = Child(
        "serve",
        [sys.executable, "-m", "faultplane", "serve", "--mesh", str(MESH_FILE),
         "--auth", "local", "--db", str(tmp_path / "db"), "--xds-listen", xds,
         "--api-listen", api, "--metrics-listen", metrics],
        tmp_path / "serve.log",
    ).start()  # fmt: skip
    try:
        await wait_until(lambda: grpc_serving(api), 30, "the API on --api-listen", [child])
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as reply:
            assert b"faultplane_sidecars_connected" in reply.read()
        host, port = parse_listen_address(xds)
        with socket.create_connection((host, port), timeout=5):
            pass  # the xDS port accepts connections
        started = next(
            json.loads(line)
            for line in (tmp_path / "serve.log").read_text().splitlines()
            if "control server started" in line
        )
        assert (started["xds"], started["api"], started["metrics"]) == (xds, api, metrics)
    finally:
        child.stop()
