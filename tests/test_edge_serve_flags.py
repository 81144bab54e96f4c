"""`faultplane serve` refuses numeric flags that make no sense, before starting anything
(issue 9, item 11).

`--deadman-ttl 0` used to start a server whose leases lapse at once (or, with NaN or
inf, never); the same held for a zero or negative ACK timeout and guard tick. Each flag
is range-checked while parsing: exit code 2, a message naming the flag and the range,
no traceback, and no store or port opened.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from faultplane.cli.main import build_parser
from faultplane.demo.ports import PortAllocator
from tests.conftest import MESH_FILE

BAD = ["0", "-1", "nan", "inf", "-inf", "ten"]
# (flag, values it must refuse, values it must accept)
FLAGS: list[tuple[str, list[str], list[str]]] = [
    ("--deadman-ttl", [*BAD, "0.5", "86401"], ["1", "2.5", "86400"]),
    ("--ack-timeout", [*BAD, "3601"], ["0.1", "120"]),
    ("--guard-tick", [*BAD, "0.01", "61"], ["0.05", "0.5", "60"]),
    ("--baseline-min-seconds", ["-1", "nan", "inf", "ten"], ["0", "3", "300"]),
    ("--baseline-window", [*BAD], ["3600"]),
    ("--approval-timeout", [*BAD], ["60"]),
    ("--approval-max-duration", ["-1", "nan", "inf"], ["0", "600"]),
    ("--approval-max-percentage", ["-1", "100.5", "nan"], ["0", "30", "100"]),
    ("--approval-max-pods", ["-1", "1.5", "many"], ["0", "3"]),
    ("--fault-slots", ["0", "-1", "65", "x"], ["1", "4", "64"]),
    ("--api-port", ["-1", "65536", "x"], ["0", "18001"]),
]


@pytest.mark.parametrize(
    ("flag", "value"),
    [pytest.param(flag, v, id=f"{flag}={v}") for flag, bad, _ in FLAGS for v in bad],
)
def test_serve_refuses_a_meaningless_value(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", f"{flag}={value}"])

    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert f"argument {flag}: must be a " in stderr, stderr
    assert repr(value) in stderr, stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [pytest.param(flag, v, id=f"{flag}={v}") for flag, _, good in FLAGS for v in good],
)
def test_serve_accepts_sensible_values(flag: str, value: str) -> None:
    args = build_parser().parse_args(["serve", f"{flag}={value}"])

    assert getattr(args, flag.removeprefix("--").replace("-", "_")) == float(value)


def _serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`faultplane serve` on free ports and a fresh store path, with `flags`."""
    ports = PortAllocator()
    argv = [sys.executable, "-m", "faultplane", "serve", "--mesh", str(MESH_FILE),
            "--db", str(tmp_path / "faultplane.db"), "--xds-port", str(ports()),
            "--api-port", str(ports()), "--metrics-port", str(ports()), *flags]  # fmt: skip
    # The timeout only bounds the failure mode (a server that started and runs on);
    # a refusal is one interpreter start-up.
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_serve_with_deadman_ttl_zero_exits_before_starting(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--deadman-ttl", "0")

    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "argument --deadman-ttl: must be a number of seconds from 1 to 86400, not '0'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert "control server started" not in result.stdout + result.stderr
    assert not (tmp_path / "faultplane.db").exists()  # nothing was opened


def test_serve_refuses_a_baseline_window_shorter_than_the_history_it_needs(
    tmp_path: Path,
) -> None:
    result = _serve(tmp_path, "--baseline-min-seconds", "300", "--baseline-window", "60")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "--baseline-window (60 s) must be at least --baseline-min-seconds (300 s)" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "faultplane.db").exists()
