"""consume_rabbit when things break: Redis stops, RabbitMQ restarts, SIGTERM arrives mid-stream.

The consumer runs as `manage.py consume_rabbit`, a separate process, as in production. Every
test publishes numbered jobs and checks at the end that each number reached RQ exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from redis import Redis
from rq import SimpleWorker

from supworker.models import JobRun
from supworker.rabbit.connection import connect
from tests.helpers import rq_items, start_manage, stop, wait_for
from tests.ingest_fixtures import publish_committed, queue_depth, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
USER = str(uuid.uuid4())


def email(number: int) -> bytes:
    body = {"type": "email", "jobId": f"mail-{number}", "userId": USER, "title": "t", "body": "b"}
    return json.dumps(body | {"email": "ann@example.com"}).encode()


def publish_bulk(count: int, start: int = 0) -> None:
    publish_committed([("notification.email", email(number)) for number in range(start, start + count)])


def assert_each_job_exactly_once(redis: Redis, count: int) -> None:
    items = rq_items(redis, "notifications", "notifications_high")
    ids = [item["job_id"] for item in items]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} job(s) enqueued twice"
    assert set(ids) == {f"mail-{n}" for n in range(count)}, f"{count - len(set(ids))} job(s) lost"


def notifications_queue() -> str:
    return f"{settings.CONFIG.rabbitmq_queue_prefix}.notifications"


def test_redis_stopped_mid_stream_nothing_is_acked_and_all_runs_once_it_returns(rabbit_names, own_redis, tmp_path):
    env = subprocess_env(rabbit_names) | {"REDIS_URL": own_redis.url, "PREFETCH_COUNT": "50"}
    consumer = start_manage("consume_rabbit", log_path=tmp_path / "consumer.log", env=env)
    try:
        publish_bulk(300)
        wait_for(lambda: len(rq_items(own_redis, "notifications")) >= 50, 30, "the first jobs in Redis")
        subprocess.run(["redis-cli", "-p", str(own_redis.connection_pool.connection_kwargs["port"]), "shutdown"])
        publish_bulk(300, start=300)
        log = tmp_path / "consumer.log"
        wait_for(lambda: "Redis unavailable" in log.read_text(), 30, "the consumer to notice")
        # Messages are not acked while Redis is away: they wait in RabbitMQ, but for those the
        # consumer holds unacked (at most its prefetch window); the final check finds none lost.
        waiting = wait_for(lambda: queue_depth(notifications_queue()), 10, "messages waiting in RabbitMQ")
        assert waiting >= 300 - 50, "every message published while Redis is down waits in RabbitMQ"
        assert consumer.poll() is None, "the consumer keeps running"

        own_redis.restart()
        wait_for(lambda: len(rq_items(own_redis, "notifications")) >= 600, 60, "all jobs after Redis returns")
        assert queue_depth(notifications_queue()) == 0
    finally:
        assert stop(consumer) == 0
    assert_each_job_exactly_once(own_redis, 600)


def test_rabbitmq_restarted_mid_stream_the_consumer_reconnects_and_loses_nothing(own_servers, tmp_path):
    # A RabbitMQ of the test's own (and a Redis beside it): the shared broker serves other tests.
    env = subprocess_env({}) | {
        "RABBITMQ_URL": own_servers.amqp_url, "REDIS_URL": own_servers.redis_url, "PREFETCH_COUNT": "100"
    }  # fmt: skip
    redis = Redis.from_url(own_servers.redis_url)
    consumer = start_manage("consume_rabbit", log_path=tmp_path / "consumer.log", env=env)
    try:
        publish_bulk(4000)
        wait_for(lambda: rq_items(redis, "notifications"), 30, "the consumer to start draining")
        own_servers.services("rabbitmqctl", "stop_app")  # the node's VM stays: a quicker restart
        own_servers.services("rabbitmqctl", "start_app")
        publish_bulk(1000, start=4000)
        wait_for(lambda: len(rq_items(redis, "notifications")) >= 5000, 90, "every job after the restart")
        log = (tmp_path / "consumer.log").read_text()
        assert "RabbitMQ connection lost" in log, "the restart really cut the consumer off"
        assert consumer.poll() is None
    finally:
        assert stop(consumer) == 0
    assert_each_job_exactly_once(redis, 5000)


def test_sigterm_mid_stream_finishes_the_batch_in_hand_and_loses_nothing(rabbit_names, redis_conn, tmp_path):
    publish_bulk(20000)
    env = subprocess_env(rabbit_names) | {"PREFETCH_COUNT": "200"}
    first = start_manage("consume_rabbit", log_path=tmp_path / "first.log", env=env)
    wait_for(lambda: rq_items(redis_conn, "notifications"), 30, "the consumer to start draining")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert "stopped" in Path(tmp_path / "first.log").read_text()
    left = queue_depth(notifications_queue())
    taken = len(rq_items(redis_conn, "notifications"))
    assert left > 0, "SIGTERM should have arrived mid-stream"
    assert left + taken == 20000, "every message is either enqueued or back in RabbitMQ"

    second = start_manage("consume_rabbit", log_path=tmp_path / "second.log", env=env)
    try:
        wait_for(lambda: queue_depth(notifications_queue()) == 0, 60, "the second consumer to drain the rest")
        wait_for(lambda: len(rq_items(redis_conn, "notifications")) >= 20000, 30, "all jobs in RQ")
    finally:
        assert stop(second) == 0
    assert_each_job_exactly_once(redis_conn, 20000)


def test_under_a_backlog_a_push_published_after_100_emails_starts_first(rabbit_names, consumer, redis_conn):
    publish_bulk(100)
    connection = connect()
    push = {"type": "push", "jobId": "push-late", "userId": USER, "title": "t", "body": "b", "fcmToken": "tok"}
    connection.channel().basic_publish(settings.CONFIG.rabbitmq_exchange, "notification.push", json.dumps(push))
    connection.close()
    wait_for(lambda: len(rq_items(redis_conn, "notifications", "notifications_high")) == 101, 30, "101 jobs in RQ")

    from rq import Queue

    queues = [Queue(name, connection=redis_conn) for name in ("notifications_high", "notifications")]
    SimpleWorker(queues, connection=redis_conn).work(burst=True)
    started = dict(JobRun.objects.values_list("job_id", "started_at"))
    assert len(started) == 101
    emails = [started[f"mail-{n}"] for n in range(100)]
    assert started["push-late"] < min(emails), "the push starts before every waiting e-mail"
    assert emails == sorted(emails), "within one priority, first in first out"
