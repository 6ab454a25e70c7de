"""consume_rabbit against real RabbitMQ and Redis: routing, policy, dead letters, duplicates."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import pytest
from django.conf import settings
from rq import Queue

from supworker.enqueue import RUN_BATCH, SEEN_PREFIX
from supworker.envelope import SEAL_PREFIX, Envelope, open_fields
from supworker.models import DeadLetter
from supworker.rabbit.consumer import Consumer
from tests.helpers import rq_items, wait_for
from tests.ingest_fixtures import dead_letters, queue_depth, start_in_thread
from tests.notification_helpers import envelope, submit

pytestmark = pytest.mark.django_db(transaction=True)

ALL_QUEUES = ("media_high", "media", "notifications_high", "notifications", "cleanup")
USER, MESSAGE = str(uuid.uuid4()), str(uuid.uuid4())


def media(kind: str, **extra) -> dict:
    return {"type": kind, "s3Key": f"uploads/{kind}.bin", "userId": USER, "messageId": MESSAGE} | extra


def notification(kind: str, **extra) -> dict:
    recipient = {"push": {"fcmToken": "device-token"}, "email": {"email": "ann@example.com"}}
    recipient["sms"] = {"phoneNumber": "+14155550100"}
    return {"type": kind, "userId": USER, "title": "Hello", "body": "New message"} | recipient[kind] | extra


def drained(redis_conn, count: int) -> list[dict]:
    return wait_for(
        lambda: len(items := rq_items(redis_conn, *ALL_QUEUES)) >= count and items, 20, f"{count} jobs in RQ"
    )


def test_each_job_type_becomes_an_rq_job_on_its_queue_with_its_policy(consumer, publisher, redis_conn):
    published = {
        "media.image": media("image", jobId="img-1"),
        "media.video": media("video", jobId="vid-1"),
        "media.audio": media("audio", jobId="aud-1"),
        "notification.push": notification("push", jobId="push-1", data={"chatId": "c1"}),
        "notification.email": notification("email", jobId="mail-1"),
        "notification.sms": notification("sms", jobId="sms-1"),
        "cleanup.stories": {"type": "stories", "jobId": "clean-1"},
        "device.register": {
            "userId": USER,
            "fcmToken": "device-token",
            "platform": "ios",
            "jobId": "dev-1",
            "at": "2026-01-05T10:00:00Z",
        },
    }
    for routing_key, body in published.items():
        publisher.publish(routing_key, body)
    otp = {"email": "ann@example.com", "otp": "482913", "retryCount": 1, "jobId": "otp-1", "timestamp": 1672531200000}
    publisher.publish(settings.CONFIG.rabbitmq_queue_name, otp)
    drained(redis_conn, 9)

    expected = {  # job id: (queue, timeout in seconds)
        "img-1": ("media_high", 60),
        "vid-1": ("media", 300),
        "aud-1": ("media", 60),
        "push-1": ("notifications_high", 30),
        "mail-1": ("notifications", 30),
        "sms-1": ("notifications", 30),
        "clean-1": ("cleanup", 120),
        "otp-1": ("notifications_high", 30),
        "dev-1": ("notifications_high", 30),
    }
    seen = {}
    for name in ALL_QUEUES:
        for job in Queue(name, connection=redis_conn).get_jobs():
            assert job.func_name == "supworker.runner.run_batch"
            assert job.retries_left == settings.CONFIG.max_retries == 3
            assert job.failure_ttl == settings.CONFIG.job_failure_ttl
            assert job.result_ttl == settings.CONFIG.job_result_ttl
            for item in job.args[0]:
                seen[item["job_id"]] = (name, job.timeout, Envelope.from_dict(item))
    assert {job_id: value[:2] for job_id, value in seen.items()} == expected

    push = seen["push-1"][2]
    assert push.job_type == "notification.push" and push.payload["data"] == {"chatId": "c1"}
    assert push.payload["fcmToken"].startswith(SEAL_PREFIX) and push.reveal("fcmToken") == "device-token"
    device = seen["dev-1"][2]
    assert device.job_type == "device.register" and device.payload["type"] == "register"
    assert device.payload["fcmToken"].startswith(SEAL_PREFIX) and device.reveal("fcmToken") == "device-token"
    otp_job = seen["otp-1"][2]
    assert otp_job.job_type == "otp.email" and otp_job.attempt == 1  # the LMS retryCount carries over
    assert otp_job.payload["otp"].startswith(SEAL_PREFIX) and otp_job.reveal("otp") == "482913"
    assert otp_job.created_at == 1672531200.0
    assert seen["sms-1"][2].reveal("phoneNumber") == "+14155550100"
    assert queue_depth(f"{settings.CONFIG.rabbitmq_queue_prefix}.media") == 0, "everything enqueued is acked"


def test_a_message_may_raise_or_lower_its_priority(consumer, publisher, redis_conn):
    publisher.publish("notification.push", notification("push", jobId="slow-push", priority="low"))
    publisher.publish("notification.email", notification("email", jobId="fast-mail", priority="high"))
    drained(redis_conn, 2)
    assert [i["job_id"] for i in rq_items(redis_conn, "notifications")] == ["slow-push"]
    assert [i["job_id"] for i in rq_items(redis_conn, "notifications_high")] == ["fast-mail"]


BAD_MESSAGES = [
    ("media.image", b"{not json", "message is not JSON"),
    ("media.image", b"[1, 2, 3]", "message is a JSON list, not an object"),
    ("media.image", b"\xff\xfe\x00", "message is not JSON"),
    ("media.image", json.dumps({"pad": "x" * 300_000}).encode(), "larger than the 262144-byte limit"),
    ("media.gif", json.dumps(media("gif")).encode(), "type: Input should be 'image', 'video' or 'audio'"),
    ("media.image", json.dumps({"type": "image"}).encode(), "s3Key: Field required; userId: Field required"),
    ("media.image", json.dumps(media("image", s3Key="../../etc/passwd")).encode(), "s3Key: must not contain '.'"),
    ("media.image", json.dumps(media("video")).encode(), "does not match the payload's type 'video'"),
    ("notification.email", json.dumps(notification("push", type="email")).encode(), "needs 'email'"),
    ("notification.sms", json.dumps(notification("sms", phoneNumber="555-0100")).encode(), "E.164"),
    ("cleanup.everything", json.dumps({"type": "everything"}).encode(), "type: Input should be 'stories'"),
    ("otp", json.dumps({"email": "not-an-address", "otp": "12"}).encode(), "otp: String should have at least 4"),
]


@pytest.mark.pgbouncer  # the consumer's records, through PgBouncer too
def test_invalid_messages_are_dead_lettered_with_their_reason_and_the_rest_flow(consumer, publisher, redis_conn):
    otp_queue = settings.CONFIG.rabbitmq_queue_name
    for number, (routing_key, body, _) in enumerate(BAD_MESSAGES):
        publisher.publish(otp_queue if routing_key == "otp" else routing_key, body)
        publisher.publish("cleanup.sessions", {"type": "sessions", "jobId": f"good-{number}"})
    items = drained(redis_conn, len(BAD_MESSAGES))
    assert sorted(i["job_id"] for i in items) == sorted(f"good-{n}" for n in range(len(BAD_MESSAGES)))

    parked = wait_for(lambda: dead_letters() or None, 10, "dead letters")
    reasons = [properties.headers["x-supworker-reason"] for properties, _ in parked]
    assert len(reasons) == len(BAD_MESSAGES)
    for (_, body, expected), (properties, parked_body), reason in zip(BAD_MESSAGES, parked, reasons, strict=True):
        assert expected in reason, reason
        if parked_body != body:  # secret fields sealed: opened, they give the message back, for republishing
            assert SEAL_PREFIX.encode() in parked_body and body not in parked_body
            assert open_fields(json.loads(parked_body)) == json.loads(body)
        assert properties.headers["x-original-routing-key"]

    records = DeadLetter.objects.filter(source=DeadLetter.Source.CONSUMER)
    assert records.count() == len(BAD_MESSAGES)
    otp_record = records.get(error__contains="otp: String should have at least 4")
    assert otp_record.payload["otp"] == "***", "a code is never stored in clear, even in a bad message"
    # The consumer's intake counters (the LMS names belong to OTP e-mails delivered: test_lms.py).
    assert consumer.stats.rejectedMessages == len(BAD_MESSAGES)
    assert consumer.stats.enqueuedJobs == len(BAD_MESSAGES)
    assert consumer.stats.receivedMessages == 2 * len(BAD_MESSAGES)


def test_the_same_job_id_is_enqueued_once(consumer, publisher, redis_conn):
    body = notification("push", jobId="push-once")
    publisher.publish("notification.push", body)
    drained(redis_conn, 1)
    for _ in range(3):  # later, in other batches
        publisher.publish("notification.push", body)
    publisher.publish("notification.push", notification("push", jobId="push-after"))
    items = drained(redis_conn, 2)
    wait_for(lambda: consumer.stats.duplicateMessages == 3, 10, "three duplicates counted")
    assert sorted(i["job_id"] for i in items) == ["push-after", "push-once"]
    assert queue_depth(f"{settings.CONFIG.rabbitmq_queue_prefix}.notifications") == 0
    # Remembered for JOB_DEDUP_TTL (.env.example), under the job id.
    assert redis_conn.get(SEEN_PREFIX + "id:push-once") == b"push-once"
    assert (
        settings.CONFIG.job_dedup_ttl - 60
        < redis_conn.ttl(SEEN_PREFIX + "id:push-once")
        <= settings.CONFIG.job_dedup_ttl
    )


def test_a_message_without_job_id_gets_one_and_its_copy_is_recognised(consumer, publisher, redis_conn):
    """Without a jobId the consumer makes one; the same body again (a redelivery, a publisher's
    retry) within the window is the same job. An AMQP message_id serves as the job id."""
    import pika

    body = json.dumps({"type": "stories"}).encode()
    publisher.publish("cleanup.stories", body)
    publisher.publish("cleanup.stories", body)
    publisher.channel.basic_publish(
        settings.CONFIG.rabbitmq_exchange,
        "cleanup.sessions",
        json.dumps({"type": "sessions"}).encode(),
        pika.BasicProperties(message_id="amqp-id-7", delivery_mode=2),
    )
    wait_for(lambda: consumer.stats.receivedMessages == 3, 20, "three messages handled")
    enqueued = rq_items(redis_conn, "cleanup")
    assert sorted(item["job_type"] for item in enqueued) == ["cleanup.sessions", "cleanup.stories"]
    assert consumer.stats.duplicateMessages == 1 and consumer.stats.enqueuedJobs == 2
    items = {item["job_type"]: item for item in enqueued}
    assert len(items["cleanup.stories"]["job_id"]) == 32, "a generated id"
    assert items["cleanup.sessions"]["job_id"] == "amqp-id-7"
    # A body's fingerprint is remembered for an hour (REDELIVERY_WINDOW), an id for JOB_DEDUP_TTL.
    fingerprints = [key for key in redis_conn.scan_iter(SEEN_PREFIX + "fp:*")]
    assert len(fingerprints) == 1 and 3600 - 60 < redis_conn.ttl(fingerprints[0]) <= 3600
    assert redis_conn.ttl(SEEN_PREFIX + "id:amqp-id-7") > 3600


def test_consumer_logs_its_health_and_keeps_stats_where_monitoring_reads_them(
    rabbit_names, redis_conn, publisher, settings, caplog
):
    import dataclasses
    import logging

    from supworker.rabbit.consumer import Consumer
    from supworker.stats import CONSUMER_KEY, CONSUMERS_KEY
    from tests.ingest_fixtures import start_in_thread

    settings.CONFIG = dataclasses.replace(settings.CONFIG, heartbeat_interval_ms=1000)
    caplog.set_level(logging.INFO, logger="supworker.rabbit.consumer")
    consumer = Consumer(redis=redis_conn, name="health-check")
    thread = start_in_thread(consumer)
    try:
        for number in range(3):
            publisher.publish("cleanup.sessions", {"type": "sessions", "jobId": f"s-{number}"})
        publisher.publish("cleanup.sessions", b"not json")
        stats_key = CONSUMER_KEY + "health-check"
        wait_for(lambda: redis_conn.hget(stats_key, "enqueuedJobs") == b"3", 10, "stats in Redis")
        wait_for(lambda: "consumer health:" in caplog.text, 10, "a health line in the log")
        assert redis_conn.sismember(CONSUMERS_KEY, "health-check"), "a running consumer is listed"
    finally:
        consumer.stop()
        thread.join(10)
    stats = {k.decode(): v.decode() for k, v in redis_conn.hgetall(stats_key).items()}
    assert stats["receivedMessages"] == "4" and stats["enqueuedJobs"] == "3" and stats["rejectedMessages"] == "1"
    assert stats["duplicateMessages"] == "0" and stats["redeliveredMessages"] == "0"
    assert not {"processedJobs", "failedJobs", "retriedJobs"} & set(stats), "those are OTP e-mails delivered"
    assert float(stats["startTime"]) <= float(stats["lastMessageAt"]) <= float(stats["heartbeatAt"])
    memory = json.loads(stats["memoryUsage"])
    assert memory["rss"] == memory["heapTotal"] + memory["external"] and memory["heapUsed"] == memory["heapTotal"]
    assert memory["rss"] > 10 * 2**20 and memory["arrayBuffers"] == 0
    assert stats["lastError"].endswith(".cleanup: message is not JSON: Expecting value: line 1 column 1 (char 0)")
    assert not redis_conn.sismember(CONSUMERS_KEY, "health-check"), "a stopped one is not"
    assert "received=4 enqueued=3 rejected=1 duplicates=0" in caplog.text and "rss=" in caplog.text


def test_publish_job_command_publishes_with_confirms_and_rejects_bad_json(rabbit_names, redis_conn, tmp_path):
    from tests.helpers import run_manage
    from tests.ingest_fixtures import subprocess_env

    env = subprocess_env(rabbit_names)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"type": "stories", "jobId": "from-file"}))
    assert run_manage("publish_job", "cleanup.stories", f"@{job}", env=env).returncode == 0
    otp = run_manage("publish_job", rabbit_names["RABBITMQ_QUEUE_NAME"], '{"email": "a@b.co", "otp": "1234"}', env=env)
    assert otp.returncode == 0 and "published" in otp.stdout
    bad = run_manage("publish_job", "cleanup.stories", "{oops", env=env)
    assert bad.returncode == 1 and "payload is not JSON" in bad.stderr
    assert queue_depth(f"{rabbit_names['RABBITMQ_QUEUE_PREFIX']}.cleanup") == 1
    assert queue_depth(rabbit_names["RABBITMQ_QUEUE_NAME"]) == 1


def test_our_own_media_events_on_the_exchange_are_skipped_not_dead_lettered(consumer, publisher, redis_conn):
    publisher.publish("media.processed", {"messageId": MESSAGE, "status": "ready"})
    publisher.publish("media.failed", {"messageId": MESSAGE, "status": "failed"})
    publisher.publish("media.image", media("image", jobId="after-events"))
    drained(redis_conn, 1)
    wait_for(lambda: consumer.stats.ownEvents == 2, 10, "both events skipped")
    assert [i["job_id"] for i in rq_items(redis_conn, *ALL_QUEUES)] == ["after-events"]
    assert consumer.stats.rejectedMessages == 0 and not dead_letters()


def _batches(redis_conn, queue: str) -> list[list[str]]:
    """The job ids each RQ batch job waiting in `queue` carries, in queue order."""
    jobs = Queue(queue, connection=redis_conn).get_jobs()
    return [[item["job_id"] for item in job.args[0]] for job in jobs if job.func_name == RUN_BATCH]


def test_a_batch_for_busy_workers_keeps_filling_one_for_idle_workers_leaves_at_once(
    rabbit_names, publisher, redis_conn, settings
):
    settings.CONFIG = dataclasses.replace(settings.CONFIG, consumer_flush_ms=20, consumer_max_linger_ms=3000)
    running = Consumer(redis=redis_conn, name="linger-consumer")
    thread = start_in_thread(running)
    try:
        # Idle workers (nothing waits in their queues): each message leaves in its own batch.
        publisher.publish("notification.push", notification("push", jobId="idle-1"))
        time.sleep(0.5)
        publisher.publish("notification.push", notification("push", jobId="idle-2"))
        wait_for(lambda: len(_batches(redis_conn, "notifications_high")) == 2, 20, "two batches")
        assert _batches(redis_conn, "notifications_high") == [["idle-1"], ["idle-2"]]
        # Those two now wait in the queue, as behind workers that are all busy: the next message's
        # batch keeps filling, and one 0.5 s later goes in the same RQ job.
        publisher.publish("notification.push", notification("push", jobId="busy-1"))
        time.sleep(0.5)
        publisher.publish("notification.push", notification("push", jobId="busy-2"))
        wait_for(lambda: len(_batches(redis_conn, "notifications_high")) == 3, 20, "a third batch")
        assert _batches(redis_conn, "notifications_high")[2] == ["busy-1", "busy-2"]
    finally:
        running.stop()
        thread.join(30)


def test_a_multicast_push_fills_an_rq_job_by_its_users_not_as_one_item(redis_conn):
    # A backlog of big multicasts must not become one RQ job of a million pushes: a job carries
    # at most 500 users' pushes (or one message that alone names more), with a timeout to match.
    def multicast(users: int) -> Envelope:
        ids = [str(uuid.uuid4()) for _ in range(users)]
        return envelope("notification.push", f"users-{users}-{uuid.uuid4().hex[:6]}", userIds=ids, title="t", body="b")

    sent = [multicast(300), multicast(300), multicast(1000), *(multicast(1) for _ in range(600))]
    submit(redis_conn, *sent)
    jobs = Queue("notifications_high", connection=redis_conn).get_jobs()
    carried = [[item["job_id"] for item in job.args[0]] for job in jobs]
    users = {e.job_id: len(e.payload["userIds"]) for e in sent}
    assert sorted(i for batch in carried for i in batch) == sorted(users), "every message once"
    assert [[users[i] for i in batch][:3] for batch in carried] == [[300], [300], [1000], [1, 1, 1], [1, 1, 1]]
    assert [len(batch) for batch in carried[3:]] == [500, 100]
