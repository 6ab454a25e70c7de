"""The risky steps of docs/cutover.md, on the real broker while messages keep coming.

The Node services' RabbitMQ side is played by amqplib (tests/node/node_consumer.js), declaring
its queues as they do; supworker runs as `manage.py consume_rabbit` and `manage.py rqworker`
processes. Every message carries an id of its own, not a jobId (the messenger's API sends none),
and at the end each id was handled by exactly one side, once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pika
import pytest
from django.conf import settings

from supworker.rabbit.connection import connect
from supworker.rabbit.consumer import Consumer
from supworker.rabbit.publisher import Publisher
from tests.helpers import rq_items, run_manage, start_manage, stop, wait_for
from tests.ingest_fixtures import queue_depth, start_in_thread, subprocess_env
from tests.node_stand_ins import NodeConsumer
from tests.notification_servers import SmtpServer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RQ_QUEUES = ("media_high", "media", "notifications_high", "notifications")
USER = str(uuid.uuid4())


def confirming(connection: pika.BlockingConnection):
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


class Stream(threading.Thread):
    """Publishes continuously in a thread of its own, each message persistent, mandatory and
    confirmed (an unroutable one raises), until `finish()`."""

    def __init__(self, message: Callable[[str], tuple[str, str, dict]]):
        super().__init__(daemon=True)
        self.message = message  # id -> (exchange, routing key, body)
        self.published: list[str] = []
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def publish(self, count: int) -> list[str]:
        """Publish `count` messages now, from the calling thread; their ids once all are confirmed."""
        connection = connect()
        try:
            return self._publish(confirming(connection), count)
        finally:
            connection.close()

    def _publish(self, channel, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            message_id = str(uuid.uuid4())
            exchange, routing_key, body = self.message(message_id)
            properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
            channel.basic_publish(exchange, routing_key, json.dumps(body).encode(), properties, mandatory=True)
            ids.append(message_id)
        with self._lock:
            self.published += ids
        return ids

    def run(self) -> None:
        connection = connect()
        try:
            channel = confirming(connection)
            while not self._halt.is_set():
                self._publish(channel, 1)
                time.sleep(0.003)  # about 200 a second: a stream, not a flood, on two shared cores
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc
        finally:
            connection.close()

    def count(self) -> int:
        with self._lock:
            return len(self.published)

    def halt(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)

    def finish(self) -> list[str]:
        """Stop publishing; every id published, in order."""
        self.halt()
        assert self.error is None, f"a publish failed: {self.error!r}"
        return list(self.published)


def messenger_message(message_id: str) -> tuple[str, str, dict]:
    """A media or a push job, as the messenger's API publishes them, told apart by `message_id`."""
    exchange = settings.CONFIG.rabbitmq_exchange
    if int(message_id[0], 16) % 2:
        return exchange, "media.image", {"type": "image", "s3Key": f"media/{message_id}.jpg", "userId": USER,
                                         "messageId": message_id}  # fmt: skip
    return exchange, "notification.push", {"type": "push", "userId": USER, "title": "t", "body": "b",
                                           "data": {"seq": message_id}}  # fmt: skip


def messenger_id(payload: dict) -> str:
    return payload.get("messageId") or payload["data"]["seq"]


def enqueued_jobs(redis_conn) -> int:
    from rq import Queue

    return sum(Queue(name, connection=redis_conn).count for name in RQ_QUEUES)


@pytest.fixture
def node_queues(rabbit_names) -> Iterator[dict[str, tuple[str, str]]]:
    """The Node worker's own queues (names of its choosing): queue -> (domain, pattern); deleted afterwards."""
    tag = rabbit_names["RABBITMQ_QUEUE_PREFIX"]
    queues = {
        f"{tag}_node_media": ("media", "media.#"),
        f"{tag}_node_notifications": ("notification", "notification.#"),
    }
    yield queues
    connection = connect()
    channel = connection.channel()
    for queue in queues:
        channel.queue_delete(queue)
    connection.close()


def binding(action: str, queue: str, pattern: str, env: dict[str, str]) -> None:
    result = run_manage("rabbit_binding", action, queue, pattern, env=env)
    assert result.returncode == 0, result.stderr
    assert queue in result.stdout


def test_routing_keys_move_from_the_node_workers_queues_to_supworker_each_message_handled_once(
    rabbit_names, node_queues, redis_conn, tmp_path
):
    env = subprocess_env(rabbit_names)
    prefix = rabbit_names["RABBITMQ_QUEUE_PREFIX"]
    own = {"media": f"{prefix}.media", "notification": f"{prefix}.notifications"}
    # The owner's arguments differ from supworker's (no dead-letter exchange, a priority): adopted
    # queues are only ever declared passively, so nothing clashes.
    node = NodeConsumer(
        [f"{queue}={pattern}" for queue, (_, pattern) in node_queues.items()],
        tmp_path, rabbit_names["RABBITMQ_EXCHANGE"], arguments={"x-max-priority": 10},
    )  # fmt: skip
    stream = Stream(messenger_message)
    stream.start()
    consumers = []
    try:
        wait_for(lambda: len(node.handled()) >= 20, 30, "the Node worker to handle the first messages")

        # 1. supworker consumes the Node worker's queues too; its own are not bound yet.
        adopt = ",".join(f"{queue}:{domain}" for queue, (domain, _) in node_queues.items())
        consumers.append(start_manage("consume_rabbit", log_path=tmp_path / "consumer1.log",
                                      env=env | {"RABBITMQ_ADOPT_QUEUES": adopt}))  # fmt: skip
        node_before = len(node.handled())
        wait_for(lambda: enqueued_jobs(redis_conn) >= 20 and len(node.handled()) >= node_before + 20, 60,
                 "both sides to take messages from the Node worker's queues")  # fmt: skip

        # 2. The Node worker stops, deliveries in hand unacked: they go back to its queues.
        node.freeze()
        assert node.stop()["abandoned"] == 2 * 10, "each queue's prefetch window was in flight"

        # 3. Each routing key moves: supworker's queue bound first, then the Node queue unbound.
        window = []
        for queue, (domain, pattern) in node_queues.items():
            binding("bind", own[domain], pattern, env)
            window += stream.publish(20)  # both queues bound: each of these is routed to both
            binding("unbind", queue, pattern, env)
        for queue in node_queues:
            wait_for(lambda q=queue: queue_depth(q) == 0, 60, f"{queue} to be drained by supworker")

        # 4. supworker restarted without RABBITMQ_ADOPT_QUEUES: its own queues alone.
        assert stop(consumers[-1]) == 0
        consumers.append(start_manage("consume_rabbit", log_path=tmp_path / "consumer2.log", env=env))
        after_restart = stream.count()
        wait_for(lambda: stream.count() >= after_restart + 100, 30, "more messages after the restart")
        published = stream.finish()
        wait_for(lambda: len(rq_items(redis_conn, *RQ_QUEUES)) + len(node.handled()) >= len(published), 60,
                 "every message to be handled by one side", interval=1)  # fmt: skip
    finally:
        stream.halt()
        node.kill()
        assert [stop(process) for process in consumers] == [0] * len(consumers)

    by_node = Counter(messenger_id(json.loads(record["body"])) for record in node.handled())
    by_supworker = Counter(messenger_id(item["payload"]) for item in rq_items(redis_conn, *RQ_QUEUES))
    assert [i for i, n in by_node.items() if n > 1] == [], "the Node worker handled a message twice"
    assert [i for i, n in by_supworker.items() if n > 1] == [], "supworker enqueued a message twice"
    assert set(by_node) & set(by_supworker) == set(), "a message was handled by both sides"
    assert set(by_node) | set(by_supworker) == set(published), "a message was lost"
    assert set(window) <= set(by_supworker)
    assert all(queue_depth(q) == 0 for q in [*node_queues, *own.values()])


def otp_message(message_id: str) -> tuple[str, str, dict]:
    """An OTP e-mail in the LMS format, published to the queue by name; the id is in the address."""
    code = str(int(message_id[:8], 16) % 900_000 + 100_000)
    return "", settings.CONFIG.rabbitmq_queue_name, {"email": f"otp-{message_id}@example.com", "otp": code}


def otp_id(address: str) -> str:
    return address.removeprefix("otp-").removesuffix("@example.com")


def test_supworker_joins_the_lms_workers_otp_queue_and_takes_over_every_otp_delivered_once(rabbit_names, tmp_path):
    otp_queue = rabbit_names["RABBITMQ_QUEUE_NAME"]
    smtp = SmtpServer()
    smtp.start()
    env = subprocess_env(rabbit_names) | {
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_SECURITY": "none", "EMAIL_RATE_PER_SECOND": "0",
    }  # fmt: skip
    # The LMS worker owns the queue first: amqplib declares it, durable and nothing else.
    node = NodeConsumer([otp_queue], tmp_path, rabbit_names["RABBITMQ_EXCHANGE"], prefetch=5)
    stream = Stream(otp_message)
    stream.start()
    processes = []
    try:
        wait_for(lambda: len(node.handled()) >= 20, 30, "the LMS worker to handle the first OTPs")
        processes.append(start_manage("rqworker", "notifications_high", "notifications", "--with-scheduler",
                                      log_path=tmp_path / "worker.log", env=env))  # fmt: skip
        processes.append(start_manage("consume_rabbit", log_path=tmp_path / "consumer.log", env=env))
        node_before = len(node.handled())
        wait_for(lambda: smtp.count() >= 20 and len(node.handled()) >= node_before + 20, 60,
                 "both sides to deliver OTPs from the one queue")  # fmt: skip

        node.freeze()  # stuck mid-send: its whole window unacked when it stops
        assert node.stop()["abandoned"] == 5
        after_stop = stream.count()
        wait_for(lambda: stream.count() >= after_stop + 100, 30, "more OTPs after the LMS worker stopped")
        published = stream.finish()
        wait_for(lambda: smtp.count() + len(node.handled()) >= len(published), 90,
                 "every OTP to be delivered by one side", interval=1)  # fmt: skip
    finally:
        stream.halt()
        node.kill()
        assert [stop(process) for process in processes] == [0] * len(processes)
        smtp.stop()

    by_node = Counter(otp_id(json.loads(record["body"])["email"]) for record in node.handled())
    by_supworker = Counter(otp_id(rcpt) for _, rcpts in smtp.envelopes for rcpt in rcpts)
    assert [i for i, n in by_node.items() if n > 1] == [], "the LMS worker handled an OTP twice"
    assert [i for i, n in by_supworker.items() if n > 1] == [], "supworker sent an OTP twice"
    assert set(by_node) & set(by_supworker) == set(), "an OTP was handled by both sides"
    assert set(by_node) | set(by_supworker) == set(published), "an OTP was lost"
    for message in smtp.messages:
        (address,) = message["To"].addresses
        _, _, sent = otp_message(otp_id(address.addr_spec))
        assert sent["otp"] in message.get_body(("plain",)).get_content()
    assert queue_depth(otp_queue) == 0


def test_an_adopted_queue_that_does_not_exist_is_named_and_the_others_are_consumed(
    rabbit_names, node_queues, redis_conn, settings, caplog
):
    misspelt, existing = list(node_queues)
    connection = connect()
    channel = connection.channel()
    channel.exchange_declare(settings.CONFIG.rabbitmq_exchange, exchange_type="topic", durable=True)
    channel.queue_declare(existing, durable=True)
    channel.queue_bind(existing, settings.CONFIG.rabbitmq_exchange, routing_key="notification.#")
    connection.close()
    settings.CONFIG = dataclasses.replace(
        settings.CONFIG, rabbitmq_adopt_queues={misspelt: "media", existing: "notification"}
    )
    caplog.set_level(logging.ERROR, logger="supworker.rabbit.consumer")
    consumer = Consumer(redis=redis_conn, name="adopting")
    thread = start_in_thread(consumer)
    try:
        with Publisher() as publisher:
            publisher.publish("notification.push", {"type": "push", "userId": USER, "title": "t", "body": "b"})
        wait_for(lambda: rq_items(redis_conn, "notifications_high"), 30, "the push from the adopted queue")
    finally:
        consumer.stop()
        thread.join(30)
    assert f"RABBITMQ_ADOPT_QUEUES names the queue '{misspelt}', which does not exist" in caplog.text


def test_rabbit_binding_names_a_queue_that_does_not_exist(rabbit_names):
    result = run_manage("rabbit_binding", "bind", "no_such_queue", "media.#", env=subprocess_env(rabbit_names))
    assert result.returncode != 0
    assert "queue 'no_such_queue' does not exist" in result.stderr
