"""An SSE subscription to one of instock's streams, read straight off the socket (beside
`wire.py`, the benches' raw HTTP/1.1): an httpx client per connection would cost more than the
server does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from instock.bench.local import HOST
from instock.bench.wire import read_body, read_chunk, read_head


class SseStream:
    """An SSE subscription read straight off the socket (chunked transfer encoding)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, skus: list[str]) -> SseStream:
        return await cls.open_path(port, f"/v1/stream/inventory?skus={','.join(skus)}")

    @classmethod
    async def open_path(cls, port: int, path: str) -> SseStream:
        """Any SSE stream of the server (a drop ticket's standing, say)."""
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(f"GET {path} HTTP/1.1\r\n"
                     f"Host: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        try:
            status, headers = await read_head(reader)
            if status != 200:
                body = await read_body(reader, headers)
                raise RuntimeError(f"SSE answered {status}: {body[:300]!r}")
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def events(self) -> AsyncIterator[tuple[str, str]]:
        """(event, data) for every frame that has data; comments (heartbeats) are skipped."""
        pending = b""
        while chunk := await read_chunk(self.reader):
            *frames, pending = (pending + chunk).split(b"\n\n")
            for frame in frames:
                parsed = _frame(frame)
                if parsed is not None:
                    yield parsed

    def close(self) -> None:
        self.writer.close()


def _frame(frame: bytes) -> tuple[str, str] | None:
    event, data = "message", []
    for line in frame.decode().split("\n"):
        name, _, value = line.partition(":")
        if name == "event":
            event = value.strip()
        elif name == "data":
            data.append(value.removeprefix(" "))
    return (event, "\n".join(data)) if data else None
