"""Provider adapters, one per channel: email over SMTP (aiosmtplib), Slack incoming webhooks
and an SMS provider over HTTP. Each sends one rendered message and answers the provider's
message id, or raises ChannelFailed saying whether trying again could help."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib
import httpx


class ChannelFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason[:500]
        self.permanent = permanent


@dataclass(frozen=True)
class Outgoing:
    """One message, rendered, to one address (an email address, a phone number, a webhook)."""

    notification_id: str
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Channel(Protocol):
    name: str

    async def send(self, message: Outgoing) -> str: ...

    async def close(self) -> None: ...


class EmailChannel:
    """SMTP to `smtp://host:port` (no TLS: a local relay or the sink). The Message-ID comes
    with the message (derived from the notification), so a resend is the same message."""

    name = "email"

    def __init__(self, smtp_url: str, mail_from: str, timeout: float) -> None:
        parts = urlsplit(smtp_url)
        if parts.scheme not in ("smtp", "") or not parts.hostname:
            raise ValueError(f"INSTOCK_SMTP_URL must be smtp://host:port, not {smtp_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 25
        self.mail_from = mail_from
        self.timeout = timeout

    def compose(self, message: Outgoing) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.mail_from
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        for name, value in message.headers.items():
            mail[name] = value
        mail.set_content(message.text)
        if message.html is not None:
            mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, message: Outgoing) -> str:
        mail = self.compose(message)
        try:
            await aiosmtplib.send(mail, hostname=self.host, port=self.port,
                                  timeout=self.timeout, start_tls=False)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise ChannelFailed(f"SMTP refused the recipient: {exc}", permanent=True) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise ChannelFailed(f"SMTP {exc.code}: {exc.message}",
                                permanent=500 <= exc.code < 600) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ChannelFailed(f"SMTP: {type(exc).__name__}: {exc}") from exc
        return str(mail["Message-ID"] or "")

    async def close(self) -> None:
        return None


class HttpChannel:
    """A provider reached by POSTing JSON (Slack's incoming webhook, the SMS provider). The
    notification id goes as `Idempotency-Key`, so a provider that de-duplicates sends once."""

    def __init__(self, name: str, url: str, timeout: float) -> None:
        self.name = name
        self.url = url
        self.timeout = timeout
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                         trust_env=False)

    def body(self, message: Outgoing) -> dict[str, str]:
        if self.name == "slack":
            return {"text": f"*{message.subject}*\n{message.text}"}
        return {"to": message.to, "body": message.text}

    async def send(self, message: Outgoing) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(
                    self.url, json=self.body(message),
                    headers={"Idempotency-Key": message.notification_id})
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChannelFailed(f"{self.name}: no answer within {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise ChannelFailed(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            # 4xx but 408/429 will not get better by trying again.
            permanent = response.status_code < 500 and response.status_code not in (408, 429)
            raise ChannelFailed(f"{self.name}: HTTP {response.status_code}",
                                permanent=permanent)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        found = answer.get("id") if isinstance(answer, dict) else None
        return str(found or message.notification_id)

    async def close(self) -> None:
        await self._client.aclose()
