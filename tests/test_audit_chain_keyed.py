"""A chain nobody can quietly rewrite (issue 12), through real `faultplane` processes.

`faultplane serve` runs as a child process with its own store; entries come from CLI
calls against it and from `faultplane token` on the store file; the attacks are what
anyone who can write the SQLite file can do with the `sqlite3` module: edit an entry and
recompute every sha256 after it, downgrade keyed entries to sha256, cut the log short and
rewrite its head row. Each must now fail `faultplane audit verify` (the plain sha256
chain passed all of them), while entries written before there was a key still verify.
The attack helpers import nothing from faultplane, so this file also runs against an
older tree (PYTHONPATH) to show the attacks passing there.
"""

# ruff: noqa: F811 (`launch` is a fixture imported from tests.serve_process)
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faultplane.demo.ports import PortAllocator
from tests.conftest import MESH_FILE
from tests.serve_process import Launcher, launch  # noqa: F401 (the fixture)
from tests.test_auth_e2e import CLI_TIMEOUT, create_token, ok, refused, run_cli

GENESIS = "0" * 64


def verify(db: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_cli("audit", "verify", "--db", str(db), *flags)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- what an attacker with write access to the store file does ---------------------------


def _payload(seq: int, at: float, entry: object) -> str:
    return json.dumps({"seq": seq, "at": at, "entry": entry}, sort_keys=True, separators=(",", ":"))


def recompute_sha256_chain(
    conn: sqlite3.Connection, from_seq: int = 1, downgrade: bool = False
) -> None:
    """Recompute the sha256 of every entry from `from_seq` on and point the head row at
    the new last entry: the documented formula, no key needed. `downgrade` recomputes
    every entry and marks each as plain sha256 (where the store records a scheme)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    from_seq = 1 if downgrade else from_seq
    before = conn.execute("SELECT hash FROM audit WHERE seq = ?", (from_seq - 1,)).fetchone()
    prev = before[0] if before else GENESIS
    rows = conn.execute(
        "SELECT seq, at, entry FROM audit WHERE seq >= ? ORDER BY seq", (from_seq,)
    ).fetchall()
    for seq, at, text in rows:
        digest = hashlib.sha256((prev + _payload(seq, at, json.loads(text))).encode()).hexdigest()
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        if downgrade and "scheme" in columns:
            conn.execute("UPDATE audit SET scheme = 'sha256' WHERE seq = ?", (seq,))
        prev = digest
    if rows:
        conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (rows[-1][0], prev))


def rewrite_entry(conn: sqlite3.Connection, principal: str, to: str) -> int:
    """Blame someone else for the first call `principal` made; returns its seq."""
    for seq, text in conn.execute("SELECT seq, entry FROM audit ORDER BY seq").fetchall():
        entry = json.loads(text)
        if entry.get("principal") == principal:
            entry["principal"] = to
            canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"))
            conn.execute("UPDATE audit SET entry = ? WHERE seq = ?", (canonical, seq))
            return int(seq)
    raise AssertionError(f"no entry by {principal}")


def truncate(conn: sqlite3.Connection, drop: int, head: bool) -> int:
    """Delete the last `drop` entries; rewrite the head row to match (head=True) or delete
    it (head=False: the next append re-creates it from the last row). Returns the first
    deleted seq."""
    (last,) = conn.execute("SELECT max(seq) FROM audit").fetchone()
    first = last - drop + 1
    conn.execute("DELETE FROM audit WHERE seq >= ?", (first,))
    if head:
        new = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", new)
    else:
        conn.execute("DELETE FROM audit_head")
    return int(first)


# --- the attacks -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedLog:
    db: Path
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def served_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedLog]:
    """A store with a few dozen entries from real calls, the server stopped cleanly: built
    once (a dozen CLI processes), copied for each test."""
    base = tmp_path_factory.mktemp("served")
    db = base / "state" / "faultplane.db"
    tokens = {"root": create_token(db, "root", "admin"), "vic": create_token(db, "vic", "viewer")}
    launcher = Launcher(base / "logs")
    try:
        server = launcher(db)
        for _ in range(3):
            ok(server.cli("ls", token=tokens["vic"]))
        refused(server.cli("freeze", "--reason", "x", token=tokens["vic"]), "PERMISSION_DENIED")
        ok(server.cli("freeze", "--reason", "release", token=tokens["root"]))
        ok(server.cli("unfreeze", token=tokens["root"]))
        assert server.stop() == 0
    finally:
        for child in launcher.children:
            child.stop(timeout=10)
    yield ServedLog(db, tokens)


@pytest.fixture
def served(served_template: ServedLog, tmp_path: Path) -> ServedLog:
    """This test's own copy of the served state dir (store, key, anchor; modes kept)."""
    state = tmp_path / "state"
    shutil.copytree(served_template.db.parent, state)
    return ServedLog(state / served_template.db.name, served_template.tokens)


@pytest.mark.parametrize("downgrade", [False, True], ids=["keep-scheme", "downgrade"])
def test_rewriting_an_entry_and_recomputing_every_sha256_fails_verify(
    served: ServedLog, downgrade: bool
) -> None:
    db = served.db
    before = ok(verify(db))
    assert "audit chain intact" in before

    with sqlite3.connect(db) as conn:
        edited = rewrite_entry(conn, "vic", "eve")
        recompute_sha256_chain(conn, from_seq=edited, downgrade=downgrade)

    result = verify(db)
    assert result.returncode == 1, f"the rewrite passed verify:\n{result.stdout}"
    assert "audit chain BROKEN" in result.stdout
    if downgrade:  # a consistent sha256 chain, but not the one the anchor file signed
        assert "hash differs from the head anchored" in result.stdout, result.stdout
    else:
        assert f"entry {edited}: keyed hash does not match its content" in result.stdout


def test_truncating_the_log_and_rewriting_its_head_is_caught_by_the_anchor(
    served: ServedLog,
) -> None:
    db = served.db
    with sqlite3.connect(db) as conn:
        first = truncate(conn, drop=3, head=True)

    result = verify(db)

    assert result.returncode == 1, f"the truncation passed verify:\n{result.stdout}"
    found = re.search(r"entry (\d+) is missing, but the anchor file recorded it", result.stdout)
    assert found and first <= int(found[1]) <= first + 2, result.stdout


def test_deleting_the_tail_and_the_head_row_then_carrying_on_is_caught(
    served: ServedLog, launch: Launcher
) -> None:
    """The head row gone, the next writer re-creates it from the last row left: the chain
    is whole again, with new entries where the deleted ones were. The anchor remembers."""
    db = served.db
    with sqlite3.connect(db) as conn:
        truncate(conn, drop=4, head=False)
    server = launch(db)
    for _ in range(2):
        ok(server.cli("ls", token=served.tokens["vic"]))
    assert server.stop() == 0

    result = verify(db)

    assert result.returncode == 1, f"the truncation passed verify:\n{result.stdout}"
    assert "audit chain BROKEN" in result.stdout and "anchor" in result.stdout, result.stdout


def test_verify_reports_each_guarantee_it_checked(served: ServedLog, tmp_path: Path) -> None:
    db = served.db

    keyed = json.loads(ok(verify(db, "--json")))
    text = ok(verify(db))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("audit.key", "audit.anchor"):  # the anchor always lives beside the key
        (db.parent / name).rename(elsewhere / name)
    unkeyed = ok(verify(db))
    explicit = ok(verify(db, "--audit-key-file", str(elsewhere / "audit.key")))

    assert keyed["ok"] and keyed["unchecked"] == [] and len(keyed["checked"]) == 3
    entries = keyed["entries"]
    assert f"checked: hash chain intact: {entries} entries" in text
    assert "checked: keyed with the audit key" in text
    assert "(an attacker without the key cannot recompute it)" in text
    assert f"checked: head matches the anchor file up to seq {entries}" in text
    assert "checked only the unkeyed hash chain" in unkeyed
    assert "keyed with the audit key" not in unkeyed and "anchor" not in unkeyed
    # The key file can live anywhere; the anchor is the one beside the key.
    assert "checked: keyed with the audit key" in explicit
    assert f"up to seq {entries} ({elsewhere / 'audit.anchor'})" in explicit
    missing = verify(db, "--audit-key-file", str(tmp_path / "nope.key"))
    assert missing.returncode == 2 and "--audit-key-file" in missing.stderr


def test_verify_with_another_key_says_so(launch: Launcher, tmp_path: Path) -> None:
    db = tmp_path / "state" / "faultplane.db"
    create_token(db, "root", "admin")
    other = tmp_path / "other" / "audit.key"
    create_token(tmp_path / "other" / "faultplane.db", "x", "viewer")  # makes another key

    result = verify(db, "--audit-key-file", str(other))

    assert result.returncode == 1
    assert "entry 1: keyed with another audit key" in result.stdout


def test_entries_written_before_the_key_still_verify(tmp_path: Path) -> None:
    """A store from before keying (schema 2, plain sha256 entries, no key file) is
    migrated, keyed from its next entry on, and verifies whole."""
    from faultplane.store.schema import MIGRATIONS, migrate

    keying = next(i for i, m in enumerate(MIGRATIONS) if "ADD COLUMN scheme" in " ".join(m))
    db = tmp_path / "state" / "faultplane.db"
    db.parent.mkdir(mode=0o700)
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, str(db), MIGRATIONS[:keying])  # the schema just before keying
    prev = GENESIS
    for seq in (1, 2, 3):
        entry = {"kind": "call", "method": "ListInjections", "principal": "vic", "at": 1e9 + seq}
        digest = hashlib.sha256((prev + _payload(seq, 1e9 + seq, entry)).encode()).hexdigest()
        conn.execute(
            "INSERT INTO audit (seq, at, injection_id, entry, prev_hash, hash) VALUES "
            "(?, ?, NULL, ?, ?, ?)",
            (seq, 1e9 + seq, json.dumps(entry, sort_keys=True, separators=(",", ":")), prev,
             digest),
        )  # fmt: skip
        prev = digest
    conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 3, ?)", (prev,))
    conn.close()
    assert "written before the key" not in ok(verify(db))  # no key yet: sha256 only

    create_token(db, "root", "admin")  # the first keyed writer: migrates, keys, anchors
    result = ok(verify(db))

    assert "audit chain intact: 4 entries" in result
    assert "keyed with the audit key" in result
    assert "entries 4..4, and 1..3 (written before the key) through entry 4's link" in result
    assert "head matches the anchor file up to seq 4" in result


# --- the files ---------------------------------------------------------------------------


def test_serve_creates_a_private_state_dir_store_and_key(launch: Launcher, tmp_path: Path) -> None:
    state = tmp_path / "fresh" / "state"
    db = state / "faultplane.db"
    server = launch(db)
    refused(server.cli("ls"), "UNAUTHENTICATED")  # audited: the store has been written

    assert mode(state) == 0o700
    for name in ("faultplane.db", "faultplane.db-wal", "faultplane.db-shm", "audit.key",
                 "audit.anchor"):  # fmt: skip
        assert mode(state / name) == 0o600, name
    assert (state / "audit.key").stat().st_size == 32


def test_a_key_file_others_may_read_is_refused_at_start(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "audit.key"
    key.parent.mkdir()
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    ports = PortAllocator()
    result = subprocess.run(
        [sys.executable, "-m", "faultplane", "serve", "--mesh", str(MESH_FILE),
         "--db", str(tmp_path / "state" / "faultplane.db"), "--audit-key-file", str(key),
         "--api-port", str(ports()), "--xds-port", str(ports()), "--metrics-port",
         str(ports())],
        capture_output=True, text=True, timeout=CLI_TIMEOUT,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    assert f"{key}: the audit key is accessible by group or others (mode 0644)" in result.stderr
    assert f"chmod 600 {key}" in result.stderr and "Traceback" not in result.stderr


def test_an_existing_store_others_may_read_gets_a_warning(launch: Launcher, tmp_path: Path) -> None:
    db = tmp_path / "state" / "faultplane.db"
    create_token(db, "root", "admin")
    db.chmod(0o644)

    server = launch(db)

    warnings = [
        json.loads(line)
        for line in server.child.log_path.read_text().splitlines()
        if "store file is readable by group or others" in line
    ]
    assert warnings and warnings[0]["level"] == "warning"
    assert (warnings[0]["path"], warnings[0]["mode"]) == (str(db), "0644")


# --- token commands ----------------------------------------------------------------------


def test_token_create_and_revoke_are_audited(launch: Launcher, tmp_path: Path) -> None:
    db = tmp_path / "state" / "faultplane.db"
    viewer = create_token(db, "vic", "viewer")
    secret = create_token(db, "olive", "operator")
    (olive,) = [t for t in json.loads(ok(run_cli("token", "list", "--json", "--db", str(db))))
                if t["principal"] == "olive"]  # fmt: skip
    ok(run_cli("token", "revoke", olive["id"], "--db", str(db)))
    unknown = run_cli("token", "revoke", "0123456789abcdef", "--db", str(db))
    server = launch(db)

    listing = ok(server.cli("audit", "--json", token=viewer))
    text = ok(server.cli("audit", token=viewer))

    entries = [e["entry"] for e in json.loads(listing)]
    tokens = [e for e in entries if e.get("method") in ("CreateToken", "RevokeToken")]
    user = local_user()
    assert [(e["method"], e["outcome"], e["principal"], e["via"]) for e in tokens] == [
        ("CreateToken", "OK", user, "os-user"),
        ("CreateToken", "OK", user, "os-user"),
        ("RevokeToken", "OK", user, "os-user"),
        ("RevokeToken", "NOT_FOUND", user, "os-user"),
    ]
    assert tokens[1]["request"] == {"token_id": olive["id"], "principal": "olive",
                                    "role": "operator"}  # fmt: skip
    assert tokens[2]["request"] == tokens[1]["request"]
    assert unknown.returncode == 2 and "no active token" in unknown.stderr
    assert f"token {olive['id']} for olive (operator)" in text
    assert secret not in listing and secret.rsplit("_", 1)[1] not in listing
    assert "audit chain intact" in ok(verify(db))


def local_user() -> str:
    """The local account name as a `faultplane` child process sees it."""
    code = "import getpass; print(getpass.getuser())"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize(
    ("principal", "reason"),
    [
        ("ali\nce", "must not contain control characters"),
        ("root\x1b[2K", "must not contain control characters"),
        ("bob\x7f", "must not contain control characters"),
        ("\u202eeve", "must not contain invisible formatting characters"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 129, "at most 128 characters, not 129"),
    ],
)
def test_bad_principal_names_are_refused(tmp_path: Path, principal: str, reason: str) -> None:
    db = tmp_path / "state" / "faultplane.db"
    result = run_cli("token", "create", "--db", str(db), "--principal", principal, "--role",
                     "admin")  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert f"faultplane: token create: --principal: {reason}" in result.stderr
    assert result.stdout == ""


def test_a_principal_of_128_characters_is_fine(tmp_path: Path) -> None:
    create_token(tmp_path / "state" / "faultplane.db", "p" * 128, "viewer")


# --- the anchor file ---------------------------------------------------------------------


def test_a_deleted_or_forged_anchor_is_a_break(tmp_path: Path) -> None:
    db = tmp_path / "state" / "faultplane.db"
    create_token(db, "root", "admin")
    anchor = db.parent / "audit.anchor"
    lines = anchor.read_text().splitlines()
    forged = json.loads(lines[-1]) | {"seq": 7}  # claims an entry that never existed

    anchor.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    forged_result = verify(db)
    anchor.unlink()
    deleted_result = verify(db)

    assert forged_result.returncode == 1
    assert f"line {len(lines) + 1}: signature does not match" in forged_result.stdout
    assert deleted_result.returncode == 1
    assert f"the anchor file {anchor} is missing" in deleted_result.stdout


def test_the_anchor_trails_the_log_by_about_a_second(tmp_path: Path) -> None:
    """A burst of appends is anchored by a line or two, not one per entry, and the last
    one is anchored within the interval, without waiting for close()."""
    from faultplane.store import SqliteStore
    from faultplane.store.anchor import ANCHOR_INTERVAL
    from faultplane.store.audit_key import open_audit_key

    db = tmp_path / "state" / "faultplane.db"
    store = SqliteStore(db, audit_key=open_audit_key(db.parent / "audit.key"))
    anchor = db.parent / "audit.anchor"
    try:
        started = time.monotonic()
        for i in range(50):
            store.audit.append({"kind": "call", "method": "ListInjections", "i": i})
        burst = time.monotonic() - started
        deadline = time.monotonic() + ANCHOR_INTERVAL + 10  # generous on a loaded machine
        while json.loads(anchor.read_text().splitlines()[-1])["seq"] != 50:
            assert time.monotonic() < deadline, "the last head was not anchored in time"
            time.sleep(0.05)  # poll interval; the deadline bounds the wait
        lines = anchor.read_text().splitlines()
        # The genesis line at creation, then one head per interval the burst lasted (+1).
        assert len(lines) <= 3 + burst / ANCHOR_INTERVAL < 50
        assert (
            store.audit.verify().checked[-1].startswith("head matches the anchor file up to seq 50")
        )
    finally:
        store.close()
