"""Every process a benchmark starts, stopped by PID even when the benchmark fails.

`Processes` is a context manager: children stop in reverse start order when it exits. A
process-wide safety net (atexit, SIGTERM) stops whatever is still alive if the harness
itself is interrupted. `usage()` reads a process tree's RSS and CPU with psutil.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

import psutil

from faultplane.demo.processes import Child

_LIVE: list[Child] = []


def _stop_all() -> None:
    for child in reversed(_LIVE):
        with contextlib.suppress(Exception):
            child.stop(timeout=2)
    _LIVE.clear()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_safety_net() -> None:
    """Stop every child at exit, and turn SIGTERM into SystemExit so `finally` runs."""
    atexit.register(_stop_all)
    signal.signal(signal.SIGTERM, _on_sigterm)
    raise_fd_limit()


def raise_fd_limit() -> None:
    """Thousands of simulated sidecars need thousands of sockets: soft limit = hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Processes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[Child] = []

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        safe = name.replace(" ", "-").replace("/", "_")
        child = Child(name, list(argv), self.log_dir / f"{safe}.log")
        child.start(env)
        self._children.append(child)
        _LIVE.append(child)
        return child

    def python(self, name: str, module: str, *args: str, cpu: int | None = None) -> Child:
        """`python -m module args`, on core `cpu` only if given (see `pinned`)."""
        prefix = [] if cpu is None else pinned(cpu)
        return self.spawn(name, [*prefix, sys.executable, "-m", module, *args])

    def stop(self, child: Child) -> None:
        child.stop(timeout=3)
        if child in self._children:
            self._children.remove(child)
        if child in _LIVE:
            _LIVE.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self._children)):
            self.stop(child)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


@dataclass(frozen=True)
class Usage:
    rss_bytes: int
    cpu_seconds: float  # user + system, of the process and its live children


def usage(pid: int) -> Usage:
    """RSS and CPU time of `pid` and all its descendants."""
    root = psutil.Process(pid)
    rss, cpu = 0, 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            rss += proc.memory_info().rss
            times = proc.cpu_times()
            cpu += times.user + times.system
    return Usage(rss, cpu)


def pinned(cpu: int) -> list[str]:
    """An argv prefix running a process on core `cpu` only (`taskset`), so that the load
    generator and the server it measures do not share a core; empty (no pinning) on a
    machine with fewer than two cores or without taskset."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]
