"""The functions the runner calls for notification jobs: thin, the domain modules do the work."""

from __future__ import annotations

from notifications import email, fcm, push, rendering, sms
from supworker.envelope import Envelope
from supworker.handlers import Outcome, before_fork, handles_batch


@handles_batch("notification.push")
def send_pushes(envelopes: list[Envelope]) -> list[Outcome]:
    return push.send_batch(envelopes)


@handles_batch("notification.email")
def send_emails(envelopes: list[Envelope]) -> list[Outcome]:
    return email.send_batch(envelopes, email.compose_notification)


@handles_batch("otp.email")
def send_otp_emails(envelopes: list[Envelope]) -> list[Outcome]:
    return email.send_batch(envelopes, email.compose_otp)


@handles_batch("notification.sms")
def send_sms(envelopes: list[Envelope]) -> list[Outcome]:
    return sms.send_batch(envelopes)


# Done in the RQ worker before it forks: each work-horse inherits them instead of making them per job.
@before_fork
def prepare_fcm() -> None:
    if fcm.configured():
        fcm.prepare()


@before_fork
def compile_email_templates() -> None:
    rendering.load_templates()
