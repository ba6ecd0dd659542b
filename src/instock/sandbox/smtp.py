"""The local SMTP sink (`instock sandbox smtp`): an aiosmtpd server that keeps every message it
receives as one .eml file in a Maildir-like directory (written under tmp/, then moved into
new/, so a reader never sees half a message). Every copy is kept, a resend too: whoever reads
the directory sees exactly what arrived. `instock mail` lists and prints them."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class MaildirHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        for sub in ("tmp", "new"):
            (directory / sub).mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.eml"
        content = envelope.original_content or envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        temporary = self.directory / "tmp" / name
        temporary.write_bytes(data)
        os.replace(temporary, self.directory / "new" / name)
        return "250 Message accepted for delivery"


def serve(host: str, port: int, directory: Path) -> None:
    """Run the sink until killed."""
    controller = Controller(MaildirHandler(directory), hostname=host, port=port,
                            ready_timeout=10)
    controller.start()
    try:
        asyncio.run(_forever())
    finally:
        controller.stop()


async def _forever() -> None:
    await asyncio.Event().wait()


@dataclass(frozen=True)
class Received:
    path: Path
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "")

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content())  # type: ignore[attr-defined]


def received(directory: Path) -> list[Received]:
    """Every message in the sink, oldest first."""
    new = directory / "new"
    if not new.is_dir():
        return []
    found = []
    for path in sorted(new.glob("*.eml"), key=lambda p: int(p.name.split(".")[0])):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        found.append(Received(path, parsed))
    return found


def _die_with_parent() -> None:
    from instock.sandbox.payments import _die_with_parent as die
    die()


@contextlib.contextmanager
def beside_the_demo(smtp_url: str, directory: Path) -> Iterator[subprocess.Popen[bytes] | None]:
    """For `instock serve --demo`: the sink as a child process at `smtp_url`, unless
    something answers there already (or it is not this host)."""
    import socket
    from urllib.parse import urlsplit

    from instock.bench.local import instock_executable

    parts = urlsplit(smtp_url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        yield None
        return
    port = parts.port or 25
    try:
        socket.create_connection((parts.hostname, port), 1).close()
        running = True
    except OSError:
        running = False
    if running:
        yield None
        return
    process = subprocess.Popen(  # noqa: S603 - our own executable
        [instock_executable(), "sandbox", "smtp", "--host", parts.hostname, "--port", str(port),
         "--dir", str(directory)], stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        yield process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
