"""The functions the runner calls for notification jobs: thin, the domain modules do the work."""

from __future__ import annotations

from typing import Any

from notifications import devices, email, fcm, otp_stats, push, rendering, sms
from supworker.enqueue import redis_connection
from supworker.envelope import Envelope
from supworker.handlers import Outcome, Settled, before_fork, handles, handles_batch, on_settled


@handles_batch("notification.push")
def send_pushes(envelopes: list[Envelope]) -> list[Outcome]:
    return push.send_batch(envelopes)


@handles_batch("notification.email")
def send_emails(envelopes: list[Envelope]) -> list[Outcome]:
    return email.send_batch(envelopes, email.compose_notification)


@handles_batch("otp.email")
def send_otp_emails(envelopes: list[Envelope]) -> list[Outcome]:
    return email.send_batch(envelopes, email.compose_otp)


@on_settled("otp.email")
def count_otp_emails(settled: list[Settled]) -> None:
    """The LMS worker's statistics: delivered, failed for good, retried (notifications/otp_stats.py)."""
    otp_stats.record(redis_connection(), settled)


@handles_batch("notification.sms")
def send_sms(envelopes: list[Envelope]) -> list[Outcome]:
    return sms.send_batch(envelopes)


@handles("device.register")
def register_device(envelope: Envelope) -> dict[str, Any]:
    """The token now reaches `userId` (moved from whoever held it), unless a newer change
    (`at`) about it was applied already: the newest message about a token wins, whatever the
    order they arrive in. See notifications/devices.py."""
    return devices.register(envelope)


@handles("device.unregister")
def unregister_device(envelope: Envelope) -> dict[str, Any]:
    """The token gets no more pushes, unless a newer change (`at`) about it was applied already;
    it is kept, inactive, so that an older register arriving later is ignored."""
    return devices.unregister(envelope)


# Done in the RQ worker before it forks: each work-horse inherits them instead of making them per job.
@before_fork
def prepare_fcm() -> None:
    if fcm.configured():
        fcm.prepare()


@before_fork
def compile_email_templates() -> None:
    rendering.load_templates()
