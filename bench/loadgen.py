"""A lean OTLP/HTTP sender for benchmarks: pre-encoded requests on keep-alive connections.

The load generator shares the two cores with the server it measures, so it must cost as
little as possible per request: one `write` of a prepared HTTP/1.1 request, and a response
read by its Content-Length. It speaks only what an OTLP/HTTP exporter needs (POST, 200/503).
"""

from __future__ import annotations

import asyncio
import time

# uvicorn closes keep-alive connections idle for 5 s; reopen before that
IDLE_REOPEN_S = 3.0


class OtlpConnection:
    """One keep-alive connection to an OTLP/HTTP receiver."""

    def __init__(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._host = host
        self._port = port
        self._reader = reader
        self._writer = writer
        self._last_used = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> OtlpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(host, port, reader, writer)

    async def post(self, request: bytes) -> int:
        """Send a request made by `encode_post`; return the response's status code."""
        if time.monotonic() - self._last_used > IDLE_REOPEN_S:  # the server may have closed it
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if length:
            await self._reader.readexactly(length)
        if close:  # the server will not read another request on this connection
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        self._last_used = time.monotonic()
        return status

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


def encode_post(body: bytes, api_key: str, path: str = "/v1/traces") -> bytes:
    """A complete OTLP/HTTP protobuf export request, ready to write."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: llmtel\r\nContent-Type: application/x-protobuf\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
