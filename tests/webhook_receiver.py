"""A real HTTP server for outbound webhook tests: it listens on a local port, checks each
delivery's signature with `instock.platform.signatures.verify` and answers with a status chosen
per path (200 unless told otherwise). Written on asyncio streams, so it runs in the test's own
event loop and can be stopped and started again on the same port (a receiver that is down)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from instock.bench.local import free_port
from instock.platform.signatures import SignatureError, verify

REASONS = {200: "OK", 204: "No Content", 404: "Not Found", 500: "Internal Server Error",
           503: "Service Unavailable"}


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    verified: bool  # the signature matched the body with the path's secret
    answered: int

    @property
    def envelope(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    secrets: dict[str, str] = field(default_factory=dict)  # path -> signing secret
    answers: dict[str, int] = field(default_factory=dict)  # path -> status (default 200)
    locations: dict[str, str] = field(default_factory=dict)  # path -> Location (redirects)
    received: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  reuse_address=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def event_counts(self, path: str) -> Counter[str]:
        """How often each event id arrived at `path` with a 2xx answer."""
        return Counter(r.headers["instock-event-id"] for r in self.on(path)
                       if 200 <= r.answered < 300)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = request_line[1] if len(request_line) > 1 else "/"
            status = self.answers.get(path, 200)
            self.received.append(Received(path, headers, body,
                                          self._verified(path, body, headers), status))
            location = (f"Location: {self.locations[path]}\r\n"
                        if path in self.locations else "")
            writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n{location}"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _verified(self, path: str, body: bytes, headers: dict[str, str]) -> bool:
        secret = self.secrets.get(path)
        if secret is None:
            return False
        try:
            verify(body, headers.get("instock-signature"), secret)
        except SignatureError:
            return False
        return True
