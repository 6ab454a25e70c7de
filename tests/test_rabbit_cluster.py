"""A three-node RabbitMQ cluster with quorum queues: the node leading the queues stops while
`manage.py consume_rabbit` drains 10,000 messages, and every message becomes exactly one job.

The cluster is the test's own (testbeds/rabbit_cluster.py: three nodes, their own names, ports
and epmd), never the shared broker. The consumer is configured only by its environment, as an
operator configures it: RABBITMQ_URL lists the three nodes, RABBITMQ_QUEUE_TYPE=quorum.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pika
import pytest
from pika.exceptions import AMQPError

from supworker.rabbit import topology
from testbeds.rabbit_cluster import RabbitCluster
from tests.helpers import rq_items, start_manage, stop, wait_for
from tests.ingest_fixtures import subprocess_env

pytest_plugins = ["tests.ingest_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MESSAGES = 10_000
USER = "0f9b7a52-66c4-4d1c-9f0e-8e0b7c3a1d42"
RQ_QUEUES = ("notifications_high", "notifications")


@pytest.fixture
def cluster(tmp_path) -> Iterator[RabbitCluster]:
    with RabbitCluster(tmp_path / "rabbit") as nodes:
        yield nodes


PUBLISHERS = 4  # the messenger's API processes: each waits for every confirm, so they publish side by side


class Messenger(threading.Thread):
    """Publishes the pushes numbered `numbers` to one node, each persistent and confirmed, as one
    of the messenger's API processes does; a publish that fails (its node busy electing a
    leader) is published again."""

    def __init__(self, url: str, exchange: str, numbers: range):
        super().__init__(daemon=True)
        self.url, self.exchange, self.numbers = url, exchange, numbers
        self.published: list[str] = []
        self.retried = 0

    def run(self) -> None:
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        channel = None
        for n in self.numbers:
            job_id = f"cluster-{n}"
            body = json.dumps({"type": "push", "jobId": job_id, "userId": USER, "title": "t", "body": f"{n}"})
            while True:
                try:
                    if channel is None:
                        channel = pika.BlockingConnection(pika.URLParameters(self.url)).channel()
                        channel.confirm_delivery()
                    channel.basic_publish(self.exchange, "notification.push", body, properties, mandatory=True)
                    break
                except AMQPError:
                    self.retried += 1
                    channel = None
                    time.sleep(0.2)
            self.published.append(job_id)


def consumer_node(cluster: RabbitCluster) -> str:
    """The node the consumer's connection is on, by the server port RabbitMQ lists for it."""
    running = next(node for node in cluster.nodes if node.running)
    asked = cluster.rabbitmqctl("list_connections", "port", "client_properties", "--formatter", "json", node=running)
    listed = json.loads(asked)
    ports = [
        connection["port"]
        for connection in listed
        if "supworker consumer" in json.dumps(connection["client_properties"])
    ]
    assert len(ports) == 1, f"one consumer connection, found {listed}"
    return next(node.name for node in cluster.nodes if node.amqp_port == ports[0])


def test_the_leader_node_stops_while_the_consumer_drains_and_every_message_is_one_job(
    cluster, settings, rabbit_names, redis_conn, tmp_path
):
    shared = settings.CONFIG  # for the fixtures' clean-up on the shared broker, which the names are of
    settings.CONFIG = dataclasses.replace(shared, rabbitmq_url=cluster.url_list(), rabbitmq_queue_type="quorum")
    env = subprocess_env(rabbit_names) | {"RABBITMQ_URL": cluster.url_list(), "RABBITMQ_QUEUE_TYPE": "quorum"}
    log = tmp_path / "consumer.log"
    consumer = start_manage("consume_rabbit", log_path=log, env=env)
    try:
        wait_for(lambda: "consuming from" in log.read_text(), 60, "the consumer to declare its queues and consume")
        queue = next(s.queue for s in topology.sources() if s.binding == "notification.#")
        leader = cluster.leader(queue)
        # The consumer declared the queues, so they are led from its node (client-local leader
        # placement): stopping that node takes both the leader and the consumer's connection.
        assert consumer_node(cluster) == leader

        survivor = next(url for node, url in zip(cluster.nodes, cluster.urls, strict=True) if node.name != leader)
        exchange = settings.CONFIG.rabbitmq_exchange
        messengers = [Messenger(survivor, exchange, range(n, MESSAGES, PUBLISHERS)) for n in range(PUBLISHERS)]
        for messenger in messengers:
            messenger.start()
        wait_for(lambda: len(rq_items(redis_conn, *RQ_QUEUES)) >= 2_000, 120, "the consumer to drain a part")
        cluster.stop_node(leader)
        for messenger in messengers:
            messenger.join(300)
            assert not messenger.is_alive(), "the messenger finished publishing"
        wait_for(lambda: len(rq_items(redis_conn, *RQ_QUEUES)) >= MESSAGES, 180, "every message enqueued")
        assert cluster.leader(queue) != leader, "a surviving node leads the queue"
        assert consumer_node(cluster) != leader, "the consumer reconnected to a surviving node by itself"
        otp = rabbit_names["RABBITMQ_QUEUE_NAME"]
        # The OTP queue keeps the LMS declaration: a classic queue, on the stopped node. The
        # consumer left it out (saying so), drained the others, and takes it up once it is back.
        assert f"queue {otp} is unavailable, left out until it is back" in log.read_text()
        cluster.start_node(leader)
        wait_for(lambda: f"queue {otp} is available again" in log.read_text(), 60, "the OTP queue consumed again")
    finally:
        settings.CONFIG = shared
        assert stop(consumer) == 0
    jobs = Counter(item["job_id"] for item in rq_items(redis_conn, *RQ_QUEUES))
    published = [job for messenger in messengers for job in messenger.published]
    assert len(published) == MESSAGES
    assert set(jobs) == set(published)
    assert [job for job, count in jobs.items() if count > 1] == [], "each message one job, redelivered or not"
    output = log.read_text()
    assert "RabbitMQ connection lost" in output and output.count("consuming from") >= 2
