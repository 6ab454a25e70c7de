"""The functions the runner calls for notification jobs: thin, the domain modules do the work."""

from __future__ import annotations

from notifications import email, push, sms
from supworker.envelope import Envelope
from supworker.handlers import Outcome, handles_batch


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
