"""Parity with the LMS OTP worker: its statistics mean OTP e-mails delivered, failed for good and
retried; its health object is served at GET /health/lms; WORKER=false turns the consumer off.

OTPs are published on the OTP queue, taken by a real consumer, and sent by RQ workers running
the real runner against a loopback SMTP server (tests/notification_servers.py)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import datetime
from email import message_from_bytes, policy

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rq import Worker

from notifications.models import Notification
from supworker.models import DeadLetter, JobRun
from tests.helpers import rq_items, start_manage, stop, wait_for
from tests.ingest_fixtures import subprocess_env
from tests.notification_helpers import work
from tests.test_monitoring import conforms

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
pytest_plugins = ["tests.notification_fixtures"]


@pytest.fixture
def web(client):
    client.defaults["HTTP_HOST"] = "127.0.0.1"
    return client


def publish_otp(publisher, redis_conn, address: str, code: str = "493817", **extra) -> str:
    job_id = f"lms-{uuid.uuid4().hex[:10]}"
    body = {"email": address, "otp": code, "jobId": job_id, "metadata": {"userName": "Erin"}} | extra
    publisher.publish(settings.CONFIG.rabbitmq_queue_name, body)
    wait_for(lambda: job_id in {i["job_id"] for i in rq_items(redis_conn, "notifications_high")}, 10, "the OTP job")
    return job_id


def lms_health(web) -> dict:
    """GET /health/lms, its answer checked against the OpenAPI description (which allows only 200)."""
    return conforms(web.get("/health/lms"), "/health/lms")


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_an_otp_delivered_by_a_worker_moves_processed_jobs_and_last_processed_at(
    smtp_server, consumer, publisher, redis_conn, web
):
    before = lms_health(web)
    assert before["stats"] == {
        "processedJobs": 0, "failedJobs": 0, "retriedJobs": 0, "startTime": None, "lastProcessedAt": None,
    }  # fmt: skip
    job_id = publish_otp(publisher, redis_conn, "erin@example.net")
    assert consumer.stats.enqueuedJobs == 1
    waiting = lms_health(web)
    assert waiting["stats"]["processedJobs"] == 0, "taken in by the consumer is not delivered"

    started = time.time()
    work(redis_conn, "notifications_high")
    assert smtp_server.count() == 1 and JobRun.objects.get(job_id=job_id).status == "succeeded"
    after = lms_health(web)
    stats = after["stats"]
    assert (stats["processedJobs"], stats["failedJobs"], stats["retriedJobs"]) == (1, 0, 0)
    assert started - 0.001 <= at(stats["lastProcessedAt"]) <= time.time()
    assert at(stats["startTime"]) <= at(stats["lastProcessedAt"])
    assert after["lastError"] is None

    # The messenger publishes the same job again: nothing is sent, so nothing is counted.
    publisher.publish(
        settings.CONFIG.rabbitmq_queue_name, {"email": "erin@example.net", "otp": "1234", "jobId": job_id}
    )
    wait_for(lambda: consumer.stats.duplicateMessages == 1, 10, "the copy recognised")
    work(redis_conn, "notifications_high")
    assert smtp_server.count() == 1 and lms_health(web)["stats"]["processedJobs"] == 1


def test_a_refused_otp_fails_at_once_and_a_deferred_one_counts_each_retry_then_fails(
    smtp_server, consumer, publisher, redis_conn, web
):
    bounce = publish_otp(publisher, redis_conn, "bounce@example.net")
    busy = publish_otp(publisher, redis_conn, "busy@example.net")
    work(redis_conn, "notifications_high", wait_scheduled=0)
    stats = lms_health(web)["stats"]
    assert (stats["processedJobs"], stats["failedJobs"], stats["retriedJobs"]) == (0, 1, 1), "550 fails, 451 retries"
    assert JobRun.objects.get(job_id=bounce).status == "failed"

    # The busy address stays busy through all MAX_RETRIES retries, then fails for good.
    work(redis_conn, "notifications_high", rounds=settings.CONFIG.max_retries + 1)
    body = lms_health(web)
    stats = body["stats"]
    assert (stats["processedJobs"], stats["failedJobs"], stats["retriedJobs"]) == (0, 2, settings.CONFIG.max_retries)
    assert JobRun.objects.get(job_id=busy).status == "failed"
    assert stats["lastProcessedAt"] is None
    error = body["lastError"]
    assert error["jobId"] == busy and error["name"] == "TransientError"
    assert error["message"] == "recipient deferred: 451"
    assert abs(at(error["at"]) - time.time()) < 60

    web.force_login(get_user_model().objects.create_superuser("operator", password="a-long-password"))
    html = web.get("/admin/monitoring/dashboard/").content.decode()
    assert f"OTP e-mails: 0 delivered, 2 failed, {settings.CONFIG.max_retries} retried" in html
    assert f"job {busy})" in html and "TransientError: recipient deferred: 451" in html
    assert "Last delivered: never" in html


def test_last_error_never_holds_the_code_nor_the_address_even_when_the_server_quotes_them(
    smtp_server, consumer, publisher, redis_conn, web
):
    handler = smtp_server.controller.handler

    class Quoting(handler.__class__):
        """Refuses mail to spam…@ quoting the line of the text that holds the code, as some filters do."""

        async def handle_DATA(self, server, session, envelope):
            if not envelope.rcpt_tos[0].startswith("spam"):
                return await super().handle_DATA(server, session, envelope)
            text = message_from_bytes(envelope.content, policy=policy.default).get_body(("plain",)).get_content()
            quoted = next(line.strip() for line in text.splitlines() if line.strip().isdigit())
            return f"554 5.7.1 message to {envelope.rcpt_tos[0]} refused as spam: {quoted}"

    handler.__class__ = Quoting
    job_id = publish_otp(publisher, redis_conn, "spam.trap@example.org", code="774411")
    work(redis_conn, "notifications_high", wait_scheduled=0)

    body = lms_health(web)
    assert body["stats"]["failedJobs"] == 1 and body["stats"]["retriedJobs"] == 0
    error = body["lastError"]
    assert error["name"] == "PermanentError" and error["jobId"] == job_id
    assert (
        "554" in error["message"]
        and "s***@example.org" in error["message"]
        and "refused as spam: ***" in error["message"]
    )
    kept = [str(body), JobRun.objects.get(job_id=job_id).error, DeadLetter.objects.get(job_id=job_id).error]
    kept.append(Notification.objects.get(job_id=job_id).error)
    for text in kept:
        assert "774411" not in text and "spam.trap@" not in text, text


def test_health_lms_says_what_runs_with_the_lms_fields(rabbit_names, redis_conn, web):
    body = lms_health(web)
    assert body["status"] == "stopped", "no consumer, no worker"
    assert body["uptime"] == 0 and body["lastError"] is None
    assert body["memoryUsage"] == {"rss": 0, "heapTotal": 0, "heapUsed": 0, "external": 0, "arrayBuffers": 0}

    from supworker.rabbit.consumer import Consumer
    from tests.ingest_fixtures import start_in_thread

    consumer = Consumer(redis=redis_conn, name="lms-health")
    thread = start_in_thread(consumer)
    worker = Worker(["notifications_high", "notifications"], connection=redis_conn, name=f"lms-{uuid.uuid4().hex[:6]}")
    try:
        wait_for(lambda: lms_health(web)["status"] == "degraded", 20, "the consumer seen live")
        body = lms_health(web)  # OTPs are taken in but no worker sends them
        memory = body["memoryUsage"]
        assert memory["rss"] > 10 * 2**20 and memory["rss"] == memory["heapTotal"] + memory["external"]
        assert memory["heapUsed"] == memory["heapTotal"] > 0
        assert 0 < body["uptime"] < 600

        worker.register_birth()  # RQ's own registration, as `manage.py rqworker` does at start
        body = lms_health(web)
        assert body["status"] == "running"
        assert isinstance(body["uptime"], float) and isinstance(body["stats"]["processedJobs"], int)
    finally:
        worker.register_death()
        consumer.stop()
        thread.join(30)
    assert lms_health(web)["status"] == "stopped", "a stopped consumer is no longer counted"


def test_a_silent_consumer_is_not_counted_live(redis_conn, web, settings):
    from supworker.stats import CONSUMER_KEY, CONSUMERS_KEY

    settings.CONFIG = dataclasses.replace(settings.CONFIG, heartbeat_interval_ms=1000)
    redis_conn.sadd(CONSUMERS_KEY, "gone")  # killed with SIGKILL: still listed, its heartbeat old
    redis_conn.hset(CONSUMER_KEY + "gone", mapping={"startTime": time.time() - 60, "heartbeatAt": time.time() - 10})
    assert lms_health(web)["status"] == "stopped"
    redis_conn.hset(CONSUMER_KEY + "gone", "heartbeatAt", time.time())  # the same one, heard from again
    body = lms_health(web)
    assert body["status"] == "degraded" and 59 < body["uptime"] < 70


def test_worker_false_makes_consume_rabbit_consume_nothing_and_say_so(
    rabbit_names, publisher, redis_conn, web, tmp_path
):
    log_path = tmp_path / "consumer.log"
    process = start_manage("consume_rabbit", log_path=log_path, env=subprocess_env(rabbit_names) | {"WORKER": "false"})
    try:
        wait_for(lambda: "WORKER=false: consuming nothing from RabbitMQ" in log_path.read_text(), 30, "the log line")
        otp_queue = settings.CONFIG.rabbitmq_queue_name
        publisher.publish(otp_queue, {"email": "erin@example.net", "otp": "493817", "jobId": "idle-1"})
        declared = publisher.channel.queue_declare(otp_queue, passive=True).method
        assert (declared.message_count, declared.consumer_count) == (1, 0), "the OTP waits in RabbitMQ"
        assert process.poll() is None, "idle, not exited: a process manager must not restart it in a loop"
        assert rq_items(redis_conn, "notifications_high") == []
        assert lms_health(web)["status"] == "stopped"
    finally:
        returncode = stop(process)
    assert returncode == 0 and "WORKER=false: stopped" in log_path.read_text()
