"""E-mail and OTP e-mail through Django's SMTP backend to a real SMTP server (aiosmtpd) on
loopback, run by the real runner under RQ, with the notification log in PostgreSQL."""

from __future__ import annotations

import logging
import time

import pytest

from notifications import email
from notifications.models import Notification
from notifications.rate_limit import RateLimiter
from supworker.models import JobRun
from tests.notification_helpers import envelope, submit, work

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.notification_fixtures"]


def parts(message) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


def test_a_notification_email_arrives_as_multipart_text_and_html(smtp_server, redis_conn):
    job = envelope(
        "notification.email", title="New message from Alice", body="Lunch at 1 & bring <cake>", email="bob@example.com"
    )
    submit(redis_conn, job)
    work(redis_conn, "notifications")

    (message,) = smtp_server.messages
    assert message["Subject"] == "New message from Alice"
    assert message["From"] == "SUP Messenger <no-reply@supworker.local>"
    assert message["To"] == "bob@example.com"
    assert message["Message-ID"] and message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert "Lunch at 1 & bring <cake>" in text, "the text part is not HTML-escaped"
    assert "Lunch at 1 &amp; bring &lt;cake&gt;" in html and "<h1" in html, "the HTML part escapes the body"
    assert "SUP Messenger" in html

    row = Notification.objects.get(job_id=job.job_id)
    assert row.success is True and row.type == "email" and row.recipient == "b***@example.com"
    assert row.provider_message_id == message["Message-ID"]
    assert JobRun.objects.get(job_id=job.job_id).status == "succeeded"


def test_an_otp_email_renders_the_template_and_never_stores_or_logs_the_code(smtp_server, redis_conn, caplog):
    caplog.set_level(logging.DEBUG)
    job = envelope(
        "otp.email", email="carol@example.org", otp="493817", metadata={"userName": "Carol", "expiryMinutes": 5}
    )
    job.payload.pop("userId")  # the LMS format has none
    assert "493817" not in str(job.payload), "the code travels sealed"
    submit(redis_conn, job)
    work(redis_conn, "notifications_high")

    (message,) = smtp_server.messages
    assert message["Subject"] == "Your SUP Messenger verification code"
    text, html = parts(message)
    assert "Hello Carol," in text and "    493817" in text and "expires in 5 minutes" in text
    assert "493817" in html and "Hello Carol," in html
    assert "493817" not in message["Subject"]

    row = Notification.objects.get(job_id=job.job_id)
    assert row.success is True and row.recipient == "c***@example.org"
    assert "493817" not in f"{row.title} {row.body} {row.error}" and "withheld" in row.body
    run = JobRun.objects.get(job_id=job.job_id)
    assert run.status == "succeeded" and "493817" not in str(run.payload)
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))  # not aiosmtpd's
    assert "493817" not in ours and "carol@example.org" not in ours


def test_one_smtp_connection_serves_a_whole_batch(smtp_server, redis_conn):
    sessions = []
    original = smtp_server.controller.handler.__class__

    class Counting(original):
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            sessions.append(hostname)
            session.host_name = hostname
            return responses

    smtp_server.controller.handler.__class__ = Counting
    jobs = [envelope("notification.email", title=f"t{i}", body="b", email=f"user{i}@example.com") for i in range(20)]
    submit(redis_conn, *jobs)
    work(redis_conn, "notifications")
    assert smtp_server.count() == 20
    assert len(sessions) == 1


def test_a_refused_mailbox_fails_for_good_and_a_deferred_one_is_retried(smtp_server, redis_conn):
    bounce = envelope("notification.email", title="t", body="b", email="bounce@example.com")
    busy = envelope("notification.email", title="t", body="b", email="busy@example.com")
    fine = envelope("notification.email", title="t", body="b", email="fine@example.com")
    outcomes = {o.job_id: o for o in email.send_batch([bounce, busy, fine], email.compose_notification)}
    assert outcomes[bounce.job_id].permanent and "550" in outcomes[bounce.job_id].error
    assert not outcomes[busy.job_id].ok and not outcomes[busy.job_id].permanent
    assert outcomes[fine.job_id].ok, "a failed item does not break the connection for the next"
    assert smtp_server.envelopes[-1][1] == ["fine@example.com"]
    assert Notification.objects.get(job_id=bounce.job_id).success is False


def test_a_redelivered_email_is_not_sent_twice(smtp_server, redis_conn):
    job = envelope("notification.email", title="t", body="b", email="once@example.com")
    assert email.send_batch([job], email.compose_notification)[0].ok
    assert email.send_batch([job], email.compose_notification)[0].ok
    assert smtp_server.count() == 1
    assert Notification.objects.filter(job_id=job.job_id).count() == 1


def test_the_rate_limit_holds_across_limiters(redis_conn):
    first, second = (RateLimiter(redis_conn, "test-email", per_second=5, max_wait=0) for _ in range(2))
    time.sleep(1 - time.time() % 1 + 0.01)  # the start of a window
    assert first.take(3) == 3
    assert second.take(3) == 2, "two workers share one budget"
    assert first.take(1) == 0
    waiting = RateLimiter(redis_conn, "test-email", per_second=5, max_wait=2)
    started = time.monotonic()
    assert waiting.take(1) == 1
    assert time.monotonic() - started < 1.5


def test_the_rate_limit_defers_what_it_cannot_send_in_time(smtp_server, redis_conn, settings):

    settings.CONFIG = settings.CONFIG.with_section("notifications", email_rate_per_second=2)
    jobs = [envelope("notification.email", title="t", body="b", email=f"r{i}@example.com") for i in range(5)]
    started = time.monotonic()
    outcomes = email.send_batch(jobs, email.compose_notification)
    assert sum(o.ok for o in outcomes) == 5
    assert time.monotonic() - started >= 1.0, "five e-mails at two per second take more than a second"
