"""`faultplane serve --mesh BAD.yaml` refuses to start, quickly, and says why."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parent.parent
DEMO_MESH = ROOT / "envoy-configs" / "mesh.yaml"


def _unknown_dependency(doc: dict[str, Any]) -> None:
    doc["services"]["payments-api"]["dependencies"].append("inventory")


def _duplicate_pod(doc: dict[str, Any]) -> None:
    doc["services"]["ledger"]["pods"][0]["name"] = "fraud-scoring-1"


def _port_clash(doc: dict[str, Any]) -> None:
    doc["services"]["ledger"]["pods"][0]["ports"]["app"] = 18010


@pytest.mark.parametrize(
    ("break_mesh", "expected"),
    [
        pytest.param(
            _unknown_dependency,
            ["services.payments-api.dependencies", "unknown dependency 'inventory'"],
            id="unknown-dependency",
        ),
        pytest.param(
            _duplicate_pod,
            ["duplicate pod 'fraud-scoring-1'", "services.ledger.pods"],
            id="duplicate-pod",
        ),
        pytest.param(
            _port_clash,
            ["port clash: 18010", "payments-api-1.ports.app", "ledger-1.ports.app"],
            id="port-clash",
        ),
    ],
)
def test_serve_refuses_a_bad_mesh(
    tmp_path: Path, break_mesh: Callable[[dict[str, Any]], None], expected: list[str]
) -> None:
    doc = yaml.safe_load(DEMO_MESH.read_text())
    break_mesh(doc)
    bad = tmp_path / "bad-mesh.yaml"
    bad.write_text(yaml.safe_dump(doc, sort_keys=False))

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "faultplane", "serve", "--mesh", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - started

    assert result.returncode != 0, result.stdout + result.stderr
    assert elapsed < 15, f"took {elapsed:.1f}s to refuse a bad mesh"
    assert "bad mesh" in result.stderr
    assert str(bad) in result.stderr
    for fragment in expected:
        assert fragment in result.stderr, f"{fragment!r} not in stderr: {result.stderr!r}"
    assert "Traceback" not in result.stderr
