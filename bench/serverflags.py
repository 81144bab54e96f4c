"""Which `faultplane serve` flags this checkout has (the server grows while benchmarks run)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path


@functools.cache
def serve_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "faultplane", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout


def has(flag: str) -> bool:
    return flag in serve_help().split()


def standalone_args(run_dir: Path) -> list[str]:
    """For a server the harness starts itself: no credentials on loopback, its own store."""
    args = []
    if has("--auth"):
        args += ["--auth", "local"]
    if has("--db"):
        args += ["--db", str(run_dir / "faultplane.db")]
    if (run_dir / "slos.yaml").exists():  # written beside the mesh by bench.meshes
        args += ["--slos", str(run_dir / "slos.yaml"), "--baseline-min-seconds", "0"]
    return args
