"""One long-lived `nft -i` per network namespace: the owner of the agent's table there.

Why a child process and not `nft -f` per change: a table with `flags owner` belongs to the
netlink socket that created it, and the kernel deletes it when that socket closes. The
child holds the socket; its stdin is the agent's pipe, so when the agent dies (even by
SIGKILL) the pipe closes, nft exits, and every fault in the namespace is gone at once. The
child also asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), in case
something else holds the pipe open. Only the owner may change an owned table, so every
change goes through this child.

Each change is one input line (nft applies one line as one transaction), followed by a
`list table` whose output marks the end of the answer: stderr is merged into stdout, so
whatever the change printed before that listing is nft's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal

from faultplane.kernel import ruleset

_PR_SET_PDEATHSIG = 1


class NftError(RuntimeError):
    """nft refused a change (its message, as nft printed it) or is gone."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class NftSession:
    """The nft child of one namespace, holding the table `table` (created by `start`)."""

    def __init__(self, netns: str, table: str, timeout: float = 10.0) -> None:
        self.netns = netns
        self.table = table
        self._timeout = timeout
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        """Start nft in the namespace and create the owner table with its chains."""
        self._process = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self.netns,
            "nft",
            "-i",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        await self.run(ruleset.create_table(self.table))

    async def run(self, line: str) -> str:
        """Apply `line` as one transaction; returns the table as nft then lists it.

        Raises NftError with nft's message if the kernel (or nft's parser) refused it: then
        nothing of `line` took effect."""
        if "\n" in line:
            raise ValueError("one transaction is one line")
        process = self._process
        if process is None:
            raise NftError(f"nft in netns {self.netns} was not started")
        assert process.stdin is not None and process.stdout is not None
        if process.returncode is not None:  # what it said before it went says why
            said = await asyncio.wait_for(process.stdout.read(), self._timeout)
            raise NftError(f"nft in netns {self.netns} exited{_Exited(said).said}")
        async with self._lock:
            marker = f"table {ruleset.FAMILY} {self.table} {{"
            process.stdin.write(f"{line}\n{ruleset.list_table(self.table)}\n".encode())
            try:
                await process.stdin.drain()
                answer = await asyncio.wait_for(self._read_listing(process.stdout), self._timeout)
            except _Exited as exc:
                raise NftError(f"nft in netns {self.netns} exited{exc.said}") from exc
            except ConnectionError as exc:  # gone before it read the line: why, it said
                said = b""
                with contextlib.suppress(TimeoutError):
                    said = await asyncio.wait_for(process.stdout.read(), self._timeout)
                raise NftError(f"nft in netns {self.netns} exited{_Exited(said).said}") from exc
            except TimeoutError as exc:
                # Its answers would be out of step with our questions from now on: end it
                # (the kernel drops the table, so no fault outlives the confusion).
                process.kill()
                raise NftError(f"nft in netns {self.netns} did not answer; ended it") from exc
        error, _, listing = answer.partition(marker)
        if not listing:  # the table itself is gone: the listing failed too
            raise NftError(error.strip() or f"table {self.table} is gone")
        if error.strip():
            raise NftError(error.strip())
        return marker + listing

    async def _read_listing(self, stdout: asyncio.StreamReader) -> str:
        """Everything up to the end of the table's listing (a line that is just `}`), or
        up to nft's echo of the listing command with its caret line, when the listing
        itself failed (the table is gone)."""
        lines: list[str] = []
        failed_listing = ruleset.list_table(self.table)
        while True:
            raw = await stdout.readline()
            if not raw:  # what it (or `ip netns exec`) said last says why
                raise _Exited("".join(lines))
            text = raw.decode(errors="replace")
            lines.append(text)
            if text.rstrip("\n") == "}":
                return "".join(lines)
            if text.rstrip("\n") == failed_listing:
                lines.append((await stdout.readline()).decode(errors="replace"))  # ^^^
                return "".join(lines)

    async def close(self) -> None:
        """End nft (EOF on its stdin): the kernel deletes the table with its socket."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), self._timeout)
        except TimeoutError:
            process.kill()
            await process.wait()


class _Exited(Exception):
    def __init__(self, output: str | bytes) -> None:
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        self.said = f": {text.strip()}" if text.strip() else ""
