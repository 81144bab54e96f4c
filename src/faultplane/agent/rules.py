"""The faults in this agent's kernel tables, their leases, and how a new desired set lands.

The xDS side hands over the whole desired set (state of the world) with each fault's
lease; `apply` makes the kernel match it, pod by pod, each pod's rules replaced in one nft
transaction. If any pod's change is refused, the pods already changed are put back, so
the kernel holds the old set everywhere and the refusal (nft's message) is the NACK.

Leases are the second dead-man: every fault must be renewed (re-sent by the control
server) before its lease lapses, else the agent takes it out of the kernel on its own,
with no message needed. So a control server that dies leaves a fault on for at most its
TTL (plus the time one nft transaction takes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from faultplane.agent.capabilities import Capabilities
from faultplane.agent.nft import NftError, NftSession
from faultplane.agent.pods import Pod
from faultplane.kernel import ruleset
from faultplane.kernel.fault import KernelFault

log = structlog.get_logger("faultplane.agent")


class Refused(Exception):
    """A desired set this agent cannot put in the kernel; the message is the NACK's."""


@dataclass(frozen=True)
class Leased:
    """A fault as desired by the control server, with the lease it came with."""

    fault: KernelFault
    ttl: float


class KernelRules:
    """The agent's faults, one nft session (and owner table) per pod."""

    def __init__(self, agent: str, pods: list[Pod], capabilities: Capabilities) -> None:
        self.table = ruleset.table_name(agent)
        self.pods = {pod.name: pod for pod in pods}
        self.capabilities = capabilities
        self.sessions = {pod.name: NftSession(pod.netns, self.table) for pod in pods}
        self._applied: dict[str, dict[str, KernelFault]] = {name: {} for name in self.pods}
        self._expiry: dict[str, float] = {}  # fault key -> loop time its lease lapses
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self.lapsed: list[str] = []  # keys removed because their lease lapsed, in order

    async def start(self) -> None:
        """Start every pod's nft (creating its empty owner table) and the lease reaper."""
        for name, session in self.sessions.items():
            try:
                await session.start()
            except NftError as exc:
                raise NftError(f"pod {name}: {exc}") from exc
        self._reaper = asyncio.create_task(self._reap())

    @property
    def reaper(self) -> asyncio.Task[None]:
        """The lease reaper's task (after `start`): it never ends unless by a bug."""
        assert self._reaper is not None, "start() first"
        return self._reaper

    async def close(self) -> None:
        """Stop the reaper and every nft: the kernel deletes the tables, faults and all."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session in self.sessions.values():
            await session.close()

    def applied(self) -> dict[str, list[str]]:
        """Per pod, the keys of the faults in its kernel table."""
        return {pod: sorted(faults) for pod, faults in self._applied.items()}

    async def apply(self, desired: Mapping[str, Leased]) -> None:
        """Make the kernel hold exactly `desired` and renew each one's lease, or raise
        Refused (the kernel unchanged, no lease renewed)."""
        for key, leased in desired.items():
            self._check(key, leased)
        wanted: dict[str, dict[str, KernelFault]] = {name: {} for name in self.pods}
        for key, leased in desired.items():
            wanted[leased.fault.pod][key] = leased.fault
        async with self._lock:
            await self._replace(wanted)
            now = asyncio.get_running_loop().time()
            self._expiry = {key: now + leased.ttl for key, leased in desired.items()}
        self._changed.set()

    def _check(self, key: str, leased: Leased) -> None:
        fault = leased.fault
        if fault.pod not in self.pods:
            raise Refused(f"{key}: pod {fault.pod!r} is not hosted by this agent")
        refusal = self.capabilities.refusal(fault.kind)
        if refusal:
            raise Refused(f"{key}: {refusal}")
        if leased.ttl <= 0:
            raise Refused(f"{key}: carries no lease (a ttl is required)")

    async def _replace(self, wanted: Mapping[str, Mapping[str, KernelFault]]) -> None:
        """Replace the pods whose set changed; on a refusal put the changed ones back."""
        done: list[str] = []
        for pod, faults in wanted.items():
            if faults == self._applied[pod]:
                continue
            try:
                await self.sessions[pod].run(ruleset.replace_pod(self.table, faults.values()))
            except NftError as exc:
                for changed in done:
                    await self._restore(changed)
                raise Refused(f"pod {pod} (netns {self.pods[pod].netns}): {exc}") from exc
            done.append(pod)
        for pod in done:
            self._applied[pod] = dict(wanted[pod])

    async def _restore(self, pod: str) -> None:
        try:
            await self.sessions[pod].run(
                ruleset.replace_pod(self.table, self._applied[pod].values())
            )
        except NftError as exc:  # it held these rules a moment ago; say so loudly
            log.error("agent.restore_failed", pod=pod, error=str(exc))

    async def _reap(self) -> None:
        """Remove each fault whose lease lapsed, as soon as it lapses."""
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            next_lapse = min(self._expiry.values(), default=None)
            timeout = None if next_lapse is None else max(0.0, next_lapse - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            await self._remove_lapsed(loop.time())

    async def _remove_lapsed(self, now: float) -> None:
        async with self._lock:
            lapsed = sorted(key for key, until in self._expiry.items() if until <= now)
            if not lapsed:
                return
            for key in lapsed:
                del self._expiry[key]
            for pod, faults in self._applied.items():
                kept = {key: fault for key, fault in faults.items() if key not in lapsed}
                if kept == faults:
                    continue
                try:
                    await self.sessions[pod].run(ruleset.replace_pod(self.table, kept.values()))
                except NftError as exc:
                    log.error("agent.lease_removal_failed", pod=pod, error=str(exc))
                    continue
                self._applied[pod] = kept
            self.lapsed.extend(lapsed)
            log.warning("agent.lease_lapsed", faults=lapsed)
