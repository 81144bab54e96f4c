"""Governance commands: tokens, approvals, the freeze lever, the audit log.

`token` works on the store file directly (--db): it is how the first admin token comes
to exist, before anyone can authenticate. The others call the operator API.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from faultplane.auth.names import principal_problem
from faultplane.auth.roles import Role
from faultplane.auth.tokens import new_token, token_hash
from faultplane.cli.connection import (
    RPC_TIMEOUT,
    add_connection_arguments,
    fault_stub,
    open_channel,
)
from faultplane.cli.injections import UsageError, to_dict
from faultplane.cli.tables import injection_detail, table
from faultplane.store import (
    NewToken,
    SqliteStore,
    StoreError,
    default_db_path,
    open_postgres_store,
)
from faultplane.store.audit_key import (
    AuditKey,
    AuditKeyError,
    default_key_path,
    open_audit_key,
    read_audit_key,
)
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc

if TYPE_CHECKING:
    from faultplane.store.postgres import PostgresStore

# Entries asked for per ListAudit call (the server allows up to 1000, and also ends a page
# before it outgrows one message).
AUDIT_PAGE = 500


def add_governance_commands(commands: argparse._SubParsersAction) -> None:
    token = commands.add_parser("token", help="bearer tokens (on the store file)")
    token_actions = token.add_subparsers(required=True, metavar="ACTION")
    create = token_actions.add_parser("create", help="issue a token; printed once")
    create.add_argument("--principal", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.set_defaults(handler=cmd_token_create)
    listing = token_actions.add_parser("list", help="tokens (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_token_list)
    revoke = token_actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    revoke.set_defaults(handler=cmd_token_revoke)
    for parser in (create, listing, revoke):
        parser.add_argument("--db", type=Path, help="the store (default: the state dir)")
        parser.add_argument(
            "--store", metavar="URL", help="the server's PostgreSQL store instead of --db"
        )
    for parser in (create, revoke):  # they append to the audit chain: keyed like serve's
        parser.add_argument(
            "--audit-key-file", type=Path, help="the audit key (default: audit.key next to --db)"
        )

    approve = commands.add_parser("approve", help="approve someone else's injection")
    add_connection_arguments(approve)
    approve.add_argument("id")
    approve.set_defaults(handler=cmd_approve)

    freeze = commands.add_parser("freeze", help="refuse new injections (any role but viewer)")
    add_connection_arguments(freeze)
    freeze.add_argument("--until", help="ISO time or +SECONDS (default: until unfrozen)")
    freeze.add_argument("--reason", required=True)
    freeze.set_defaults(handler=cmd_freeze)
    unfreeze = commands.add_parser("unfreeze", help="lift the freeze (oncall or admin)")
    add_connection_arguments(unfreeze)
    unfreeze.set_defaults(handler=cmd_unfreeze)

    audit = commands.add_parser("audit", help="the audit log; `audit verify` checks its chain")
    add_connection_arguments(audit)
    audit.add_argument("action", nargs="?", choices=["verify"])
    audit.add_argument("--injection", default="")
    audit.add_argument("--since", help="ISO time or -SECONDS")
    audit.add_argument("--db", type=Path, help="verify this store file directly (offline)")
    audit.add_argument(
        "--audit-key-file",
        type=Path,
        help="with verify --db: the audit key (default: audit.key next to --db, if it exists)",
    )
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=cmd_audit)


def _store(args: argparse.Namespace, keyed: bool = False) -> SqliteStore | PostgresStore:
    """The store file (or --store's PostgreSQL database); `keyed` for commands that append
    to the audit chain, which they key with the same audit key as the server (created 0600
    if this is the first writer)."""
    if args.store:
        if args.db:
            raise UsageError("token: give --db PATH or --store postgresql://..., not both")
        if not keyed:
            return open_postgres_store(args.store)
        key_path = args.audit_key_file or default_key_path(default_db_path())
        return open_postgres_store(args.store, audit_key=open_audit_key(key_path))
    db = args.db or default_db_path()
    if not keyed:
        return SqliteStore(db)
    return SqliteStore(db, audit_key=open_audit_key(args.audit_key_file or default_key_path(db)))


def _os_user() -> str:
    """Who ran a token command: these work on the file, before anyone has a token, so the
    local account is the only identity there is."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def _audit_token_call(
    store: SqliteStore, method: str, request: dict[str, str], outcome: str, detail: str
) -> None:
    """One audit entry, shaped like an API call's, for a token command. Names the token
    by id, never by its secret or hash."""
    store.audit.append(
        {"kind": "call", "at": time.time(), "method": method, "principal": _os_user(),
         "via": "os-user", "request": request, "outcome": outcome, "detail": detail}
    )  # fmt: skip


def cmd_token_create(args: argparse.Namespace) -> None:
    problem = principal_problem(args.principal)
    if problem:
        raise UsageError(f"token create: --principal: {problem}")
    token_id, token = new_token()
    with _store(args, keyed=True) as store:
        store.tokens.add(
            NewToken(token_id, args.principal, args.role, token_hash(token), time.time())
        )
        try:
            _audit_token_call(
                store, "CreateToken",
                {"token_id": token_id, "principal": args.principal, "role": args.role},
                "OK", f"token {token_id} for {args.principal} ({args.role})",
            )  # fmt: skip
        except BaseException:
            store.tokens.revoke(token_id)  # never a token the audit does not know about
            raise
    print(token)


def cmd_token_list(args: argparse.Namespace) -> None:
    with _store(args) as store:
        tokens = store.tokens.list()
    rows = [
        {
            "id": t.id,
            "principal": t.principal,
            "role": t.role,
            "created_at": t.created_at,
            "revoked_at": t.revoked_at,
        }
        for t in tokens
    ]
    if args.json:
        print(json.dumps(rows))
        return
    cells = [
        [r["id"], r["principal"], r["role"], _iso(r["created_at"]),
         _iso(r["revoked_at"]) if r["revoked_at"] else "-"]
        for r in rows
    ]  # fmt: skip
    print(table(["ID", "PRINCIPAL", "ROLE", "CREATED", "REVOKED"], cells))


def cmd_token_revoke(args: argparse.Namespace) -> None:
    with _store(args, keyed=True) as store:
        known = {t.id: t for t in store.tokens.list()}
        revoked = store.tokens.revoke(args.token_id)
        token = known.get(args.token_id)
        request = {"token_id": args.token_id}
        if revoked and token is not None:
            request |= {"principal": token.principal, "role": token.role}
            detail = f"token {token.id} of {token.principal} ({token.role}) revoked"
        else:
            detail = f"no active token {args.token_id!r}"
        _audit_token_call(store, "RevokeToken", request, "OK" if revoked else "NOT_FOUND", detail)
    if not revoked:
        raise UsageError(f"token revoke: no active token {args.token_id!r}")
    print(f"revoked {args.token_id}")


def cmd_approve(args: argparse.Namespace) -> None:
    with open_channel(args) as channel:
        injection = fault_stub(channel).ApproveInjection(
            pb.ApproveInjectionRequest(id=args.id), timeout=RPC_TIMEOUT
        )
    print(injection_detail(injection))


def cmd_freeze(args: argparse.Namespace) -> None:
    until = _when(args.until) if args.until else 0.0
    with open_channel(args) as channel:
        state = fault_stub(channel).Freeze(
            pb.FreezeRequest(until=until, reason=args.reason), timeout=RPC_TIMEOUT
        )
    print(f"frozen until {state.until.ToJsonString() if state.until.seconds else 'unfrozen'}"
          f" by {state.by}: {state.reason}")  # fmt: skip


def cmd_unfreeze(args: argparse.Namespace) -> None:
    with open_channel(args) as channel:
        fault_stub(channel).Unfreeze(pb.UnfreezeRequest(), timeout=RPC_TIMEOUT)
    print("unfrozen")


def cmd_audit(args: argparse.Namespace) -> int:
    if args.action == "verify":
        return _verify(args)
    since = _when(args.since) if args.since else 0.0
    with open_channel(args) as channel:
        entries = _audit_pages(fault_stub(channel), args.injection, since)
        if args.json:  # one JSON array, written a page at a time
            sys.stdout.write("[")
            for n, e in enumerate(entries):
                entry = json.dumps({**to_dict(e), "entry": json.loads(e.entry_json)})
                sys.stdout.write(f"{', ' if n else ''}{entry}")
            print("]")
            return 0
        for entry in entries:
            print(_audit_line(entry))
    return 0


def _audit_pages(
    stub: faultplane_pb2_grpc.FaultServiceStub, injection_id: str, since: float
) -> Iterator[pb.AuditEntry]:
    """Every entry, oldest first, a page at a time: the server stops each page short of
    what a client accepts in one message, so a log of any size can be listed."""
    request = pb.ListAuditRequest(injection_id=injection_id, since=since, page_size=AUDIT_PAGE)
    while True:
        page = stub.ListAudit(request, timeout=RPC_TIMEOUT)
        yield from page.entries
        if not page.next_page_token or page.next_page_token == request.page_token:
            return
        request.page_token = page.next_page_token


def _audit_line(entry: pb.AuditEntry) -> str:
    body = json.loads(entry.entry_json)
    kind = body.get("kind")
    if kind in ("call", "sidecar", "notification"):
        what = f"{body.get('method')} -> {body.get('outcome')}"
    elif kind == "rate_limit":
        what = f"rate limit: {body.get('suppressed')} refused calls from {body.get('caller')}"
    else:
        what = f"{body.get('injection_id')} {body.get('from')} -> {body.get('to')}"
    note = body.get("detail") or body.get("reason") or ""
    when = _iso(entry.at.ToNanoseconds() / 1e9)
    return f"{entry.seq:>6}  {when}  {body.get('principal', '-'):<24}  {what}  {note}"


def _verify(args: argparse.Namespace) -> int:
    """Exit 0 if the chain holds, 1 with the first break; either way, say which guarantees
    were checked (hash chain, audit key, anchored head) and which could not be."""
    notes: list[str] = []
    if args.db:
        key = _verify_key(args)
        if key is not None and key.loose_mode is not None:
            notes.append(
                f"the audit key {key.path} is accessible by group or others (mode "
                f"{key.loose_mode:04o}): the keyed guarantee holds only against those who "
                "cannot read it"
            )
        with SqliteStore(args.db, audit_key=key, anchor_writes=False) as store:
            verdict = store.audit.verify()
        ok, entries, problem = verdict.ok, verdict.entries, verdict.problem
        broken_at, checked, unchecked = verdict.broken_at, verdict.checked, verdict.unchecked
    else:
        if args.audit_key_file:
            raise UsageError("audit verify: --audit-key-file goes with --db (the server "
                             "verifies with its own key)")  # fmt: skip
        with open_channel(args) as channel:
            reply = fault_stub(channel).VerifyAudit(pb.VerifyAuditRequest(), timeout=RPC_TIMEOUT)
        ok, entries, problem, broken_at = reply.ok, reply.entries, reply.problem, reply.broken_at
        fields = reply.DESCRIPTOR.fields_by_name  # the guarantees, from servers that say them
        checked = tuple(reply.checked) if "checked" in fields else ()
        unchecked = tuple(reply.unchecked) if "unchecked" in fields else ()
    if args.json:
        verdict_json = {
            "ok": ok, "entries": entries, "problem": problem, "broken_at": broken_at or None,
            "checked": list(checked), "unchecked": list(unchecked), "warnings": notes,
        }  # fmt: skip
        print(json.dumps(verdict_json), flush=True)
        return 0 if ok else 1
    print(f"audit chain intact: {entries} entries" if ok else f"audit chain BROKEN: {problem}")
    if ok:
        for line in checked:
            print(f"  checked: {line}")
        for line in unchecked:
            print(f"  not checked: {line}")
    for line in notes:
        print(f"  warning: {line}")
    return 0 if ok else 1


def _verify_key(args: argparse.Namespace) -> AuditKey | None:
    """--audit-key-file, which must exist; else audit.key next to --db, if there is one."""
    if args.audit_key_file is not None:
        try:
            return read_audit_key(args.audit_key_file)
        except AuditKeyError as exc:
            raise UsageError(f"audit verify: --audit-key-file: {exc}") from None
    default = default_key_path(args.db)
    if not default.exists():
        return None
    try:
        return read_audit_key(default)
    except StoreError as exc:
        raise UsageError(f"audit verify: {exc} (pass --audit-key-file)") from None


def _when(text: str) -> float:
    """ISO 8601, or +N / -N seconds from now."""
    if text[:1] in "+-":
        try:
            return time.time() + float(text)
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not a time: {text!r} (ISO 8601, or +SECONDS / -SECONDS)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
