"""A real Prometheus (Debian's package) scraping the sidecars' /stats/prometheus."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import yaml

from faultplane.demo.ports import free_port
from faultplane.demo.processes import Child, wait_until
from faultplane.model.mesh import Mesh

SCRAPE_INTERVAL = "500ms"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError(
            "prometheus is not installed: run scripts/test (apt-get install prometheus)"
        )
    return found


@asynccontextmanager
async def running_prometheus(mesh: Mesh, workdir: Path) -> AsyncIterator[str]:
    """Prometheus on a free loopback port scraping every sidecar with pod/service labels."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "sidecars",
                "metrics_path": "/stats/prometheus",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{pod.ports.admin}"],
                        "labels": {"pod": pod.name, "service": pod.service},
                    }
                    for pod in mesh.pods
                ],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    child = Child(
        "prometheus",
        [
            prometheus_binary(),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        workdir / "prometheus.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until(lambda: _ready(url), 60, "prometheus to be ready", [child])
        yield url
    finally:
        child.stop()


async def _ready(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/-/ready") as reply:
            return reply.status == 200
    except aiohttp.ClientError:
        return False
