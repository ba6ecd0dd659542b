"""Builds the notifications service from settings (called by the composition root): the
channels that are configured, the templates, the send-time rules."""

from __future__ import annotations

import hashlib
import hmac
from datetime import time

from instock.config import Settings
from instock.customers.service import CustomersService
from instock.notifications import model
from instock.notifications.channels import Channel, EmailChannel, HttpChannel
from instock.notifications.service import NotificationsService, SenderSettings
from instock.notifications.templates import Templates
from instock.platform.db import Database


def unsubscribe_key(secret: str) -> bytes:
    """A key of its own for unsubscribe tokens, derived from the token secret: one secret to
    keep, and a token of one kind is never valid as the other."""
    return hmac.new(secret.encode(), b"instock unsubscribe v1", hashlib.sha256).digest()


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def sender_settings(settings: Settings, secret: str) -> SenderSettings:
    return SenderSettings(
        mail_from=settings.mail_from, public_url=settings.public_url,
        rules=model.Rules(_clock(settings.quiet_hours_start), _clock(settings.quiet_hours_end),
                          settings.default_time_zone, settings.notify_rate_per_hour),
        retry=model.Retry(settings.notify_attempts, settings.notify_backoff_base_seconds,
                          settings.notify_backoff_max_seconds),
        timeout=settings.notify_timeout_seconds,
        breaker_threshold=settings.notify_breaker_threshold,
        breaker_cooldown=settings.notify_breaker_cooldown_seconds,
        # Only channels that are set up: a pace bounds the lease (a batch at the slowest pace).
        pace={name: rate for name, rate in (("email", settings.email_rate_per_second),
                                            ("slack", settings.slack_rate_per_second))
              if name == "email" or settings.slack_webhook_url},
        staff_email=settings.staff_email, unsubscribe_key=unsubscribe_key(secret),
        concurrency=settings.notify_send_concurrency)


def channels(settings: Settings) -> dict[str, Channel]:
    found: dict[str, Channel] = {
        "email": EmailChannel(settings.smtp_url, settings.mail_from,
                              settings.notify_timeout_seconds)}
    if settings.slack_webhook_url:
        found["slack"] = HttpChannel("slack", settings.slack_webhook_url,
                                     settings.notify_timeout_seconds)
    if settings.sms_url:
        found["sms"] = HttpChannel("sms", f"{settings.sms_url.rstrip('/')}/messages",
                                   settings.notify_timeout_seconds)
    return found


def notifications_service(settings: Settings, db: Database, customers: CustomersService,
                          secret: str) -> NotificationsService:
    return NotificationsService(db, customers, channels(settings),
                                Templates(settings.notify_template_dir),
                                sender_settings(settings, secret))
