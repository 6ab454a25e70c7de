"""E-mail through Django's e-mail framework: one connection for a whole batch, a rate limit
shared by all workers, and the notification log claimed before each send.

The backend is Django's EMAIL_BACKEND: SMTP when SMTP_HOST is set, any django-anymail
provider when configured, the console otherwise. A 5xx answer (unknown mailbox, refused
sender) fails the item for good; 4xx answers and network errors are retried by the runner.

An address on the suppression list (an ESP reported a hard bounce or a spam complaint, see
notifications/suppression.py) is not sent to: its log row says why, and its job succeeds with
`{"suppressed": reason}` (nothing to retry, nothing to dead-letter).

Each outcome is recorded as soon as the server answers, and each message's Message-ID is
derived from its job id and address (`message_id`): a worker killed mid-batch resends only
the message whose answer it was waiting for, under the same Message-ID (notifications/ledger.py).
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from notifications import delivery, ledger, suppression
from notifications.rendering import RenderedEmail, render
from supworker.enqueue import redis_connection
from supworker.envelope import Envelope
from supworker.handlers import Outcome, PermanentError, TransientError
from supworker.masking import HIDDEN, mask_email

logger = logging.getLogger(__name__)
# OTP jobs carry no user id: the log keys them by a stable pseudonym of the address instead.
OTP_USER_NAMESPACE = uuid.UUID("6f1d8a4e-2c1b-4d5e-9a3f-0b7c6e5d4a31")


@dataclass(frozen=True)
class Composed:
    """One e-mail ready to send, and what the log may keep of it."""

    to: str
    rendered: RenderedEmail
    delivery: ledger.Delivery
    secret: str = ""  # an OTP code: never in an error about this e-mail (a server may quote the message)


def compose_notification(envelope: Envelope) -> Composed:
    payload = envelope.payload
    rendered = render(
        "notification", {"title": payload["title"], "body": payload["body"], "data": payload.get("data") or {}}
    )
    delivery = ledger.Delivery(
        job_id=envelope.job_id,
        user_id=str(payload["userId"]),
        type="email",
        recipient=mask_email(payload["email"]),
        title=payload["title"],
        body=payload["body"],
    )
    return Composed(payload["email"], rendered, delivery)


def compose_otp(envelope: Envelope) -> Composed:
    payload = envelope.payload
    metadata = payload.get("metadata") or {}
    address = payload["email"]
    context = {
        "otp": envelope.reveal("otp"),
        "user_name": metadata.get("userName") or "",
        "expiry_minutes": metadata.get("expiryMinutes") or 10,
    }
    rendered = render("otp", context)
    # The code is never stored: the log keeps the subject and a body that says it was withheld.
    delivery = ledger.Delivery(
        job_id=envelope.job_id,
        user_id=str(uuid.uuid5(OTP_USER_NAMESPACE, address.lower())),
        type="email",
        recipient=mask_email(address),
        title=rendered.subject,
        body=f"One-time code e-mail, valid {context['expiry_minutes']} min (code withheld)",
    )
    return Composed(address, rendered, delivery, secret=context["otp"])


def classify(exc: Exception) -> Exception:
    """A permanent or transient error for what sending raised."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(500 <= code < 600 for code in codes):
            return PermanentError(f"recipient refused: {codes[0]}")
        return TransientError(f"recipient deferred: {codes[0] if codes else '?'}")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return TransientError(f"SMTP authentication failed ({exc.smtp_code}): check SMTP_USER and SMTP_PASSWORD")
    if isinstance(exc, smtplib.SMTPResponseException) and 500 <= exc.smtp_code < 600:
        return PermanentError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
    return TransientError(f"{type(exc).__name__}: {exc}")


def withheld(error: Exception, secret: str) -> Exception:
    """`error` with `secret` cut out of its text: the error is logged, recorded and shown."""
    if not secret or secret not in str(error):
        return error
    text = str(error).replace(secret, HIDDEN)
    if isinstance(error, TransientError):
        return TransientError(text, retry_after=error.retry_after)
    return type(error)(text)


class Channel(delivery.OneAtATime[Composed]):
    """E-mail as a channel of the shared send loop (notifications/delivery.py)."""

    name = "e-mail"
    rate_key = "email"
    rate_slots_for_the_batch = True

    def __init__(self, compose: Callable[[Envelope], Composed]):
        self._compose = compose

    def compose_one(self, envelope: Envelope) -> delivery.Item[Composed]:
        composed = self._compose(envelope)
        return delivery.Item(envelope, composed, composed.delivery)

    def per_second(self) -> int:
        return settings.CONFIG.notifications.email_rate_per_second

    def sender(self) -> Session:
        return Session()

    def error_for(self, exc: Exception, message: Composed) -> Exception:
        return withheld(classify(exc), message.secret)

    def send(self, items: list[delivery.Item[Composed]]) -> Iterator[list[delivery.Answer[Composed]]]:
        """Items to suppressed addresses are answered at once, unsent and taking no rate slot."""
        entries = suppression.active_for(item.message.to for item in items)
        held: list[delivery.Answer[Composed]] = []
        to_send: list[delivery.Item[Composed]] = []
        for item in items:
            entry = entries.get(suppression.normalise(item.message.to))
            if entry is None:
                to_send.append(item)
                continue
            error = suppression.Suppressed(entry)
            logger.info("e-mail to %s not sent: %s", item.delivery.recipient, error)
            held.append(delivery.Answer(item, error=error, note=str(error), handed_over=False))
        if held:
            suppression.count_not_sent(redis_connection(), [answer.item.envelope.job_type for answer in held])
            yield held
        if to_send:
            yield from super().send(to_send)

    def outcome(self, envelope: Envelope, answers: list[delivery.Answer[Composed]]) -> Outcome:
        (answer,) = answers
        if isinstance(answer.error, suppression.Suppressed):
            return Outcome.success(envelope, {"suppressed": answer.error.reason})
        return super().outcome(envelope, answers)


class Session:
    """One session of Django's e-mail backend for a whole batch."""

    def __init__(self) -> None:
        self.connection = get_connection(fail_silently=False)

    def send(self, item: Composed) -> str:
        message = _message(item)
        try:
            # Opened by us, the session outlives each send_messages() call (Django's backend
            # would otherwise open and close one per call); a no-op while it is open.
            self.connection.open()
            self.connection.send_messages([message])
        except Exception:
            self.connection.close()  # a broken session must not poison the next item: reopened above
            raise
        return message.extra_headers["Message-ID"]

    def close(self) -> None:
        self.connection.close()


def send_batch(envelopes: list[Envelope], compose: Callable[[Envelope], Composed]) -> list[Outcome]:
    return delivery.deliver(envelopes, Channel(compose))


def message_id(job_id: str, address: str, domain: str) -> str:
    """The same on every send of a job to an address; reveals neither (a digest of both)."""
    digest = hashlib.sha256(f"{job_id}\n{address.lower()}".encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def _message(item: Composed) -> EmailMultiAlternatives:
    sender = settings.CONFIG.notifications.sender_email
    domain = parseaddr(sender)[1].rpartition("@")[2] or "supworker.local"
    message = EmailMultiAlternatives(
        subject=item.rendered.subject,
        body=item.rendered.text,
        from_email=sender,
        to=[item.to],
        headers={"Message-ID": message_id(item.delivery.job_id, item.to, domain), "Auto-Submitted": "auto-generated"},
    )
    message.attach_alternative(item.rendered.html, "text/html")
    return message
