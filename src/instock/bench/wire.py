"""Raw HTTP/1.1 over asyncio streams, for the benches' load generators.

An httpx client costs the bench more CPU per request than the server spends answering it, and
both share the machine; its pool also slows down as requests queue for connections. These
keep-alive connections cost little, and a pool of them hands them out in O(1).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body; b"" at its end."""
    size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
    data = await reader.readexactly(size + 2)
    return data[:-2]


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while chunk := await read_chunk(reader):
            parts.append(chunk)
        await reader.readuntil(b"\r\n")  # the (empty) trailer
        return b"".join(parts)
    return await reader.readexactly(int(headers.get("content-length", "0")))


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, sent: float) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.sent = sent  # time.monotonic() when the request went out

    def json(self) -> Any:
        return json.loads(self.body)


def request_head(host: str, port: int, method: str, path: str,
                 headers: dict[str, str] | None = None) -> bytes:
    """A request's line and headers, without Content-Length (`Connection.send` adds it)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n").encode()


class Connection:
    """One keep-alive connection; reopened if the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, head: bytes, body: bytes = b"") -> Answer:
        reused = self.streams is not None
        try:
            return await self._send(head, body)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            # The server closes keep-alive connections idle for 5 s; a request on one it has
            # already closed gets no answer at all and was never seen: send it again, once.
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            return await self._send(head, body)

    async def _send(self, head: bytes, body: bytes) -> Answer:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        try:
            sent = time.monotonic()
            writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status, headers = await read_head(reader)
            answer = Answer(status, headers, await read_body(reader, headers), sent)
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return answer

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


class Pool:
    """`size` keep-alive connections to one server (opened as first needed); a request waits
    for a free one, most recently used first."""

    def __init__(self, base_url: str, size: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http://host:port URLs are supported, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.connections = [Connection(self.host, self.port) for _ in range(size)]
        self.free: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()
        for connection in self.connections:
            self.free.put_nowait(connection)

    def head(self, method: str, path: str, headers: dict[str, str] | None = None,
             *, json_body: bool = False) -> bytes:
        """A request's head for `send`: build it once for requests sent many times."""
        if json_body:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        return request_head(self.host, self.port, method, path, headers)

    async def send(self, head: bytes, body: bytes = b"") -> Answer:
        connection = await self.free.get()
        try:
            return await connection.send(head, body)
        finally:
            self.free.put_nowait(connection)

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: Any = None) -> Answer:
        """Send one request (`body`, if any, as JSON) and read its whole answer."""
        head = self.head(method, path, headers, json_body=body is not None)
        return await self.send(head, b"" if body is None else json.dumps(body).encode())

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
