"""Governance commands: tokens, approvals, the freeze lever, the audit log.

`token` works on the store file directly (--db): it is how the first admin token comes
to exist, before anyone can authenticate. The others call the operator API.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from faultplane.auth.roles import Role
from faultplane.auth.tokens import new_token, token_hash
from faultplane.client import add_connection_arguments, fault_stub, open_channel
from faultplane.commands import UsageError, to_dict
from faultplane.display import injection_detail, table
from faultplane.store import SqliteStore, default_db_path
from faultplane.v1 import faultplane_pb2 as pb

RPC_TIMEOUT = 30.0


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

    approve = commands.add_parser("approve", help="approve someone else's injection")
    add_connection_arguments(approve)
    approve.add_argument("id")
    approve.set_defaults(handler=cmd_approve)

    freeze = commands.add_parser("freeze", help="refuse new injections (admin)")
    add_connection_arguments(freeze)
    freeze.add_argument("--until", help="ISO time or +SECONDS (default: until unfrozen)")
    freeze.add_argument("--reason", required=True)
    freeze.set_defaults(handler=cmd_freeze)
    unfreeze = commands.add_parser("unfreeze", help="lift the freeze (admin)")
    add_connection_arguments(unfreeze)
    unfreeze.set_defaults(handler=cmd_unfreeze)

    audit = commands.add_parser("audit", help="the audit log; `audit verify` checks its chain")
    add_connection_arguments(audit)
    audit.add_argument("action", nargs="?", choices=["verify"])
    audit.add_argument("--injection", default="")
    audit.add_argument("--since", help="ISO time or -SECONDS")
    audit.add_argument("--db", type=Path, help="verify this store file directly (offline)")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=cmd_audit)


def _store(args: argparse.Namespace) -> SqliteStore:
    return SqliteStore(args.db or default_db_path())


def cmd_token_create(args: argparse.Namespace) -> None:
    token_id, token = new_token()
    with _store(args) as store:
        store.add_token(token_id, args.principal, args.role, token_hash(token), time.time())
    print(token)


def cmd_token_list(args: argparse.Namespace) -> None:
    with _store(args) as store:
        tokens = store.list_tokens()
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
    with _store(args) as store:
        if not store.revoke_token(args.token_id):
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
        reply = fault_stub(channel).ListAudit(
            pb.ListAuditRequest(injection_id=args.injection, since=since), timeout=RPC_TIMEOUT
        )
    if args.json:
        print(
            json.dumps([{**to_dict(e), "entry": json.loads(e.entry_json)} for e in reply.entries])
        )
        return 0
    for entry in reply.entries:
        body = json.loads(entry.entry_json)
        what = (
            f"{body.get('method')} -> {body.get('outcome')}"
            if body.get("kind") == "call"
            else f"{body.get('injection_id')} {body.get('from')} -> {body.get('to')}"
        )
        note = body.get("detail") or body.get("reason") or ""
        when = _iso(entry.at.ToNanoseconds() / 1e9)
        print(f"{entry.seq:>6}  {when}  {body.get('principal', '-'):<24}  {what}  {note}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.db:
        with SqliteStore(args.db) as store:
            verdict = store.verify_audit()
        ok, entries, problem = verdict.ok, verdict.entries, verdict.problem
    else:
        with open_channel(args) as channel:
            reply = fault_stub(channel).VerifyAudit(pb.VerifyAuditRequest(), timeout=RPC_TIMEOUT)
        ok, entries, problem = reply.ok, reply.entries, reply.problem
    if args.json:
        print(json.dumps({"ok": ok, "entries": entries, "problem": problem}), flush=True)
    else:
        print(f"audit chain intact: {entries} entries" if ok else f"audit chain BROKEN: {problem}")
    return 0 if ok else 1


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
