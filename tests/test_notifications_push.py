"""Push notifications through the real firebase-admin SDK against a loopback FCM v1 server,
run by the real runner under RQ (SimpleWorker), with the notification log in PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from email.utils import formatdate

import firebase_admin
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from firebase_admin import messaging
from rq import Queue
from rq.registry import ScheduledJobRegistry

from notifications import fcm, push
from notifications.models import Device, Notification
from supworker.enqueue import requeue
from supworker.models import DeadLetter, JobRun
from tests.notification_helpers import envelope, submit, work

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.notification_fixtures"]
QUEUE = "notifications_high"


def device(user_id: str, token: str, active: bool = True) -> Device:
    return Device.objects.create(user_id=user_id, registration_id=token, type="android", active=active)


def test_the_sdk_is_the_pinned_version_and_sends_to_the_configured_endpoint(fcm_server):
    assert firebase_admin.__version__ == "7.7.0", "the endpoint override relies on this version's internals"
    assert messaging._MessagingService.FCM_URL.startswith("https://fcm.googleapis.com/")
    service = messaging._get_messaging_service(fcm.app())
    assert service._fcm_url == f"{fcm_server.url}/v1/projects/sup-loopback/messages:send"

    direct = push.build_message(envelope("notification.push", fcmToken="tok-direct", title="", body=""), "tok-direct")
    message_id = messaging.send(direct, app=fcm.app())
    assert message_id.startswith("projects/sup-loopback/messages/")
    (request,) = fcm_server.requests
    assert request["headers"]["authorization"] == f"Bearer {fcm_server.token}", "the static token is the bearer"


@pytest.mark.pgbouncer  # the notification log, through PgBouncer too
def test_a_push_to_a_token_is_sent_with_high_priority_ttl_and_string_data_and_logged(fcm_server, redis_conn):
    job = envelope("notification.push", title="Alice", body="Hi there", fcmToken="tok-1", data={"chatId": "42"})
    submit(redis_conn, job)
    work(redis_conn, QUEUE)

    (message,) = fcm_server.messages_to("tok-1")
    assert message["notification"] == {"title": "Alice", "body": "Hi there"}
    assert message["data"] == {"chatId": "42"}
    assert message["android"]["priority"] == "high" and message["android"]["ttl"] == "86400s"
    assert message["apns"]["headers"]["apns-priority"] == "10"
    row = Notification.objects.get(job_id=job.job_id)
    assert row.success is True and row.type == "push" and (row.title, row.body) == ("Alice", "Hi there")
    assert row.provider_message_id.startswith("projects/sup-loopback/messages/")
    assert row.recipient == push.token_reference("tok-1") and "tok-1" not in row.recipient
    assert str(row.user_id) == job.payload["userId"]
    assert JobRun.objects.get(job_id=job.job_id).status == "succeeded"


def test_a_push_without_token_goes_to_every_active_device_of_the_user_in_one_send_each(fcm_server, redis_conn):
    user = str(uuid.uuid4())
    device(user, "phone")
    device(user, "tablet")
    device(user, "old-phone", active=False)
    other = [envelope("notification.push", title="T", body=f"b{i}", fcmToken=f"tok-{i}") for i in range(5)]
    job = envelope("notification.push", userId=user, title="New message", body="…")
    submit(redis_conn, job, *other)
    work(redis_conn, QUEUE)

    assert {r["message"]["token"] for r in fcm_server.requests} == {"phone", "tablet"} | {f"tok-{i}" for i in range(5)}
    assert Notification.objects.filter(job_id=job.job_id, success=True).count() == 2
    assert JobRun.objects.get(job_id=job.job_id).result == {"sent": 2, "deactivated": 0, "devices": 2}


def test_a_data_only_push_has_no_notification_block(fcm_server, redis_conn):
    user = str(uuid.uuid4())
    device(user, "prekey-phone")
    job = envelope("notification.push", userId=user, title="", body="", data={"kind": "prekeys_low", "unused": "3"})
    submit(redis_conn, job)
    work(redis_conn, QUEUE)

    (message,) = fcm_server.messages_to("prekey-phone")
    assert "notification" not in message
    assert message["data"] == {"kind": "prekeys_low", "unused": "3"}
    assert message["apns"]["payload"]["aps"]["content-available"] == 1


def test_a_multicast_job_reaches_the_devices_of_every_listed_user(fcm_server, redis_conn):
    users = [str(uuid.uuid4()) for _ in range(3)]
    for n, user in enumerate(users):
        device(user, f"multi-{n}")
    job = envelope("notification.push", userId=users[0], userIds=users, title="Group", body="call")
    submit(redis_conn, job)
    work(redis_conn, QUEUE)
    assert sorted(r["message"]["token"] for r in fcm_server.requests) == ["multi-0", "multi-1", "multi-2"]
    assert {str(r.user_id) for r in Notification.objects.filter(job_id=job.job_id, success=True)} == set(users)


def test_a_multicast_reads_devices_and_mutes_and_claims_its_rows_in_one_statement_each_whatever_its_size(
    fcm_server, redis_conn
):
    """What a device adds to a multicast is its send and its outcome, never a query of its own
    (bench/bench_multicast.py measures the rate): the same statements for 2 devices as for 200."""
    statements = {}
    for users in (1, 100):
        ids = [str(uuid.uuid4()) for _ in range(users)]
        Device.objects.bulk_create(
            Device(user_id=user, registration_id=f"mc{users}-{n}-{d}", type="android")
            for n, user in enumerate(ids)
            for d in range(2)
        )
        job = envelope("notification.push", userId=ids[0], userIds=ids, title="Group", body="hi",
                       data={"chatId": str(uuid.uuid4())})  # fmt: skip
        submit(redis_conn, job)
        with CaptureQueriesContext(connection) as queries:
            work(redis_conn, QUEUE)
        assert Notification.objects.filter(job_id=job.job_id, success=True).count() == 2 * users
        statements[users] = Counter(
            table
            for query in queries.captured_queries
            for table in ("fcm_devices", "muted_chats", "INSERT INTO notifications")
            if table in query["sql"]
        )
    assert statements[1] == statements[100] == {"fcm_devices": 1, "muted_chats": 1, "INSERT INTO notifications": 1}
    assert len(fcm_server.requests) == 2 + 200


def test_unregistered_deactivates_the_device_and_is_not_retried(fcm_server, redis_conn):
    user = str(uuid.uuid4())
    device(user, "gone")
    fcm_server.script["gone"] = ["UNREGISTERED"]
    job = envelope("notification.push", userId=user, title="x", body="y")
    submit(redis_conn, job)
    work(redis_conn, QUEUE, rounds=3)

    assert fcm_server.attempts["gone"] == 1
    assert Device.objects.get(registration_id="gone").active is False
    run = JobRun.objects.get(job_id=job.job_id)
    assert run.status == "failed" and run.attempts == 1 and "UNREGISTERED" in run.error
    row = Notification.objects.get(job_id=job.job_id)
    assert row.success is False and row.error.startswith("UNREGISTERED")
    assert DeadLetter.objects.filter(job_id=job.job_id).exists()


def test_a_400_invalid_argument_is_not_retried(fcm_server, redis_conn):
    device(str(uuid.uuid4()), "bad-token")
    fcm_server.script["bad-token"] = ["INVALID_ARGUMENT"]
    job = envelope("notification.push", fcmToken="bad-token", title="x", body="y")
    submit(redis_conn, job)
    work(redis_conn, QUEUE, rounds=3)
    assert fcm_server.attempts["bad-token"] == 1
    assert JobRun.objects.get(job_id=job.job_id).status == "failed"
    assert Device.objects.get(registration_id="bad-token").active is False


def test_an_invalid_argument_about_the_message_fails_it_and_leaves_the_devices_alone(fcm_server, redis_conn):
    """INVALID_ARGUMENT also means a message FCM refuses whatever the token (a reserved data key,
    a payload too big): the user's devices stay active for the next push."""
    user = str(uuid.uuid4())
    device(user, "fine-phone")
    device(user, "fine-tablet")
    refusal = ("INVALID_ARGUMENT", None, "Invalid data payload key: from")
    fcm_server.script["fine-phone"] = [refusal]
    fcm_server.script["fine-tablet"] = [refusal]
    job = envelope("notification.push", userId=user, title="x", body="y", data={"from": "ann"})
    submit(redis_conn, job)
    work(redis_conn, QUEUE, rounds=3)

    run = JobRun.objects.get(job_id=job.job_id)
    assert run.status == "failed" and run.attempts == 1 and "Invalid data payload key" in run.error
    assert fcm_server.attempts["fine-phone"] == fcm_server.attempts["fine-tablet"] == 1
    assert set(Device.objects.filter(user_id=user).values_list("active", flat=True)) == {True}


def test_a_503_with_retry_after_is_retried_by_the_runner_after_that_delay(fcm_server, redis_conn):
    fcm_server.script["busy"] = [("UNAVAILABLE", 2)]
    job = envelope("notification.push", fcmToken="busy", title="x", body="y")
    submit(redis_conn, job)
    before = datetime.now(UTC).timestamp()
    work(redis_conn, QUEUE, wait_scheduled=0)

    assert fcm_server.attempts["busy"] == 1, "the SDK's own adapter must not retry (nor sleep) inside the worker"
    assert JobRun.objects.get(job_id=job.job_id).status == "retrying"
    queue = Queue(QUEUE, connection=redis_conn)
    scheduled = ScheduledJobRegistry(queue=queue)
    (job_id,) = scheduled.get_job_ids()
    # RQ keeps whole seconds (it truncates): 2 s become at least 1 s here; the backoff alone is 0.2 s at most.
    assert scheduled.get_scheduled_time(queue.fetch_job(job_id)).timestamp() - before > 1.0

    work(redis_conn, QUEUE, rounds=2, wait_scheduled=5)
    assert fcm_server.attempts["busy"] == 2
    run = JobRun.objects.get(job_id=job.job_id)
    assert run.status == "succeeded" and run.attempts == 2
    assert Notification.objects.get(job_id=job.job_id).success is True


def test_quota_exceeded_waits_at_least_a_minute(fcm_server, redis_conn):
    fcm_server.script["quota"] = ["QUOTA_EXCEEDED"]
    outcome = push.send_batch([envelope("notification.push", fcmToken="quota", title="x", body="y")])[0]
    assert not outcome.ok and not outcome.permanent and outcome.retry_after >= 60
    assert "QUOTA_EXCEEDED" in outcome.error


def test_a_retry_after_given_as_an_http_date_is_honoured(fcm_server, redis_conn):
    in_two_minutes = formatdate(time.time() + 120, usegmt=True)
    fcm_server.script["later"] = [("UNAVAILABLE", in_two_minutes)]
    outcome = push.send_batch([envelope("notification.push", fcmToken="later", title="x", body="y")])[0]
    assert not outcome.ok and not outcome.permanent
    assert 110 <= outcome.retry_after <= 120, outcome.retry_after


@pytest.mark.pgbouncer  # the notification log, through PgBouncer too
def test_a_user_without_an_active_device_gets_a_log_row_saying_so(fcm_server, redis_conn):
    user = str(uuid.uuid4())
    device(user, "retired-phone", active=False)
    job = envelope("notification.push", userId=user, title="New message", body="…")
    submit(redis_conn, job)
    work(redis_conn, QUEUE)
    requeue(redis_conn, [job])  # delivered again: still one row
    work(redis_conn, QUEUE)

    assert fcm_server.requests == []
    (row,) = Notification.objects.filter(job_id=job.job_id)
    assert (row.success, row.error, str(row.user_id)) == (False, "no active device for the user", user)
    assert JobRun.objects.get(job_id=job.job_id).result == {"sent": 0, "deactivated": 0, "devices": 0}


def test_a_redelivered_job_sends_nothing_twice(fcm_server, redis_conn):
    user = str(uuid.uuid4())
    device(user, "once-a")
    device(user, "once-b")
    fcm_server.script["once-b"] = ["INTERNAL"]
    job = envelope("notification.push", userId=user, title="x", body="y")

    first = push.send_batch([job])[0]
    assert not first.ok and not first.permanent
    # The same job again (a retry, a redelivery after a lost ack, an operator's requeue): only
    # the device that failed is sent to; the one that got it is not sent to again.
    assert push.send_batch([job])[0].ok
    assert push.send_batch([job])[0].ok
    assert fcm_server.attempts == {"once-a": 1, "once-b": 2}
    assert Notification.objects.filter(job_id=job.job_id).count() == 2

    requeue(redis_conn, [job])
    work(redis_conn, QUEUE)
    assert fcm_server.attempts == {"once-a": 1, "once-b": 2}


def test_a_push_another_worker_is_sending_is_retried_and_a_stale_claim_is_taken_over(fcm_server):
    from datetime import timedelta

    from django.utils import timezone

    job = envelope("notification.push", fcmToken="claimed", title="x", body="y")
    Notification.objects.create(
        job_id=job.job_id, user_id=job.payload["userId"], type="push", recipient=push.token_reference("claimed")
    )
    (outcome,) = push.send_batch([job])
    assert not outcome.ok and not outcome.permanent and outcome.retry_after == 30
    assert fcm_server.attempts["claimed"] == 0, "a row claimed and not settled means someone else is sending"

    Notification.objects.filter(job_id=job.job_id).update(created_at=timezone.now() - timedelta(minutes=10))
    assert push.send_batch([job])[0].ok, "a claim whose worker died long ago is taken over"
    assert fcm_server.attempts["claimed"] == 1
    assert Notification.objects.get(job_id=job.job_id).success is True
