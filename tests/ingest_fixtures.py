"""Fixtures for tests of ingestion: a RabbitMQ namespace per test, a running consumer, and
servers of a test's own (a Redis, or a Redis and a RabbitMQ) for the tests that stop them.

Each test gets its own exchange, queue prefix and OTP queue name, so tests never see each
other's messages (or a benchmark's) on the shared broker; they are deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

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
from tests.testenv import ROOT, SLOT


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


# Messages a publishing transaction commits at once (see publish_committed).
COMMIT_EVERY = 1000


def publish_committed(messages: list[tuple[str, bytes]]) -> None:
    """Publish (routing key, body) pairs as persistent messages to the test's exchange, in
    transactions of COMMIT_EVERY: RabbitMQ answers a commit once it holds every message of it
    (persisted, like a confirm). A confirm awaited per message costs a disk flush each, about
    5 ms here: 20,000 of them were most of a test's two minutes."""
    connection = connect()
    channel = connection.channel()
    topology.declare(channel)
    channel.tx_select()
    persistent = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    for start in range(0, len(messages), COMMIT_EVERY):
        for routing_key, body in messages[start : start + COMMIT_EVERY]:
            channel.basic_publish(settings.CONFIG.rabbitmq_exchange, routing_key, body, persistent)
        channel.tx_commit()
    connection.close()


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


# --- a Redis and a RabbitMQ of the test's own -----------------------------------------------
@dataclasses.dataclass
class OwnServers:
    env: dict[str, str]  # what scripts/services.sh reads to run this set instead of the shared one
    redis_url: str
    amqp_url: str

    def services(self, verb: str, *servers: str) -> None:
        done = subprocess.run(
            [str(ROOT / "scripts/services.sh"), verb, *servers],
            env=os.environ | self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"services.sh {verb} {' '.join(servers)}: {done.stderr}"

    def restart(self, server: str, down_for: float = 0.0) -> None:
        self.services("down", server)
        time.sleep(down_for)
        self.services("up", server)


@pytest.fixture
def own_servers(settings) -> Iterator[OwnServers]:
    # Not under pytest's tmp_path: the rabbitmq user must reach the data directory.
    var = Path(tempfile.mkdtemp(prefix=f"supworker-faults{SLOT}-"))
    var.chmod(0o755)
    redis_port, amqp_port = free_port(), free_port()
    servers = OwnServers(
        env={
            "SUPWORKER_VAR": str(var),
            "SUPWORKER_REDIS_PORT": str(redis_port),
            "SUPWORKER_AMQP_PORT": str(amqp_port),
            "SUPWORKER_AMQP_DIST_PORT": str(free_port()),
            "SUPWORKER_EPMD_PORT": str(free_port()),
            "SUPWORKER_RABBIT_NODE": f"supworker-faults{SLOT}-{uuid.uuid4().hex[:6]}@localhost",
        },
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        amqp_url=f"amqp://guest:guest@127.0.0.1:{amqp_port}/%2F",
    )
    try:
        servers.services("up", "redis", "rabbitmq")
        # The test process too (publishing, queue depths, RQ registries) talks to these.
        settings.CONFIG = dataclasses.replace(
            settings.CONFIG, redis_url=servers.redis_url, rabbitmq_url=servers.amqp_url
        )
        yield servers
    finally:
        subprocess.run(
            [str(ROOT / "scripts/services.sh"), "down", "rabbitmq", "redis"],
            env=os.environ | servers.env,
            capture_output=True,
            timeout=180,
        )
        shutil.rmtree(var, ignore_errors=True)
