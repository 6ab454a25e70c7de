"""RabbitMQ quorum queues: RABBITMQ_QUEUE_TYPE, RABBITMQ_DELIVERY_LIMIT, several RABBITMQ_URL
nodes, and the move of live classic queues to quorum queues (manage.py rabbit_move_queues).

These run on the shared single-node broker, under names of the test's own; the three-node
cluster is tests/test_rabbit_cluster.py.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections import Counter
from urllib.parse import urlsplit

import pytest

from supworker.config import load_config
from supworker.env import ConfigError
from supworker.rabbit import topology
from supworker.rabbit.connection import connect
from supworker.rabbit.publisher import Publisher
from tests.fault_proxy import FaultProxy
from tests.helpers import rq_items, run_manage, start_manage, stop, wait_for
from tests.ingest_fixtures import dead_letters, queue_depth, subprocess_env
from tests.test_cutover import RQ_QUEUES, Stream, messenger_id, messenger_message
from tests.testenv import ROOT

pytest_plugins = ["tests.ingest_fixtures"]

ENV = {"SUPWORKER_ENV_FILE": "/nonexistent/.env"}


def test_rabbitmq_url_may_list_nodes_and_each_bad_one_is_named():
    nodes = "amqp://u:p@10.0.0.1:5672/%2F, amqps://u:p@rabbit-2:5671/vh ,amqp://u:p@rabbit-3/%2F"
    config = load_config(ENV | {"RABBITMQ_URL": nodes})
    assert config.rabbitmq_urls == [
        "amqp://u:p@10.0.0.1:5672/%2F",
        "amqps://u:p@rabbit-2:5671/vh",
        "amqp://u:p@rabbit-3/%2F",
    ]
    assert (config.rabbitmq_queue_type, config.rabbitmq_delivery_limit) == ("classic", 20), "the defaults"

    with pytest.raises(ConfigError) as excinfo:
        load_config(
            ENV | {"RABBITMQ_URL": "amqp://a:5672/%2F,http://b/,amqp://c:99999/", "RABBITMQ_QUEUE_TYPE": "stream"}
        )
    problems = excinfo.value.problems
    assert "RABBITMQ_URL must be a amqp/amqps URL, got scheme 'http'" in problems
    assert any(p.startswith("RABBITMQ_URL is not a valid URL") for p in problems), "the bad port, in the same report"
    assert "RABBITMQ_QUEUE_TYPE must be one of classic, quorum, got 'stream'" in problems


def test_a_dead_node_first_in_rabbitmq_url_costs_a_refused_connection_not_a_failure(settings):
    from tests.ingest_fixtures import free_port

    dead = [f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F" for _ in range(3)]
    # Only the URL changes: the test's own names stay, so nothing of another run is touched.
    settings.CONFIG = dataclasses.replace(settings.CONFIG, rabbitmq_url=",".join([*dead, settings.CONFIG.rabbitmq_url]))
    for _ in range(4):  # the order is shuffled: nearly every one of these tries a dead node first
        connection = connect("test")
        assert connection.is_open
        connection.close()


def test_a_publisher_whose_node_goes_away_publishes_once_more_on_another(settings, rabbit_names, caplog):
    """Two "nodes": two proxies to the one broker, each of which can be cut like a node's network."""
    broker = urlsplit(settings.CONFIG.rabbitmq_urls[0])
    nodes = [FaultProxy(broker.hostname or "127.0.0.1", broker.port or 5672) for _ in range(2)]
    direct = settings.CONFIG
    try:
        listed = ",".join(f"amqp://guest:guest@127.0.0.1:{node.port}/%2F" for node in nodes)
        settings.CONFIG = dataclasses.replace(settings.CONFIG, rabbitmq_url=listed)
        with Publisher() as publisher:
            used = next(node for node in nodes if node.open_connections)
            used.cut()  # its node is gone: the connection is reset, and connecting to it refused
            publisher.publish("cleanup.sessions", {"type": "sessions", "jobId": "after-the-cut"})
        queue = next(s.queue for s in topology.sources() if s.binding == "cleanup.#")
        assert queue_depth(queue) == 1, "published once, on the node that answers"
        assert "RabbitMQ connection lost while publishing" in caplog.text
    finally:
        settings.CONFIG = direct  # for the fixture's clean-up, once the "nodes" are gone
        for node in nodes:
            node.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_live_classic_queues_move_to_quorum_queues_and_every_message_becomes_one_job(
    rabbit_names, redis_conn, tmp_path
):
    env = subprocess_env(rabbit_names)
    quorum = env | {"RABBITMQ_QUEUE_TYPE": "quorum"}
    declare_classic_topology()
    stream = Stream(messenger_message)
    before = stream.publish(300)  # into classic queues (declared by the classic default)
    parked = park_dead_letters(5)

    # A consumer started with quorum settings before the move says what to do, and takes nothing.
    early = start_manage("consume_rabbit", log_path=tmp_path / "early.log", env=quorum)
    wait_for(lambda: "rabbit_move_queues" in (tmp_path / "early.log").read_text(), 30, "the consumer to name the move")
    assert stop(early) == 0
    assert "PRECONDITION_FAILED" in (tmp_path / "early.log").read_text()

    stream.start()  # the messenger goes on publishing through the move (mandatory: never unroutable)
    wait_for(lambda: stream.count() > 350, 30, "the stream to flow")
    moved = run_manage("rabbit_move_queues", env=quorum, timeout=120)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    published = stream.finish()
    assert len(published) > len(before)
    for queue in topology.own_queues():
        assert f"{queue.name}: moved" in moved.stdout
    assert "are quorum queues" in moved.stdout

    again = run_manage("rabbit_move_queues", env=quorum, timeout=60)
    assert again.returncode == 0 and "moved" not in again.stdout.replace("queues are", ""), again.stdout
    assert again.stdout.count(": already") == len(topology.own_queues())
    types = queue_types()
    for queue in topology.own_queues():
        kind, arguments = types[queue.name]
        assert kind == "quorum", f"{queue.name} is {kind}"
        if queue.name != topology.dead_letter_queue():
            assert arguments["x-delivery-limit"] == 20 and arguments["x-dead-letter-strategy"] == "at-least-once"
    assert types[rabbit_names["RABBITMQ_QUEUE_NAME"]][0] == "classic", "the LMS queue keeps the LMS declaration"
    tag = rabbit_names["RABBITMQ_QUEUE_PREFIX"]
    assert not [n for n in types if n.startswith(tag) and n.endswith(".moving")], "no temporary queue is left"

    consumer = start_manage("consume_rabbit", log_path=tmp_path / "consumer.log", env=quorum)
    try:
        wait_for(lambda: len(rq_items(redis_conn, *RQ_QUEUES)) >= len(published), 120, "every message enqueued")
        wait_for(lambda: queue_ready(topology.own_queues()[1:]) == 0, 30, "the domain queues to drain")
    finally:
        assert stop(consumer) == 0
    jobs = Counter(messenger_id(item["payload"]) for item in rq_items(redis_conn, *RQ_QUEUES))
    assert set(jobs) == set(published), "every message published before and during the move is a job"
    assert [job for job, count in jobs.items() if count > 1] == [], "and only one"
    assert sorted(body for _, body in dead_letters()) == sorted(parked), "the dead letters moved with their queue"


def declare_classic_topology() -> None:
    """What a release before RABBITMQ_QUEUE_TYPE declared (and the default still does)."""
    connection = connect()
    topology.declare(connection.channel())
    connection.close()


def park_dead_letters(count: int) -> list[bytes]:
    """Messages in the dead-letter queue, as a consumer parks them (through the dead-letter exchange)."""
    bodies = [json.dumps({"type": "push", "poison": n}).encode() for n in range(count)]
    with Publisher() as publisher:
        for body in bodies:
            publisher.publish_to(topology.dead_letter_exchange(), "notification.push", body)
    return bodies


def queue_types() -> dict[str, tuple[str, dict]]:
    """Each queue's type and arguments, as `rabbitmqctl list_queues` shows them to an operator."""
    listed = subprocess.run(
        [str(ROOT / "scripts/services.sh"), "rabbitmqctl", "-q", "list_queues", "name", "type", "arguments",
         "--formatter", "json"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return {q["name"]: (q["type"], {a[0]: a[2] for a in q["arguments"]}) for q in json.loads(listed.stdout)}


def queue_ready(queues: list[topology.OwnQueue]) -> int:
    connection = connect()
    channel = connection.channel()
    ready = sum(channel.queue_declare(q.name, passive=True).method.message_count for q in queues)
    connection.close()
    return ready
