"""Kernel faults rendered as nftables commands, one transaction per change.

Layout, in each pod's network namespace: one table per agent, `table inet
faultplane_<agent>` with `flags owner` (the kernel deletes it when the nft process that
created it dies, so a dead agent leaves no fault behind), one base chain per hook
(`egress` on output, `ingress` on input), and for each (pod, fault id) its rules, tagged
with the comment `faultplane:POD/ID`. A change to a pod's faults is rendered as one line
of `;`-separated commands, which nft applies as one transaction: either every rule is in
the kernel, or (a rule the kernel refuses) nothing changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from faultplane.kernel.fault import Direction, KernelFault
from faultplane.kernel.kinds import kind_of

FAMILY = "inet"
# Before the usual filter chains (priority 0), so a fault applies whatever else accepts.
PRIORITY = -10
_HOOKS = {Direction.EGRESS: "output", Direction.INGRESS: "input"}
_AGENT = re.compile(r"^[a-z0-9_]{1,40}$")


def table_name(agent: str) -> str:
    """`faultplane_<agent>`: an agent's name made an nft identifier (lower case, `_`)."""
    name = agent.lower().replace("-", "_").replace(".", "_")
    if not _AGENT.match(name):
        raise ValueError(f"agent name {agent!r}: must be 1-40 of a-z 0-9 _ - .")
    return f"faultplane_{name}"


def chain_name(direction: Direction) -> str:
    return direction.value


def create_table(table: str) -> str:
    """The owner table with its two base chains (empty): one transaction."""
    commands = [f"add table {FAMILY} {table} {{ flags owner; }}"]
    for direction, hook in _HOOKS.items():
        commands.append(
            f"add chain {FAMILY} {table} {chain_name(direction)} "
            f"{{ type filter hook {hook} priority {PRIORITY}; policy accept; }}"
        )
    return "; ".join(commands)


def matches(fault: KernelFault) -> list[str]:
    """The far end as nft matches: destination when egress, source when ingress."""
    end = "daddr" if fault.direction is Direction.EGRESS else "saddr"
    port_end = "dport" if fault.direction is Direction.EGRESS else "sport"
    found = []
    if fault.cidr is not None:
        family = "ip" if fault.cidr.version == 4 else "ip6"
        found.append(f"{family} {end} {fault.cidr}")
    if fault.port is not None:
        found.append(f"meta l4proto {{ tcp, udp }} th {port_end} {fault.port}")
    return found


def fault_rules(fault: KernelFault) -> list[str]:
    """The rule bodies of one fault (`add rule inet T CHAIN` omitted), in order."""
    match = matches(fault)
    comment = f'comment "faultplane:{fault.key}"'
    return [
        " ".join([*match, verdict, comment]) for verdict in kind_of(fault.spec).verdicts(fault.spec)
    ]


def pod_rules(table: str, faults: Iterable[KernelFault]) -> list[str]:
    """Every `add rule` command of one pod's faults, ordered by fault key."""
    commands = []
    for fault in sorted(faults, key=lambda f: f.key):
        chain = chain_name(fault.direction)
        commands.extend(f"add rule {FAMILY} {table} {chain} {body}" for body in fault_rules(fault))
    return commands


def replace_pod(table: str, faults: Iterable[KernelFault]) -> str:
    """One transaction that makes the pod's table hold exactly `faults`' rules."""
    return "; ".join([f"flush table {FAMILY} {table}", *pod_rules(table, faults)])


def list_table(table: str) -> str:
    return f"list table {FAMILY} {table}"
