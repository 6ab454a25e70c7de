"""SMS through the Vonage-style backend against a local provider endpoint, and the console
backend; run by the real runner under RQ, with the notification log in PostgreSQL."""

from __future__ import annotations

import logging

import pytest

from notifications import sms
from notifications.models import Notification
from supworker.models import JobRun
from tests.notification_helpers import envelope, submit, work

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.notification_fixtures"]


def test_an_alert_sms_is_posted_to_the_provider_and_logged_masked(sms_server, redis_conn):
    job = envelope("notification.sms", title="SUP", body="Your backup finished", phoneNumber="+4915123456789")
    submit(redis_conn, job)
    work(redis_conn, "notifications")

    (request,) = sms_server.requests
    assert request == {
        "api_key": "sms-key",
        "api_secret": "sms-secret",
        "from": "14155550100",
        "to": "4915123456789",
        "text": "SUP: Your backup finished",
    }
    row = Notification.objects.get(job_id=job.job_id)
    assert row.success is True and row.type == "sms" and row.recipient == "+***89"
    assert row.provider_message_id and row.body == "Your backup finished"
    assert JobRun.objects.get(job_id=job.job_id).status == "succeeded"


def test_otp_and_2fa_sms_carry_the_sealed_code_which_is_never_logged(sms_server, redis_conn, caplog):
    caplog.set_level(logging.DEBUG)
    otp = envelope(
        "notification.sms", title="", body="", phoneNumber="+14155550123", otp="771204", data={"kind": "otp"}
    )
    two_fa = envelope(
        "notification.sms", title="", body="", phoneNumber="+14155550124", otp="55AA11", data={"kind": "2fa"}
    )
    assert "771204" not in str(otp.payload)
    outcomes = sms.send_batch([otp, two_fa])
    assert all(o.ok for o in outcomes)
    texts = [r["text"] for r in sms_server.requests]
    assert "771204 is your verification code" in texts[0] and "55AA11 is your sign-in code" in texts[1]
    rows = Notification.objects.filter(job_id__in=[otp.job_id, two_fa.job_id])
    assert all("771204" not in f"{r.body}{r.title}" and "55AA11" not in f"{r.body}{r.title}" for r in rows)
    assert "771204" not in caplog.text and "14155550123" not in caplog.text


def test_a_number_that_is_not_e164_fails_for_good_without_calling_the_provider(sms_server):
    job = envelope("notification.sms", title="t", body="b", phoneNumber="0151-123")
    (outcome,) = sms.send_batch([job])
    assert outcome.permanent and "E.164" in outcome.error
    assert sms_server.requests == []


def test_provider_statuses_decide_between_retry_and_dead_letter(sms_server):
    sms_server.script = ["1", "6"]  # throttled, then invalid message
    throttled = envelope("notification.sms", title="t", body="b", phoneNumber="+14155550101")
    invalid = envelope("notification.sms", title="t", body="b", phoneNumber="+14155550102")
    first, second = sms.send_batch([throttled, invalid])
    assert not first.ok and not first.permanent
    assert second.permanent and "status 6" in second.error
    # The throttled one goes again on retry; nothing is sent twice.
    assert sms.send_batch([throttled])[0].ok
    assert sms.send_batch([throttled, invalid])[0].ok
    assert [r["to"] for r in sms_server.requests] == ["14155550101", "14155550102", "14155550101", "14155550102"]


def test_the_console_backend_logs_without_number_or_code(redis_conn, caplog, settings):
    caplog.set_level(logging.INFO, logger="notifications.sms")
    job = envelope(
        "notification.sms", title="", body="", phoneNumber="+14155550199", otp="123987", data={"kind": "otp"}
    )
    assert settings.CONFIG.notifications.sms_backend == "console"
    assert sms.send_batch([job])[0].ok
    assert "+***99" in caplog.text and "123987" not in caplog.text and "14155550199" not in caplog.text
