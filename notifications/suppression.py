"""The e-mail suppression list: addresses an ESP reported as undeliverable for good, or whose
owner reported our mail as spam. E-mails and OTPs to them are not sent (notifications/email.py).

The list is filled from django-anymail's `tracking` signal, which anymail's webhook views send
once per event, normalised whatever the ESP (notifications/webhooks.py). What suppresses:

- `complained` (a spam report) → complaint;
- `bounced`, when its reason is a bounce, an invalid address, or not given (SendGrid's
  `bounce` events are hard bounces by definition) → bounce. Not when SendGrid calls it
  `blocked` (the receiving server refused the sender, for reputation or content: not the
  address's fault) or `expired`, nor Mailgun's permanent failures for other reasons (`old`,
  `espblock`, `generic` ...);
- `rejected` (the ESP refused to send) when it is for an earlier bounce or an invalid address
  → bounce, for an earlier spam report → complaint; other refusals (policy, unsubscribed) do not;
- nothing else: `deferred` (soft bounces; Mailgun's temporary failures arrive as deferred),
  `failed` (the ESP could not send: a template error, not the address), `unsubscribed`
  (the messenger, not supworker, keeps people's e-mail preferences), deliveries, opens, clicks.

One row per address (lower-case). Each event is applied once, in one statement: the same event
again (the ESP retrying its webhook, a replay), an event older than the last one applied, and
an event that happened before an operator lifted the entry change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType, RejectReason
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone
from redis import Redis

from notifications.models import SUPPRESSED_PREFIX, EmailSuppression
from supworker.masking import mask_email

logger = logging.getLogger(__name__)
Reason = EmailSuppression.Reason
# What the notification log's `error` says of an e-mail not sent for this reason; the admin filters on it.
SUPPRESSED = SUPPRESSED_PREFIX
# Job type → e-mails not sent to a suppressed address (supworker_emails_suppressed_total).
COUNTS_KEY = "supworker:stats:email_suppressed"
HARD_BOUNCE_REASONS = {None, RejectReason.BOUNCED, RejectReason.INVALID}


class Suppressed(Exception):
    """Not sent: the address is on the suppression list."""

    def __init__(self, entry: EmailSuppression):
        self.reason = entry.reason
        super().__init__(
            f"{SUPPRESSED}{entry.get_reason_display()} reported by {entry.esp} on {entry.last_seen:%Y-%m-%d};"
            " lift it in the admin to send again"
        )


def normalise(address: str) -> str:
    return address.strip().lower()


def reason_for(event: AnymailTrackingEvent, esp_name: str) -> str | None:
    """`bounce` or `complaint` when the event makes the address one not to mail again, else None."""
    reject_reason = _reject_reason(event, esp_name)
    if event.event_type == EventType.COMPLAINED:
        return Reason.COMPLAINT
    if event.event_type == EventType.BOUNCED and reject_reason in HARD_BOUNCE_REASONS:
        return Reason.BOUNCE
    if event.event_type == EventType.REJECTED:
        if reject_reason in (RejectReason.BOUNCED, RejectReason.INVALID):
            return Reason.BOUNCE
        if reject_reason == RejectReason.SPAM:
            return Reason.COMPLAINT
    return None


def _reject_reason(event: AnymailTrackingEvent, esp_name: str) -> str | None:
    # anymail reads SendGrid's `type` on drops only; on a bounce it tells a hard bounce
    # (`bounce`) from a block (`blocked`): read it with anymail's own table.
    if event.reject_reason is None and esp_name == "SendGrid" and isinstance(event.esp_event, dict):
        kind = str(event.esp_event.get("type") or "").lower()
        return SendGridTrackingWebhookView.reject_reasons.get(kind, RejectReason.OTHER) if kind else None
    return event.reject_reason


def record_event(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    """anymail's `tracking` signal receiver (connected by NotificationsConfig.ready). What it
    raises makes the webhook answer 500, and the ESP sends the events again later."""
    reason = reason_for(event, esp_name)
    if reason is None:
        return
    if not event.recipient:
        logger.warning("%s %s event %s names no recipient: ignored", esp_name, event.event_type, event.event_id)
        return
    description = event.description or event.mta_response or ""
    if suppress(event.recipient, reason, esp_name, event.event_id or "", event.timestamp, description):
        logger.info("e-mails to %s suppressed: %s reported by %s", mask_email(event.recipient), reason, esp_name)


def suppress(address: str, reason: str, esp: str, event_id: str, at: datetime | None, description: str = "") -> bool:
    """Put `address` on the list (or count one more event for it); False when the event was applied already."""
    at = at or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO email_suppressions AS s
                (address, reason, esp, event_id, description, first_seen, last_seen, count, lifted_at, lifted_by)
            VALUES (%s, %s, %s, %s, %s, %s, %s, 1, NULL, '')
            ON CONFLICT (address) DO UPDATE SET
                reason = EXCLUDED.reason, esp = EXCLUDED.esp, event_id = EXCLUDED.event_id,
                description = EXCLUDED.description, last_seen = EXCLUDED.last_seen, count = s.count + 1,
                lifted_at = NULL, lifted_by = ''
            WHERE NOT (s.esp = EXCLUDED.esp AND s.event_id <> '' AND s.event_id = EXCLUDED.event_id)
              AND s.last_seen <= EXCLUDED.last_seen
              AND (s.lifted_at IS NULL OR s.lifted_at < EXCLUDED.last_seen)
            RETURNING s.id
            """,
            [normalise(address), reason, esp[:32], event_id[:255], description[:2000], at, at],
        )
        return cursor.fetchone() is not None


def active_for(addresses: Iterable[str]) -> dict[str, EmailSuppression]:
    """The entries in force for these addresses, by normalised address: one query."""
    wanted = {normalise(address) for address in addresses}
    if not wanted:
        return {}
    entries = EmailSuppression.objects.filter(address__in=wanted, lifted_at__isnull=True)
    return {entry.address: entry for entry in entries}


def lift(entries: QuerySet[EmailSuppression], by: str) -> int:
    """Send to these addresses again; the rows stay, saying who lifted them and when."""
    return entries.filter(lifted_at__isnull=True).update(lifted_at=timezone.now(), lifted_by=by[:150])


def count_not_sent(redis: Redis, job_types: list[str]) -> None:
    with redis.pipeline(transaction=False) as pipe:
        for job_type in job_types:
            pipe.hincrby(COUNTS_KEY, job_type, 1)
        pipe.execute()


def not_sent_counts(redis: Redis) -> dict[str, int]:
    return {key.decode(): int(value) for key, value in redis.hgetall(COUNTS_KEY).items()}
