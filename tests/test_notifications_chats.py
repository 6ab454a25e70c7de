"""Pushes that behave per chat: sound, grouping, badge, Android channel, and the messenger's muted
chats, through the real firebase-admin SDK against the loopback FCM v1 server, run by the real
runner under RQ, with `muted_chats` and the notification log in PostgreSQL."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from notifications.models import Device, Notification
from notifications.push_message import dedupe_key
from supworker.config import load_config
from supworker.enqueue import requeue
from supworker.models import DeadLetter, JobRun
from tests.helpers import rq_items, wait_for
from tests.ingest_fixtures import dead_letters
from tests.notification_helpers import envelope, submit, work

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.notification_fixtures"]
QUEUE = "notifications_high"
SKIPPED = "skipped: the user muted this chat"


def device(user_id: str, token: str) -> None:
    Device.objects.create(user_id=user_id, registration_id=token, type="ios", active=True)


def mute(user_id: str, chat_id: str, mode: str, until=None) -> None:
    """A row as the messenger writes it (docs/notifications.md#muted-chats)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO muted_chats (user_id, chat_id, mode, until) VALUES (%s, %s, %s, %s)",
            [user_id, chat_id, mode, until],
        )


def chat_push(user_id: str, chat_id: str, **payload):
    return envelope(
        "notification.push", userId=user_id, title="Ann", body="Lunch?", data={"chatId": chat_id}, **payload
    )


def run(redis_conn, *jobs) -> None:
    submit(redis_conn, *jobs)
    work(redis_conn, QUEUE)


def sound(message: dict) -> tuple[str | None, str | None]:
    """What iOS and Android play for it."""
    aps = message["apns"].get("payload", {}).get("aps", {})
    return aps.get("sound"), message["android"].get("notification", {}).get("sound")


def test_a_message_push_plays_the_default_sound_and_a_data_only_push_none(fcm_server, redis_conn):
    user = str(uuid.uuid4())
    device(user, "phone")
    message_push = envelope("notification.push", userId=user, title="Ann", body="Lunch?")
    data_only = envelope("notification.push", userId=user, title="", body="", data={"kind": "prekeys_low"})
    run(redis_conn, message_push, data_only)

    by_body = {m.get("notification", {}).get("body"): m for m in fcm_server.messages_to("phone")}
    assert sound(by_body["Lunch?"]) == ("default", "default")
    assert "interruption-level" not in by_body["Lunch?"]["apns"]["payload"]["aps"]
    quiet = by_body[None]
    assert sound(quiet) == (None, None) and "notification" not in quiet and "notification" not in quiet["android"]
    assert quiet["apns"]["payload"]["aps"] == {"content-available": 1}, "no alert, no sound, no badge"


def test_a_chat_push_is_grouped_by_its_chat_with_badge_and_channel_and_keeps_its_dedupe_key(fcm_server, redis_conn):
    user, chat = str(uuid.uuid4()), str(uuid.uuid4())
    device(user, "phone")
    job = chat_push(user, chat, badge=4, androidChannelId="chat_messages")
    cleared = envelope("notification.push", userId=user, title="Ann", body="read", badge=0)
    run(redis_conn, job, cleared)

    first, second = sorted(fcm_server.messages_to("phone"), key=lambda m: m["notification"]["body"])
    aps = first["apns"]["payload"]["aps"]
    assert (aps["thread-id"], aps["badge"], aps["sound"]) == (chat, 4, "default")
    assert first["android"]["notification"]["channel_id"] == "chat_messages"
    assert first["data"] == {"chatId": chat}, "an Android app groups by the chat id in data"
    # The per-job key a resend after a crash relies on (tests/test_faults_kill.py) is untouched.
    key = dedupe_key(job.job_id)
    assert first["apns"]["headers"]["apns-collapse-id"] == first["android"]["notification"]["tag"] == key
    assert first["webpush"]["headers"]["Topic"] == first["webpush"]["notification"]["tag"] == key
    assert second["apns"]["payload"]["aps"]["badge"] == 0, "a zero badge clears it"
    assert "thread-id" not in second["apns"]["payload"]["aps"] and "channel_id" not in second["android"]["notification"]


@pytest.mark.pgbouncer  # muted_chats and the notification log, through PgBouncer too
def test_a_chat_muted_with_skip_is_not_sent_and_the_log_says_why(fcm_server, redis_conn):
    user, chat = str(uuid.uuid4()), str(uuid.uuid4())
    device(user, "phone")
    device(user, "tablet")
    mute(user, chat, "skip")
    job = chat_push(user, chat)
    to_token = chat_push(user, chat, fcmToken="direct-token")  # a push to a token is its userId's
    run(redis_conn, job, to_token)
    requeue(redis_conn, [job])  # delivered again: skipped again, still one row per device
    work(redis_conn, QUEUE)

    assert fcm_server.requests == []
    rows = Notification.objects.filter(job_id=job.job_id)
    assert rows.count() == 2
    assert {(r.success, r.error, r.status, str(r.user_id)) for r in rows} == {(False, SKIPPED, "skipped", user)}
    assert JobRun.objects.get(job_id=job.job_id).result == {"sent": 0, "deactivated": 0, "devices": 2, "skipped": 2}
    assert Notification.objects.get(job_id=to_token.job_id).status == "skipped"
    assert not DeadLetter.objects.exists(), "a muted chat is not a failure"


def test_the_reason_names_when_a_timed_mute_ends(fcm_server, redis_conn):
    user, chat = str(uuid.uuid4()), str(uuid.uuid4())
    device(user, "phone")
    ends = timezone.now().replace(microsecond=0) + timedelta(hours=8)
    mute(user, chat, "skip", until=ends)
    job = chat_push(user, chat)
    run(redis_conn, job)
    assert fcm_server.requests == []
    assert Notification.objects.get(job_id=job.job_id).error == f"{SKIPPED} until {ends:%Y-%m-%d %H:%M} UTC"


def test_a_chat_muted_silently_is_delivered_without_sound(fcm_server, redis_conn, settings):
    # The silent channel as production reads it from the environment.
    environ = {"SUPWORKER_ENV_FILE": os.devnull, "FCM_ANDROID_SILENT_CHANNEL_ID": "muted_chats"}
    channel = load_config(environ).notifications.fcm_android_silent_channel_id
    settings.CONFIG = settings.CONFIG.with_section("notifications", fcm_android_silent_channel_id=channel)
    user, chat = str(uuid.uuid4()), str(uuid.uuid4())
    device(user, "phone")
    mute(user, chat, "silent")
    job = chat_push(user, chat, badge=2, androidChannelId="chat_messages")
    run(redis_conn, job)

    (message,) = fcm_server.messages_to("phone")
    assert message["notification"] == {"title": "Ann", "body": "Lunch?"}, "still shown"
    assert sound(message) == (None, None)
    aps = message["apns"]["payload"]["aps"]
    assert (aps["interruption-level"], aps["thread-id"], aps["badge"]) == ("passive", chat, 2)
    assert message["android"]["notification"]["channel_id"] == "muted_chats"
    assert message["webpush"]["notification"]["silent"] is True
    row = Notification.objects.get(job_id=job.job_id)
    assert (row.status, row.error) == ("sent", "")


def test_urgent_pushes_ignore_the_mute(fcm_server, redis_conn):
    user, chat = str(uuid.uuid4()), str(uuid.uuid4())
    device(user, "phone")
    mute(user, chat, "skip")
    urgent = chat_push(user, chat, urgent=True)
    call = envelope(
        "notification.push", userId=user, title="Ann", body="calling", data={"chatId": chat, "kind": "call"}
    )
    not_urgent_call = envelope(
        "notification.push",
        userId=user,
        title="Ann",
        body="missed",
        data={"chatId": chat, "kind": "call"},
        urgent=False,
    )
    run(redis_conn, urgent, call, not_urgent_call)

    sent = {m["notification"]["body"]: m for m in fcm_server.messages_to("phone")}
    assert set(sent) == {"Lunch?", "calling"}, "urgent: true, or a call that does not say otherwise"
    assert all(sound(m) == ("default", "default") for m in sent.values())
    assert Notification.objects.get(job_id=not_urgent_call.job_id).status == "skipped"


def test_an_expired_mute_is_ignored(fcm_server, redis_conn):
    user, chat = str(uuid.uuid4()), str(uuid.uuid4())
    device(user, "phone")
    mute(user, chat, "skip", until=timezone.now() - timedelta(minutes=1))
    job = chat_push(user, chat)
    run(redis_conn, job)
    (message,) = fcm_server.messages_to("phone")
    assert sound(message) == ("default", "default")
    assert Notification.objects.get(job_id=job.job_id).status == "sent"


def test_a_data_only_push_of_a_muted_chat_still_reaches_the_app(fcm_server, redis_conn):
    user, chat = str(uuid.uuid4()), str(uuid.uuid4())
    device(user, "phone")
    mute(user, chat, "skip")
    run(redis_conn, envelope("notification.push", userId=user, title="", body="", data={"chatId": chat}))
    (message,) = fcm_server.messages_to("phone")
    assert message["data"] == {"chatId": chat} and sound(message) == (None, None)


def test_a_multicast_push_applies_each_users_own_mute_to_that_users_devices(fcm_server, redis_conn):
    chat = str(uuid.uuid4())
    skipping, silent, plain, elsewhere = (str(uuid.uuid4()) for _ in range(4))
    for user, name in ((skipping, "skip"), (silent, "silent"), (plain, "plain"), (elsewhere, "elsewhere")):
        device(user, f"{name}-phone")
    device(skipping, "skip-tablet")
    mute(skipping, chat, "skip")
    mute(silent, chat, "silent")
    mute(elsewhere, str(uuid.uuid4()), "skip")  # another chat
    job = chat_push(skipping, chat, userIds=[skipping, silent, plain, elsewhere])
    run(redis_conn, job)

    assert {r["message"]["token"] for r in fcm_server.requests} == {"silent-phone", "plain-phone", "elsewhere-phone"}
    assert sound(fcm_server.messages_to("silent-phone")[0]) == (None, None)
    assert sound(fcm_server.messages_to("plain-phone")[0]) == ("default", "default")
    assert sound(fcm_server.messages_to("elsewhere-phone")[0]) == ("default", "default")
    statuses = {(str(r.user_id), r.status) for r in Notification.objects.filter(job_id=job.job_id)}
    assert statuses == {(skipping, "skipped"), (silent, "sent"), (plain, "sent"), (elsewhere, "sent")}
    assert Notification.objects.filter(job_id=job.job_id, user_id=skipping).count() == 2
    result = JobRun.objects.get(job_id=job.job_id).result
    assert result == {"sent": 3, "deactivated": 0, "devices": 5, "skipped": 2}


def test_the_admin_lists_skipped_pushes_with_their_reason(fcm_server, redis_conn, client):
    user, chat = str(uuid.uuid4()), str(uuid.uuid4())
    device(user, "phone")
    device(user, "tablet")
    mute(user, chat, "skip")
    skipped, sent = chat_push(user, chat), envelope("notification.push", userId=user, title="Ann", body="hi")
    run(redis_conn, skipped, sent)
    client.force_login(get_user_model().objects.create_superuser("operator", password="a-long-password"))

    page = client.get(reverse("admin:notifications_notification_changelist"), {"status": "skipped"})
    assert page.status_code == 200
    shown = page.context["cl"].result_list
    assert {row.job_id for row in shown} == {skipped.job_id} and len(shown) == 2
    assert SKIPPED in page.content.decode()
    failed = client.get(reverse("admin:notifications_notification_changelist"), {"status": "failed"})
    assert list(failed.context["cl"].result_list) == [], "skipped is not counted as failed"


def bad_push(**fields) -> dict:
    push = {"type": "push", "userId": str(uuid.uuid4()), "title": "Ann", "body": "Lunch?", "fcmToken": "t"}
    return push | fields


BAD_CHAT_FIELDS = [
    (bad_push(badge=-1), "badge: Input should be greater than or equal to 0"),
    (bad_push(badge=10_000_000), "badge: Input should be less than or equal to 1000000"),
    (bad_push(badge="3"), "badge: Input should be a valid integer"),
    (bad_push(androidChannelId="chat messages"), "androidChannelId: must be 1-100 letters, digits"),
    (bad_push(urgent="yes"), "urgent: Input should be a valid boolean"),
    (bad_push(title="", body="", badge=1), "'badge' needs a title or body"),
]


def test_bad_chat_fields_are_dead_lettered_with_a_clear_reason(consumer, publisher, redis_conn):
    for body, _ in BAD_CHAT_FIELDS:
        publisher.publish("notification.push", body)
    good = bad_push(jobId="good-chat-push", badge=3, androidChannelId="chat_messages", urgent=False)
    publisher.publish("notification.push", good)
    (item,) = wait_for(lambda: rq_items(redis_conn, QUEUE) or None, 20, "the good push in RQ")
    assert item["job_id"] == "good-chat-push"

    parked = wait_for(lambda: dead_letters() or None, 10, "dead letters")
    reasons = sorted(properties.headers["x-supworker-reason"] for properties, _ in parked)
    assert len(reasons) == len(BAD_CHAT_FIELDS)
    for _, expected in BAD_CHAT_FIELDS:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert all(json.loads(body)["type"] == "push" for _, body in parked)
