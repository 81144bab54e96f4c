"""`faultplane demo --kernel`, the database story, end to end (root), and its refusal
elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from faultplane.demo import kernel
from tests.helpers import ROOT
from tests.netns import needs_root_and_nft


def test_kernel_demo_says_it_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    refusal = kernel.demo_refusal()
    assert refusal is not None and "needs root" in refusal and "sudo" in refusal


@needs_root_and_nft
def test_kernel_demo_measures_loss_then_a_partition_the_guard_withdraws() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "faultplane", "demo", "--kernel", "--duration", "5", "--json"],
        capture_output=True, text=True, timeout=110, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    phases = {row["phase"]: row for row in summary["phases"]}
    loss, cut = summary["injections"]
    # Loss: the queries go on (TCP retransmits) but slower, and it ends at its deadline.
    assert loss["state"] == "COMPLETED" and loss["verdict"] == "hypothesis held"
    assert phases["loss"]["rules"] == 1
    assert phases["loss"]["ok"] >= 0.9 * phases["loss"]["queries"] > 0
    assert phases["loss"]["p99_ms"] >= 200  # a retransmission: TCP's minimum RTO
    # Partition: queries fail, and the guard withdraws it on its own.
    assert cut["state"] == "ABORTED" and cut["verdict"] == "hypothesis refuted"
    assert "steady-state breach: orders-db-success" in cut["reason"]
    # (a reply already on its way in when the egress rule landed may still arrive)
    partition = phases["partition"]
    assert partition["queries"] > 0 and partition["ok"] <= 0.1 * partition["queries"]
    assert 0 <= summary["guard_withdrawal_ms"] < 10_000
    # (a reconnect begun during the cut may still time out just after it)
    assert phases["after"]["ok"] >= 0.9 * phases["after"]["queries"] > 0
    assert summary["rules_left"] == 0
