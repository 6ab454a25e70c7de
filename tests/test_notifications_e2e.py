"""End to end: the messenger publishes a push on sup_exchange and an OTP on service_send_otp;
the consumer routes them to RQ; a worker (RQ SimpleWorker, in this process) runs them through
the runner; the loopback FCM and SMTP servers receive them, once, and the log says so."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from notifications.models import Device, Notification
from supworker.models import JobRun
from tests.helpers import rq_items, wait_for
from tests.notification_helpers import work

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
pytest_plugins = ["tests.notification_fixtures"]


def test_a_published_push_and_otp_arrive_once_and_are_logged(fcm_server, smtp_server, consumer, publisher, redis_conn):
    user = str(uuid.uuid4())
    Device.objects.create(user_id=user, registration_id="e2e-phone", type="ios", active=True)
    push_id, otp_id = f"e2e-push-{uuid.uuid4().hex[:8]}", f"e2e-otp-{uuid.uuid4().hex[:8]}"
    push = {"type": "push", "userId": user, "title": "Dana", "body": "Are you there?", "jobId": push_id}
    publisher.publish("notification.push", push)
    otp = {"email": "erin@example.net", "otp": "246810", "metadata": {"userName": "Erin"}, "jobId": otp_id}
    publisher.publish_to("", settings.CONFIG.rabbitmq_queue_name, otp)
    wait_for(lambda: len(rq_items(redis_conn, "notifications_high")) == 2, 10, "both jobs in notifications_high")

    work(redis_conn, "notifications_high")
    (message,) = fcm_server.messages_to("e2e-phone")
    assert message["notification"] == {"title": "Dana", "body": "Are you there?"}
    (mail,) = smtp_server.messages
    assert mail["To"] == "erin@example.net" and "246810" in mail.get_body(("plain",)).get_content()
    assert JobRun.objects.get(job_id=push_id).status == JobRun.objects.get(job_id=otp_id).status == "succeeded"
    assert Notification.objects.filter(job_id__in=[push_id, otp_id], success=True).count() == 2

    # The messenger publishes the same jobs again (a retry on its side): nothing is sent twice.
    publisher.publish("notification.push", push)
    publisher.publish_to("", settings.CONFIG.rabbitmq_queue_name, otp)
    work(redis_conn, "notifications_high")
    assert fcm_server.attempts["e2e-phone"] == 1 and smtp_server.count() == 1
