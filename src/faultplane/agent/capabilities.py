"""What this kernel can do, probed once at start and reported to the control server.

nftables drops, rejects and polices packets, but cannot delay them: kernel latency needs
the netem qdisc, which some kernels (this CI's among them) lack. The agent says so in its
node metadata, so admission can refuse a latency fault on its pods with the reason, and
it NACKs one that reaches it anyway. This agent renders nftables rules only, so it never
offers a netem kind, even on a kernel that has netem: the probe's answer is reported for
the operator, and the reason names whichever of the two is missing.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from faultplane.kernel.kinds import KINDS


@dataclass(frozen=True)
class Capabilities:
    netem: bool
    netem_reason: str = ""

    @property
    def kinds(self) -> list[str]:
        """The kernel fault kinds this agent applies: the nftables ones."""
        return [name for name, kind in KINDS.items() if not kind.needs_netem]

    def refusal(self, kind: str) -> str | None:
        """Why a fault of `kind` cannot be applied here, or None if it can."""
        if not KINDS[kind].needs_netem:
            return None
        if not self.netem:
            return f"{kind} needs the netem qdisc, which this kernel lacks ({self.netem_reason})"
        return f"{kind} needs the netem qdisc, which this agent does not drive yet"

    def metadata(self) -> dict[str, object]:
        """AgentCapabilities' fields, for the node metadata."""
        return {"netem": self.netem, "netem_reason": self.netem_reason, "kinds": self.kinds}


def probe_capabilities(timeout: float = 10.0) -> Capabilities:
    """Try a netem qdisc on the loopback of a throwaway network namespace (`unshare
    --net`: gone when the command exits), so the probe touches no real interface."""
    argv = ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Capabilities(netem=False, netem_reason=f"probe failed: {exc}")
    if result.returncode == 0:
        return Capabilities(netem=True)
    reason = (result.stderr or result.stdout).strip() or f"tc exited {result.returncode}"
    return Capabilities(netem=False, netem_reason=reason)
