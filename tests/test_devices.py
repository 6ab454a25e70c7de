"""Devices: the messenger registers and removes FCM tokens by message (device.register,
device.unregister on sup_exchange); the consumer validates and routes them, a worker (RQ
SimpleWorker, in this process) applies them to fcm_devices, and a push to a user then reaches
the user's active devices on the loopback FCM server."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import swapper
from django.apps import apps
from django.contrib import admin

from notifications.admin import DeviceAdmin
from notifications.models import Device, Notification
from notifications.push import NO_DEVICE, token_reference
from supworker.envelope import SEAL_PREFIX, open_fields
from supworker.models import DeadLetter, JobRun
from tests.helpers import rq_items, wait_for
from tests.ingest_fixtures import dead_letters
from tests.notification_helpers import work

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.notification_fixtures"]
QUEUE = "notifications_high"


def moment(seconds_ago: float) -> int:
    """An `at` in epoch milliseconds, as a JavaScript publisher sends Date.now()."""
    return int((time.time() - seconds_ago) * 1000)


def device_message(user: str, token: str, at: int | str, platform: str = "android", **extra) -> dict:
    return {"userId": user, "fcmToken": token, "platform": platform, "at": at} | extra


def publish_and_apply(publisher, redis_conn, messages: list[tuple[str, dict]]) -> None:
    """Publish (routing key, body) pairs in this order, wait for them in RQ, and run them."""
    before = JobRun.objects.count()
    for routing_key, body in messages:
        publisher.publish(routing_key, body | {"jobId": f"dev-{uuid.uuid4().hex[:12]}"})
    wait_for(lambda: len(rq_items(redis_conn, QUEUE)) == len(messages), 10, f"{len(messages)} jobs in {QUEUE}")
    work(redis_conn, QUEUE)
    assert JobRun.objects.count() == before + len(messages)


def push(publisher, redis_conn, user: str, title: str) -> str:
    job_id = f"push-{uuid.uuid4().hex[:12]}"
    publisher.publish(
        "notification.push", {"type": "push", "userId": user, "title": title, "body": "…", "jobId": job_id}
    )
    wait_for(lambda: rq_items(redis_conn, QUEUE), 10, "the push in RQ")
    work(redis_conn, QUEUE)
    return job_id


def test_fcm_django_is_installed_with_our_device_model_and_admin():
    assert apps.is_installed("fcm_django")
    assert swapper.load_model("fcm_django", "fcmdevice") is Device
    assert isinstance(admin.site._registry[Device], DeviceAdmin), "ours, not fcm-django's (it needs a user FK)"


@pytest.mark.slow
def test_devices_registered_by_message_get_the_users_pushes_until_fcm_drops_one(
    fcm_server, consumer, publisher, redis_conn
):
    user = str(uuid.uuid4())
    phone = device_message(user, "dev-phone", moment(60), platform="ios", deviceId="phone-1")
    tablet = device_message(user, "dev-tablet", moment(59), deviceId="tablet-1")
    publish_and_apply(publisher, redis_conn, [("device.register", phone), ("device.register", tablet)])

    rows = {d.registration_id: d for d in Device.objects.filter(user_id=user)}
    assert {token: (d.type, d.device_id, d.active) for token, d in rows.items()} == {
        "dev-phone": ("ios", "phone-1", True),
        "dev-tablet": ("android", "tablet-1", True),
    }
    for run in JobRun.objects.filter(job_type="device.register"):
        assert run.status == "succeeded" and run.payload["fcmToken"] == "***"
        assert run.result["applied"] is True and run.result["device"].startswith("fcm:")

    first = push(publisher, redis_conn, user, "first")
    assert [m["notification"]["title"] for m in fcm_server.messages_to("dev-phone")] == ["first"]
    assert [m["notification"]["title"] for m in fcm_server.messages_to("dev-tablet")] == ["first"]
    assert Notification.objects.filter(job_id=first, success=True).count() == 2

    fcm_server.script["dev-phone"] = ["UNREGISTERED"]  # the app was uninstalled from the phone
    second = push(publisher, redis_conn, user, "second")
    assert Device.objects.get(registration_id="dev-phone").active is False
    assert Device.objects.get(registration_id="dev-tablet").active is True
    assert JobRun.objects.get(job_id=second).result == {"sent": 1, "deactivated": 1, "devices": 2}

    # The phone's registration delivered once more (a publisher's retry): FCM's verdict stands.
    publish_and_apply(publisher, redis_conn, [("device.register", phone)])
    assert Device.objects.get(registration_id="dev-phone").active is False

    push(publisher, redis_conn, user, "third")
    assert [m["notification"]["title"] for m in fcm_server.messages_to("dev-tablet")] == ["first", "second", "third"]
    assert fcm_server.attempts["dev-phone"] == 2, "nothing sent to the phone after FCM dropped it"


@pytest.mark.slow
def test_register_and_unregister_arriving_out_of_order_end_as_the_api_meant(consumer, publisher, redis_conn):
    user = str(uuid.uuid4())
    login, logout, again = moment(300), moment(200), moment(100)
    same_instant = "2026-01-05T10:00:00.250Z"
    # Each token's changes as the API made them; they arrive the other way round. A register and
    # an unregister made at the same instant end unregistered, whichever arrives first.
    made = {
        "logged-out": [("device.register", login), ("device.unregister", logout)],
        "back-again": [("device.unregister", logout), ("device.register", again)],
        "tie-1": [("device.unregister", same_instant), ("device.register", same_instant)],
        "tie-2": [("device.register", same_instant), ("device.unregister", same_instant)],
    }
    for step in (1, 0):  # a round each: a worker takes a batch's items type by type
        arriving = []
        for token, changes in made.items():
            kind, at = changes[step]
            arriving.append((kind, device_message(user, token, at)))
        publish_and_apply(publisher, redis_conn, arriving)
    active = dict(Device.objects.filter(user_id=user).values_list("registration_id", "active"))
    assert active == {"logged-out": False, "back-again": True, "tie-1": False, "tie-2": False}
    ignored = JobRun.objects.filter(result__applied=False).values_list("job_type", flat=True)
    assert sorted(ignored) == ["device.register", "device.register", "device.unregister"]

    # Signing in again later brings the token back.
    publish_and_apply(publisher, redis_conn, [("device.register", device_message(user, "logged-out", moment(0)))])
    assert Device.objects.get(registration_id="logged-out").active is True


@pytest.mark.slow
def test_a_token_moves_to_the_user_and_device_that_registered_it_last(fcm_server, consumer, publisher, redis_conn):
    ann, bob = str(uuid.uuid4()), str(uuid.uuid4())
    earlier, later = moment(120), moment(60)
    publish_and_apply(
        publisher,
        redis_conn,
        [  # Ann signed in on a shared tablet, then Bob did: in order for one token, reversed for the other.
            ("device.register", device_message(ann, "shared", earlier, deviceId="tablet-ann")),
            ("device.register", device_message(bob, "shared", later, platform="web", deviceId="tablet-bob")),
            ("device.register", device_message(bob, "shared-2", later, deviceId="tablet-bob")),
            ("device.register", device_message(ann, "shared-2", earlier, deviceId="tablet-ann")),
        ],
    )
    moved = {d.registration_id: (str(d.user_id), d.type, d.device_id, d.active) for d in Device.objects.all()}
    assert moved == {"shared": (bob, "web", "tablet-bob", True), "shared-2": (bob, "android", "tablet-bob", True)}

    to_ann, to_bob = push(publisher, redis_conn, ann, "for Ann"), push(publisher, redis_conn, bob, "for Bob")
    assert [m["notification"]["title"] for m in fcm_server.messages_to("shared")] == ["for Bob"]
    (nothing,) = Notification.objects.filter(job_id=to_ann)
    assert (nothing.recipient, nothing.success) == (NO_DEVICE, False), "Ann's pushes no longer reach the tablet"
    assert Notification.objects.filter(job_id=to_bob, success=True).count() == 2


@pytest.mark.slow
def test_invalid_device_messages_are_dead_lettered_with_a_clear_reason(consumer, publisher, redis_conn):
    user, now = str(uuid.uuid4()), moment(0)
    overlong = "t" * 2049
    bad = [
        ("device.register", {"fcmToken": "no-user", "platform": "ios", "at": now}, "userId: Field required"),
        ("device.register", device_message(user, "pager", now, platform="blackberry"),
         "platform: Input should be 'ios', 'android' or 'web'"),
        ("device.register", device_message(user, overlong, now), "fcmToken: String should have at most 2048"),
        ("device.register", device_message(user, "with space", now), "fcmToken: must be printable ASCII"),
        ("device.unregister", {"userId": user, "fcmToken": "undated", "platform": "ios"}, "at: Field required"),
        ("device.register", device_message(user, "clock-ahead", moment(-3600)),
         "at: is more than 10 minutes ahead of this server's clock"),
        ("device.forget", device_message(user, "forget-me", now),
         "routing key 'device.forget' must be device.register or device.unregister"),
    ]  # fmt: skip
    for routing_key, body, _ in bad:
        publisher.publish(routing_key, body)
    publish_and_apply(publisher, redis_conn, [("device.register", device_message(user, "valid", now))])

    parked = wait_for(lambda: dead_letters() or None, 10, "dead letters")
    assert len(parked) == len(bad)
    for (routing_key, body, expected), (properties, parked_body) in zip(bad, parked, strict=True):
        assert properties.headers["x-original-routing-key"] == routing_key
        assert properties.headers["x-supworker-reason"].startswith(("invalid device job: ", "routing key")), properties
        assert expected in properties.headers["x-supworker-reason"]
        assert body["fcmToken"].encode() not in parked_body, "the token is parked sealed"
        assert open_fields(json.loads(parked_body)) == body, "opened, it is the message, to fix and republish"
        assert SEAL_PREFIX in json.loads(parked_body)["fcmToken"]
    records = DeadLetter.objects.filter(source=DeadLetter.Source.CONSUMER, job_type="device")
    assert records.count() == len(bad)
    assert {record.payload["fcmToken"] for record in records} == {"***"}
    assert not any(overlong[:100] in record.error for record in records), "no token in a reason"
    assert list(Device.objects.values_list("registration_id", flat=True)) == ["valid"]


@pytest.mark.slow
def test_timestamp_stands_in_for_at_and_results_name_the_token_by_its_digest_only(consumer, publisher, redis_conn):
    user, made = str(uuid.uuid4()), "2026-01-05T10:00:00.123Z"
    body = {"userId": user, "fcmToken": "secret-ish", "platform": "web", "timestamp": made}
    publish_and_apply(publisher, redis_conn, [("device.register", body)])
    row = Device.objects.get(registration_id="secret-ish")
    assert row.active and row.changed_at.isoformat() == "2026-01-05T10:00:00.123000+00:00"
    run = JobRun.objects.get(job_type="device.register")
    assert run.result == {"applied": True, "device": token_reference("secret-ish")}
    assert "secret-ish" not in json.dumps([run.payload, run.result, run.error])
