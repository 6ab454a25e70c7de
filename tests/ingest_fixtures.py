"""Fixtures for tests of ingestion: a RabbitMQ namespace per test, and a running consumer.

Each test gets its own exchange, queue prefix and OTP queue name, so tests never see each
other's messages (or a benchmark's) on the shared broker; they are deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator

import pika
import pytest
from django.conf import settings
from django.db import connections
from redis import Redis

from supworker.rabbit import topology
from supworker.rabbit.connection import connect
from supworker.rabbit.consumer import Consumer
from supworker.rabbit.publisher import Publisher
from tests.helpers import wait_for


@pytest.fixture
def rabbit_names(settings) -> Iterator[dict[str, str]]:
    tag = f"t{uuid.uuid4().hex[:8]}"
    settings.CONFIG = dataclasses.replace(
        settings.CONFIG,
        rabbitmq_exchange=f"{tag}_exchange",
        rabbitmq_queue_prefix=tag,
        rabbitmq_queue_name=f"{tag}_otp",
        # Retries in tests wait tens of milliseconds, not seconds.
        base_delay_ms=50,
        max_delay_ms=200,
    )
    names = {
        "RABBITMQ_EXCHANGE": settings.CONFIG.rabbitmq_exchange,
        "RABBITMQ_QUEUE_PREFIX": tag,
        "RABBITMQ_QUEUE_NAME": settings.CONFIG.rabbitmq_queue_name,
        "BASE_DELAY_MS": "50",
        "MAX_DELAY_MS": "200",
    }
    yield names
    connection = connect()
    channel = connection.channel()
    for source in topology.sources():
        channel.queue_delete(source.queue)
    channel.queue_delete(topology.dead_letter_queue())
    channel.exchange_delete(topology.dead_letter_exchange())
    channel.exchange_delete(settings.CONFIG.rabbitmq_exchange)
    connection.close()


@pytest.fixture
def publisher(rabbit_names) -> Iterator[Publisher]:
    with Publisher() as p:
        yield p


def start_in_thread(consumer: Consumer) -> threading.Thread:
    """Run a consumer in a thread of the test process until it is stopped."""

    def run() -> None:
        try:
            consumer.run()
        finally:
            # The thread's own database connection (dead letters): left open, it keeps the
            # test database from being dropped at the end of the session.
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def consumer(rabbit_names, redis_conn) -> Iterator[Consumer]:
    """A consumer running in a thread of the test process, stopped after the test."""
    running = Consumer(redis=redis_conn, name="test-consumer")
    thread = start_in_thread(running)
    yield running
    running.stop()
    thread.join(30)
    assert not thread.is_alive(), "the consumer did not stop"


def queue_depth(queue: str) -> int:
    connection = connect()
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def dead_letters() -> list[tuple[pika.BasicProperties, bytes]]:
    """Drain the dead-letter queue: (properties, body) of each message parked there."""
    connection = connect()
    channel = connection.channel()
    found = []
    while True:
        method, properties, body = channel.basic_get(topology.dead_letter_queue(), auto_ack=True)
        if method is None:
            break
        found.append((properties, body))
    connection.close()
    return found


def subprocess_env(names: dict[str, str]) -> dict[str, str]:
    """Environment for a `manage.py` child: the test's RabbitMQ names and the test database."""
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return names | {"DATABASE_URL": url}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, so it can be stopped without touching the others."""
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()

    def start() -> None:
        subprocess.run(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--daemonize", "yes",
             "--appendonly", "yes", "--save", "", "--logfile", str(data / "redis.log")],
            check=True,
        )  # fmt: skip
        wait_for(lambda: _pings(port), 10, "the test's Redis to start")

    start()
    server = Redis(port=port)
    server.restart = start
    server.url = f"redis://127.0.0.1:{port}/0"
    yield server
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def _pings(port: int) -> bool:
    try:
        return Redis(port=port, socket_connect_timeout=0.5).ping()
    except OSError:
        return False
    except Exception:  # noqa: BLE001 - redis raises its own ConnectionError while starting
        return False
