"""E-mail through a django-anymail provider configured only from the environment (EMAIL_BACKEND
and ANYMAIL_* variables), sent by a real `manage.py rqworker` to a loopback server that speaks
SendGrid's v3 mail/send API: the same client code as in production, another base URL."""

from __future__ import annotations

import pytest

from notifications.models import Notification
from supworker.models import JobRun
from tests.helpers import run_manage
from tests.ingest_fixtures import subprocess_env
from tests.notification_helpers import envelope, submit

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.notification_fixtures"]


def test_an_email_goes_through_the_anymail_provider_set_in_the_environment(sendgrid_server, redis_conn):
    (job,) = submit(
        redis_conn,
        envelope("notification.email", title="Your weekly digest", body="3 new messages", email="dan@example.com"),
    )
    env = subprocess_env({}) | sendgrid_server.environment() | {"EMAIL_RATE_PER_SECOND": "0"}
    result = run_manage("rqworker", "--burst", "notifications", env=env)
    assert result.returncode == 0, result.stderr[-2000:]

    ((authorization, body),) = sendgrid_server.received
    assert authorization == f"Bearer {sendgrid_server.api_key}"
    assert body["subject"] == "Your weekly digest"
    assert body["personalizations"][0]["to"] == [{"email": "dan@example.com"}]
    assert body["from"]["email"] == "no-reply@supworker.local"
    kinds = {part["type"]: part["value"] for part in body["content"]}
    assert "3 new messages" in kinds["text/plain"] and "3 new messages" in kinds["text/html"]
    assert Notification.objects.get(job_id=job.job_id).success is True
    assert JobRun.objects.get(job_id=job.job_id).status == "succeeded"
