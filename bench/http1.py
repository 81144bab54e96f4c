"""A minimal keep-alive HTTP/1.1 client: one connection, one request at a time.

Cheaper per request than aiohttp by a wide margin, which matters when a probe shares two
cores with the server it measures, and precise (perf_counter_ns) for latency.
"""

from __future__ import annotations

import asyncio
import contextlib


class Connection:
    def __init__(self, host: str, port: int, path: str = "/", host_header: str = "bench") -> None:
        self.host = host
        self.port = port
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: faultplane-bench\r\n\r\n"
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    async def get(self) -> tuple[int, int]:
        """One request; (status, body bytes). Reconnects if the server closed the socket."""
        if self._writer is None:
            await self.open()
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.write(self._request)
            return await self._response()
        except (ConnectionError, asyncio.IncompleteReadError):
            await self.close()
            raise

    async def _response(self) -> tuple[int, int]:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        size = await self._chunked() if chunked else len(await self._reader.readexactly(length))
        if close:
            await self.close()
        return status, size

    async def _chunked(self) -> int:
        assert self._reader is not None
        size = 0
        while True:
            line = await self._reader.readuntil(b"\r\n")
            chunk = int(line.split(b";")[0], 16)
            await self._reader.readexactly(chunk + 2)
            size += chunk
            if chunk == 0:
                return size
