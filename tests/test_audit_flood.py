"""The audit log and the store cannot be flooded (issue 12).

The reproduction: two unauthenticated CreateInjection calls with a 3.9 MB hypothesis used
to be stored whole in the audit (the store grew ~8 MB), after which `faultplane audit`
failed with RESOURCE_EXHAUSTED. Now the operator API reads at most 1 MiB per request
(gRPC refuses more itself), a refused call is audited by size and sha256 (never its
body), every free-text field is bounded by validation, ListAudit pages by seq and by
bytes, and refusals past a per-caller limit are answered RESOURCE_EXHAUSTED and
summarised once per window.

Through real processes where the issue speaks of them (`faultplane serve` and the
`faultplane` CLI, as in test_auth_e2e), in-process otherwise (test_governance's server
with token auth and fake sidecars, or conftest's local-mode server).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.server.control import ControlServer
from faultplane.store import SqliteStore
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests import test_auth_e2e, test_governance
from tests.helpers import EXAMPLE, injection_request, rpc_error
from tests.test_auth_e2e import Serve, ok
from tests.test_governance import Start, audit_entries, request_by

# The fixtures: `faultplane serve` processes, and an in-process server with token auth.
serve = test_auth_e2e.serve
start = test_governance.start

MIB = 1024 * 1024
GROWTH_LIMIT = 64 * 1024  # what two refused calls may add to the store file and its WAL
CLIENT_MESSAGE_LIMIT = 4 * MIB  # what a gRPC client accepts by default


def store_bytes(db: Path) -> int:
    """The store's size on disk: the database file and its write-ahead log."""
    files = (db, db.with_name(db.name + "-wal"))
    return sum(path.stat().st_size for path in files if path.exists())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the reproduction, through `faultplane serve` and the CLI ------------------


def test_two_unauthenticated_huge_creates_do_not_flood_the_store(serve: Serve) -> None:
    server = serve(tokens={"root": ("root", "admin")})
    root = server.tokens["root"]
    huge = injection_request(hypothesis="x" * 3_900_000, owner="mallory")
    # Under the message limit: this one reaches the gate, is refused and audited.
    large = injection_request(hypothesis="y" * 900_000, owner="mallory")
    before = store_bytes(server.db)

    errors: list[grpc.RpcError] = []
    with grpc.insecure_channel(server.api) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        for request in (huge, huge, large, large):
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateInjection(request, timeout=30)
            errors.append(caught.value)

    grown = store_bytes(server.db) - before
    print(f"store + WAL grew by {grown} bytes for 4 refused requests of 3.9, 3.9, 0.9, 0.9 MB")
    codes = [e.code() for e in errors]  # type: ignore[attr-defined]
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2 + [grpc.StatusCode.UNAUTHENTICATED] * 2
    # Refused by gRPC itself, at the deliberate 1 MiB, before anything was read or stored.
    assert "larger than max" in errors[0].details()  # type: ignore[attr-defined]
    assert f"vs. {MIB})" in errors[0].details()  # type: ignore[attr-defined]
    assert grown < GROWTH_LIMIT

    # `faultplane audit` works afterwards, and says who was refused without the body.
    listing = ok(server.cli("audit", "--json", token=root))
    assert len(listing) < GROWTH_LIMIT
    creates = [e["entry"] for e in json.loads(listing) if e["entry"]["method"] == "CreateInjection"]
    wire = large.SerializeToString(deterministic=True)
    assert [e["outcome"] for e in creates] == ["UNAUTHENTICATED"] * 2
    for entry in creates:
        assert "request" not in entry
        assert entry["request_bytes"] == len(wire) == large.ByteSize()
        assert entry["request_sha256"] == sha256(wire)
        assert (entry["principal"], entry["peer"]) == ("unknown", "127.0.0.1")
        assert "missing credentials" in entry["detail"]
    assert "CreateInjection -> UNAUTHENTICATED" in ok(server.cli("audit", token=root))


def test_the_cli_says_a_request_over_the_limit_is_too_large(serve: Serve, tmp_path: Path) -> None:
    """Whether the CLI sees it before sending or from the server's RESOURCE_EXHAUSTED, the
    operator is told which field is too large and what the limit is."""
    server = serve(tokens={"root": ("root", "admin")})
    document = copy.deepcopy(EXAMPLE)
    document["hypothesis"] = "z" * (2 * MIB)  # under the client's 4 MiB, over the API's 1 MiB
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(document))

    result = server.cli("inject", "-f", str(path), token=server.tokens["root"])

    assert result.returncode in (1, 2), result.stdout  # refused, or a bad document
    assert "hypothesis" in result.stderr and f"{MIB} bytes" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    listing = json.loads(ok(server.cli("audit", "--json", token=server.tokens["root"])))
    assert not [e for e in listing if e["entry"].get("method") == "CreateInjection"]


def test_a_store_flooded_before_the_limits_still_lists(serve: Serve) -> None:
    """Entries written whole before refusals were audited compactly are listed as their
    size and hash, so `faultplane audit` never meets a page it cannot receive."""
    server = serve(tokens={"root": ("root", "admin")})
    body = {"hypothesis": "x" * 3_900_000}
    with SqliteStore(server.db) as store:  # as the old gate wrote them, while serving
        for _ in range(2):
            store.audit.append({
                "kind": "call", "at": time.time(), "method": "CreateInjection",
                "principal": "unknown", "request": body, "outcome": "UNAUTHENTICATED",
                "detail": "missing credentials", "injection_id": "",
            })  # fmt: skip

    listing = ok(server.cli("audit", "--json", token=server.tokens["root"]))

    assert len(listing) < GROWTH_LIMIT
    flooded = [e["entry"] for e in json.loads(listing) if e["entry"].get("oversized")]
    assert len(flooded) == 2
    for entry in flooded:
        assert (entry["method"], entry["outcome"]) == ("CreateInjection", "UNAUTHENTICATED")
        assert entry["entry_bytes"] > 3_900_000 and len(entry["entry_sha256"]) == 64
        assert "request" not in entry
    ok(server.cli("audit", token=server.tokens["root"]))


# --- ListAudit pages ---------------------------------------------------------------------


async def list_all(stub: Any, **filters: Any) -> tuple[list[pb.AuditEntry], list[int]]:
    """Every entry, following next_page_token; and each page's length."""
    request = pb.ListAuditRequest(**filters)
    entries: list[pb.AuditEntry] = []
    sizes: list[int] = []
    while True:
        page = await stub.ListAudit(request, timeout=20)
        assert page.ByteSize() < CLIENT_MESSAGE_LIMIT
        entries.extend(page.entries)
        sizes.append(len(page.entries))
        if not page.next_page_token:
            return entries, sizes
        request.page_token = page.next_page_token


def note(n: int, **fields: Any) -> dict[str, Any]:
    return {"kind": "note", "at": time.time(), "n": n, "injection_id": "", **fields}


def test_the_store_reads_a_page_after_a_seq_and_stops_at_max_bytes(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "faultplane.db") as store:
        for n in range(10):
            store.audit.append(note(n, blob="b" * 1000))
        after_3 = store.audit.entries(after_seq=3, limit=4)
        by_bytes = store.audit.entries(after_seq=3, max_bytes=2500)
        one = store.audit.entries(after_seq=3, max_bytes=1)

    assert [e.seq for e in after_3] == [4, 5, 6, 7]
    assert [e.seq for e in by_bytes] == [4, 5, 6]  # the entry that reaches 2500 is included
    assert [e.seq for e in one] == [4]  # never an empty page while entries remain


async def test_list_audit_pages_return_every_entry_once_in_order(control: ControlServer) -> None:
    for n in range(1100):
        control.store.audit.append(note(n, injection_id="inj-odd" if n % 2 else ""))
    stored = [e.seq for e in control.store.audit.entries()]
    odd = [e.seq for e in control.store.audit.entries(injection_id="inj-odd")]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{control.api_port}") as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        listed, sizes = await list_all(stub, page_size=300)
        filtered, filtered_sizes = await list_all(stub, page_size=200, injection_id="inj-odd")
        default = await stub.ListAudit(pb.ListAuditRequest(), timeout=20)
        capped = await stub.ListAudit(pb.ListAuditRequest(page_size=5000), timeout=20)
        bad = await rpc_error(stub.ListAudit(pb.ListAuditRequest(page_token="seq-7"), timeout=20))

    seqs = [e.seq for e in listed]
    assert len(sizes) >= 4 and max(sizes) == 300
    assert seqs[: len(stored)] == stored  # every entry once, in order ...
    assert seqs == sorted(set(seqs))
    extra = [json.loads(e.entry_json) for e in listed[len(stored) :]]  # ... and, after them,
    assert {e["method"] for e in extra} == {"ListAudit"}  # only the listing's own calls
    assert [e.seq for e in filtered] == odd and len(filtered_sizes) == 3
    assert len(default.entries) == 100 and default.next_page_token
    assert len(capped.entries) == 1000 and capped.next_page_token
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.details().startswith("page_token: ")


async def test_a_page_stops_short_of_a_message(control: ControlServer) -> None:
    """Large entries (as old stores hold) fill a page by bytes before page_size."""
    for n in range(30):
        control.store.audit.append(note(n, injection_id="inj-big", blob="b" * 200_000))
    control.store.audit.append(note(30, injection_id="inj-big", blob="c" * 3_000_000))
    stored = [e.seq for e in control.store.audit.entries(injection_id="inj-big")]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{control.api_port}") as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        listed, sizes = await list_all(stub, page_size=1000, injection_id="inj-big")

    assert [e.seq for e in listed] == stored
    assert len(sizes) >= 3 and max(sizes) < 30  # list_all checked each page's bytes
    last = json.loads(listed[-1].entry_json)
    assert last["oversized"] and last["entry_bytes"] > 3_000_000 and "blob" not in last


# --- validation bounds what an accepted request may hold -----------------------------------


async def test_an_over_long_hypothesis_is_invalid_argument_naming_it(start: Start) -> None:
    api = await start()

    long_hypothesis = await rpc_error(
        api.call("CreateInjection", request_by("alice", hypothesis="h" * 5000), "alice")
    )
    long_service = await rpc_error(
        api.call("CreateInjection", request_by("alice", target={"service": "s" * 100_000}),
                 "alice")
    )  # fmt: skip

    assert long_hypothesis.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert long_hypothesis.details() == "hypothesis: at most 4096 characters (got 5000)"
    assert long_service.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert long_service.details() == "target.service: at most 256 characters (got 100000)"
    refusals = [e for e in await audit_entries(api) if e["method"] == "CreateInjection"]
    assert [e["outcome"] for e in refusals] == ["INVALID_ARGUMENT"] * 2
    assert all("request" not in e and e["request_bytes"] > 5000 for e in refusals)
    assert all(len(json.dumps(e)) < 2048 for e in refusals)


def test_every_text_field_is_bounded_and_named_without_its_value() -> None:
    headers = {f"x-h{i}": "v" for i in range(9)}
    request = injection_request(
        target={"selector": "s" * 600, "match": {"path_prefix": "/" + "p" * 600,
                                                 "headers": headers}},
        steady_state={"slo": "q" * 300, "min": 0.9, "abort_after": 5},
        owner="o" * 300,
    )  # fmt: skip

    with pytest.raises(InvalidRequest) as caught:
        validate_request(request, None, ())

    assert dict(caught.value.problems) == {
        "target.selector": "at most 512 characters (got 600)",
        "target.match.path_prefix": "at most 512 characters (got 601)",
        "target.match.headers": "at most 8 headers",
        "steady_state.slo": "at most 256 characters (got 300)",
        "owner": "at most 256 characters (got 300)",
    }
    # A stored record is reloaded (slos None) even if accepted before these limits.
    old = injection_request(owner="o" * 300)
    assert validate_request(old, None, None).owner == "o" * 300


# --- refusals are rate limited per caller ----------------------------------------------------


async def test_refusals_past_the_limit_are_limited_and_summarised_once_per_window(
    start: Start,
) -> None:
    window = 6.0  # long enough for the bursts below on a loaded machine, short to wait out
    api = await start(refusal_limit=5, principal_refusal_limit=2, refusal_window=window)
    anonymous, freeze = pb.ListInjectionsRequest(), pb.FreezeRequest(reason="r")

    began = time.monotonic()
    errors = [await rpc_error(api.call("ListInjections", anonymous, None)) for _ in range(12)]
    # A principal has its own count: a viewer's refusals, not the anonymous peer's.
    denied = [await rpc_error(api.call("Freeze", freeze, "vic")) for _ in range(3)]
    assert time.monotonic() - began < window, "the bursts outlasted their windows"

    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [e.code() for e in errors] == [grpc.StatusCode.UNAUTHENTICATED] * 5 + [exhausted] * 7
    hint = re.search(r"retry after (\d+)s", errors[-1].details())
    assert hint and 1 <= int(hint.group(1)) <= window, errors[-1].details()
    assert "too many refused calls from peer 127.0.0.1" in errors[-1].details()
    assert dict(errors[-1].trailing_metadata() or ())["retry-after"] == hint.group(1)
    assert [e.code() for e in denied] == [grpc.StatusCode.PERMISSION_DENIED] * 2 + [exhausted]
    assert "too many refused calls from principal vic" in denied[-1].details()
    # Accepted calls are never limited, from the limited peer or by the limited principal.
    await api.call("ListInjections", anonymous, "vic")

    entries = await audit_entries(api)
    assert sum(e.get("outcome") == "UNAUTHENTICATED" for e in entries) == 5
    assert sum(e.get("outcome") == "PERMISSION_DENIED" for e in entries) == 2
    assert not [e for e in entries if e["kind"] == "rate_limit"]  # the windows are still open

    # Once a window is over, the next call of anyone writes its one summary.
    deadline = time.monotonic() + window + 30
    while len(summaries := [e for e in await audit_entries(api) if e["kind"] == "rate_limit"]) < 2:
        assert time.monotonic() < deadline, f"rate-limit summaries after the windows: {summaries}"
        await asyncio.sleep(0.2)  # poll interval; the deadline bounds the wait
    by_caller = {s["caller"]: s for s in summaries}
    assert set(by_caller) == {"peer 127.0.0.1", "principal vic"}
    peer, vic = by_caller["peer 127.0.0.1"], by_caller["principal vic"]
    assert (peer["suppressed"], peer["refused"], peer["methods"]) == (7, 5, {"ListInjections": 7})
    assert (vic["suppressed"], vic["refused"], vic["methods"]) == (1, 2, {"Freeze": 1})
    assert (peer["principal"], vic["principal"]) == ("unknown", "vic")
    assert {s["outcome"] for s in summaries} == {"RESOURCE_EXHAUSTED"}

    # A new window: refusals are answered and audited one by one again.
    again = await rpc_error(api.call("ListInjections", anonymous, None))
    assert again.code() == grpc.StatusCode.UNAUTHENTICATED
    entries = await audit_entries(api)
    assert sum(e.get("outcome") == "UNAUTHENTICATED" for e in entries) == 6
    assert len([e for e in entries if e["kind"] == "rate_limit"]) == 2
