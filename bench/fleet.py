"""A control server and K simulated sidecars (bench.adsload) on a placeholder mesh: what
the fan-out and soak scenarios share.

The server runs on core 0 and the simulated sidecars on core 1 (`taskset`), each load
process holding up to STREAMS_PER_CLIENT streams and writing its progress to a status
file twice a second.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import api, serverflags
from bench.core import Context
from bench.meshes import placeholder_mesh, write_mesh
from bench.procs import usage
from faultplane.demo.processes import Child, wait_until

STREAMS_PER_CLIENT = 2500


@dataclass
class Fleet:
    server: Child
    api: str
    xds: str
    clients: list[Child] = field(default_factory=list)
    status_files: list[Path] = field(default_factory=list)

    def _statuses(self) -> list[dict[str, object]]:
        return [json.loads(p.read_text()) for p in self.status_files if p.exists()]

    def synced(self) -> int:
        return sum(int(str(status["synced"])) for status in self._statuses())

    def faulted(self) -> int:
        """Streams whose last runtime layer carried a fault (load started with
        `track_runtime`)."""
        return sum(int(str(status.get("faulted", 0))) for status in self._statuses())

    def client_cpu(self) -> float:
        return sum(usage(c.pid).cpu_seconds for c in self.clients if c.alive())

    def responses(self) -> tuple[int, int]:
        """(responses, bytes) the simulated sidecars received so far, all types."""
        count = size = 0
        for status in self._statuses():
            count += sum(status["responses"].values())  # type: ignore[attr-defined]
            size += sum(status.get("response_bytes", {}).values())  # type: ignore[attr-defined]
        return count, size

    def children(self) -> list[Child]:
        return [*self.clients, self.server]


async def start_server(
    ctx: Context, name: str, service: str, k: int, server_args: Sequence[str]
) -> Fleet:
    """A `faultplane serve` for a placeholder mesh of `k` pods of `service`, serving."""
    directory = ctx.dir(name)
    mesh = placeholder_mesh(service, k)
    mesh_file = write_mesh(mesh, directory)
    control = mesh.control
    server = ctx.procs.python(
        f"{name}-server",
        "faultplane",
        "serve",
        "--mesh",
        str(mesh_file),
        *server_args,
        *serverflags.standalone_args(directory),
        cpu=0,
    )
    fleet = Fleet(server, f"127.0.0.1:{control.api_port}", f"127.0.0.1:{control.xds_port}")
    await wait_until(lambda: api.serving(fleet.api), 180, f"{name} server", [server])
    return fleet


async def connect_sidecars(
    ctx: Context, fleet: Fleet, name: str, service: str, k: int, track_runtime: bool = False
) -> None:
    """K simulated sidecars of `service`, until every stream has synced once."""
    directory = ctx.dir(name)
    clients = max(1, math.ceil(k / STREAMS_PER_CLIENT))
    for index in range(clients):
        first = index * k // clients
        count = (index + 1) * k // clients - first
        status = directory / f"load-{index}.json"
        status.unlink(missing_ok=True)
        fleet.status_files.append(status)
        extra = ["--track-runtime"] if track_runtime else []
        fleet.clients.append(
            ctx.procs.python(
                f"{name}-load-{index}",
                "bench.adsload",
                "--xds",
                fleet.xds,
                "--service",
                service,
                "--first",
                str(first),
                "--count",
                str(count),
                "--status",
                str(status),
                *extra,
                cpu=1,
            )
        )

    async def all_synced() -> bool:
        return fleet.synced() >= k

    await wait_until(all_synced, 900, f"{k} streams", fleet.children(), 0.5)
