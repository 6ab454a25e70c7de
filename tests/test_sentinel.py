"""Redis through Sentinel: every process follows a failover of the primary without a restart.

The test starts its own primary, two replicas and three sentinels on free ports (private
directories, never the shared Redis), and runs `manage.py consume_rabbit` and two
`manage.py rqworker --with-scheduler` configured only by their environment (REDIS_SENTINELS;
REDIS_URL points nowhere; REDIS_WAIT_REPLICAS=1). The primary is failed over twice: by
`SENTINEL FAILOVER`, then by kill -9. Push notifications go to the loopback FCM server (some
answer UNAVAILABLE once, so their retries go through the workers' scheduler after each
failover) and cleanups to PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from supworker import jobtypes
from supworker.config import load_config
from supworker.env import ConfigError
from supworker.models import DeadLetter, JobRun
from supworker.queues import rq_queues_setting
from supworker.rabbit import topology
from supworker.rabbit.consumer import Consumer
from testbeds.redis_sentinel_set import MASTER, RedisSet
from tests.helpers import rq_items, start_manage, stop, wait_for
from tests.ingest_fixtures import free_port, queue_depth, start_in_thread, subprocess_env
from tests.test_faults_restart import publish

pytest_plugins = ["tests.notification_fixtures"]

USER = str(uuid.uuid4())


def test_sentinel_settings_are_checked_and_win_over_redis_url():
    environ = {"SUPWORKER_ENV_FILE": "/nonexistent/.env", "REDIS_URL": "redis://127.0.0.1:1/0"}
    config = load_config(environ | {"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380", "REDIS_PASSWORD": "pw"})
    sentinel = config.redis_sentinel
    assert sentinel is not None
    assert (sentinel.sentinels, sentinel.master, sentinel.password) == (
        [("10.0.0.1", 26379), ("::1", 26380)],
        "mymaster",
        "pw",
    )
    queues = rq_queues_setting(config.redis_url, sentinel)
    assert {q["SENTINELS"] == sentinel.sentinels and q["MASTER_NAME"] == MASTER for q in queues.values()} == {True}
    assert load_config(environ).redis_sentinel is None

    with pytest.raises(ConfigError) as excinfo:
        load_config(environ | {"REDIS_SENTINELS": "sentinel1,h:99999,h:26379", "REDIS_SENTINEL_MASTER": "a b"})
    problems = str(excinfo.value)
    assert "REDIS_SENTINELS must be host:port items" in problems and "'sentinel1'" in problems
    assert "'h:99999'" in problems, "every bad item is named at once"
    assert "REDIS_SENTINEL_MASTER" in problems

    with pytest.raises(ConfigError) as excinfo:
        load_config(environ | {"REDIS_URL": "", "REDIS_SENTINELS": "h:26379", "REDIS_DB": "16"})
    assert excinfo.value.problems == ["REDIS_DB must be between 0 and 15, got 16"], "named once"


# --- a primary, two replicas and three sentinels of the test's own ----------------------------
@pytest.fixture
def redis_set(tmp_path) -> Iterator[RedisSet]:
    servers = RedisSet(tmp_path / "redis")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


# --- acknowledged means replicated ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_redis_wait_replicas_acks_a_batch_only_once_a_replica_has_it(settings, rabbit_names, own_redis, tmp_path):
    settings.CONFIG = dataclasses.replace(settings.CONFIG, redis_wait_replicas=1, redis_wait_timeout_ms=100)
    messages = phase("w", pushes=0, cleanups=3)
    consumer = Consumer(redis=own_redis, name="waiting-consumer")
    thread = start_in_thread(consumer)
    replica = tmp_path / "replica"
    replica.mkdir()
    try:
        publish(messages)
        # A lone primary: the jobs are written, but no replica has them, so nothing is acked.
        wait_for(lambda: "REDIS_WAIT_REPLICAS" in consumer.stats.lastError, 30, "the consumer to wait for a replica")
        assert consumer.stats.receivedMessages == 0, "nothing acked without a replica"

        subprocess.run(
            ["redis-server", "--port", str(free_port()), "--bind", "127.0.0.1", "--dir", str(replica), "--daemonize",
             "yes", "--pidfile", str(replica / "pid"), "--save", "", "--repl-diskless-sync-delay", "0",
             "--replicaof", "127.0.0.1", str(own_redis.connection_pool.connection_kwargs["port"])],
            check=True,
        )  # fmt: skip
        wait_for(lambda: consumer.stats.receivedMessages == len(messages), 60, "the batch to be acked once replicated")
        assert sum(queue_depth(source.queue) for source in topology.sources()) == 0
        enqueued = [item["job_id"] for item in rq_items(own_redis, "cleanup")]
        assert sorted(enqueued) == sorted(body["jobId"] for _, body in messages), "each job enqueued exactly once"
    finally:
        consumer.stop()
        thread.join(30)
        if (replica / "pid").exists():
            os.kill(int((replica / "pid").read_text()), signal.SIGKILL)


# --- the failover test -----------------------------------------------------------------------
COMMANDS = {
    "consumer": ["consume_rabbit"],
    "notifications": ["rqworker", "notifications", "--with-scheduler"],
    "cleanup": ["rqworker", "cleanup", "--with-scheduler"],
}


def push(tag: str, n: int) -> tuple[str, dict]:
    return ("notification.push", {"type": "push", "jobId": f"{tag}-push-{n}", "userId": USER, "title": "Dana",
            "body": f"push {n}", "fcmToken": f"{tag}-token-{n}"})  # fmt: skip


def phase(tag: str, pushes: int, cleanups: int) -> list[tuple[str, dict]]:
    cleanup = [("cleanup.sessions", {"type": "sessions", "jobId": f"{tag}-cleanup-{n}"}) for n in range(cleanups)]
    return [push(tag, n) for n in range(pushes)] + cleanup


def succeeded(messages: list[tuple[str, dict]]) -> bool:
    ids = [body["jobId"] for _, body in messages]
    return JobRun.objects.filter(job_id__in=ids, status="succeeded").count() == len(ids)


def assert_nothing_left(redis: Redis) -> None:
    """Nothing scheduled or failed, and nothing queued or started that has work left. A job
    finished on the old primary in the moment between the replica's promotion and the sentinels
    announcing it keeps its (replicated) entry in StartedJobRegistry: RQ's registry cleanup takes
    it for abandoned after its heartbeat's 70 s and queues it again (on a slow machine, before
    this check), and running it skips its items, all succeeded. Any other such job is stuck."""
    for spec in jobtypes.queues():
        queue = Queue(spec.name, connection=redis)
        left = {"scheduled": ScheduledJobRegistry(queue=queue).count, "failed": FailedJobRegistry(queue=queue).count}
        assert left == dict.fromkeys(left, 0), f"RQ queue {spec.name}: {left}"
        waiting = [*queue.get_job_ids(), *StartedJobRegistry(queue=queue).get_job_ids()]
        for job in Job.fetch_many(waiting, connection=redis):
            if job is None:  # an id whose job has expired: RQ skips it
                continue
            items = [item["job_id"] for item in job.args[0]]
            done = JobRun.objects.filter(job_id__in=items, status="succeeded").count()
            assert done == len(items), f"RQ job {job.id} of {spec.name} is stuck with unfinished items"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_every_process_follows_two_failovers_and_every_job_completes(rabbit_names, redis_set, fcm_server, tmp_path):
    env = subprocess_env(rabbit_names) | redis_set.env | {
        "REDIS_URL": "redis://127.0.0.1:1/0",  # never used: REDIS_SENTINELS wins
        "REDIS_WAIT_REPLICAS": "1",  # nothing acked that only the old primary holds
        "REDIS_WAIT_TIMEOUT_MS": "500",
        "FCM_ENDPOINT": fcm_server.url,
        "FCM_ACCESS_TOKEN": fcm_server.token,
        "FCM_PROJECT_ID": "sup-loopback",
        "LOG_DIR": str(tmp_path / "logs"),
    }  # fmt: skip
    processes = {name: start_manage(*cmd, log_path=tmp_path / f"{name}.log", env=env) for name, cmd in COMMANDS.items()}
    try:
        before = phase("a", pushes=20, cleanups=2)
        publish(before)
        wait_for(lambda: succeeded(before), 60, "the jobs before any failover")

        # A graceful failover: the replica becomes the primary, the old primary its replica.
        first_primary = redis_set.primary_port()
        redis_set.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER)
        failed_over_at = time.monotonic()
        after_failover = phase("b", pushes=20, cleanups=2)
        for _, body in after_failover[:5]:
            fcm_server.script[body["fcmToken"]] = [("UNAVAILABLE", 1)]  # retried through the scheduler
        publish(after_failover[10:])  # during the failover
        wait_for(lambda: redis_set.primary_port() != first_primary, 30, "the sentinels to promote the replica")
        publish(after_failover[:10])  # after it
        wait_for(lambda: succeeded(after_failover), 90, "the jobs published during and after the first failover")
        stall = time.monotonic() - failed_over_at

        # The primary killed: the sentinels notice it is down and promote the other node.
        wait_for(lambda: redis_set.replicas_ready(1), 30, "the old primary to follow the new one")
        killed = redis_set.kill_primary()
        killed_at = time.monotonic()
        after_kill = phase("c", pushes=20, cleanups=2)
        for _, body in after_kill[:3]:
            fcm_server.script[body["fcmToken"]] = [("UNAVAILABLE", 1)]
        publish(after_kill)
        wait_for(lambda: succeeded(after_kill), 90, "the jobs published after the primary was killed")
        print(f"stall: SENTINEL FAILOVER {stall:.1f} s, kill -9 {time.monotonic() - killed_at:.1f} s")
        assert redis_set.primary_port() != killed

        assert {name: p.returncode for name, p in processes.items() if p.poll() is not None} == {}, "none restarted"
        messages = before + after_failover + after_kill
        tokens = Counter(request["message"]["token"] for request in fcm_server.requests)
        retried = {body["fcmToken"] for _, body in after_failover[:5] + after_kill[:3]}
        pushed = {body["fcmToken"] for key, body in messages if key == "notification.push"}
        assert tokens == {token: 2 if token in retried else 1 for token in pushed}, "each push sent once (+1 retry)"
        assert DeadLetter.objects.count() == 0
        assert_nothing_left(redis_set.primary())
        # A batch whose WAIT found no replica in time was not acked: RabbitMQ delivers it again once
        # the consumer's backoff ends, and the redelivery (its jobs already ran) is acked as a duplicate.
        wait_for(lambda: sum(queue_depth(source.queue) for source in topology.sources()) == 0, 30,
                 "every message acked, none left in RabbitMQ")  # fmt: skip
    finally:
        codes = {name: stop(process, timeout=30) for name, process in processes.items()}
    assert codes == dict.fromkeys(processes, 0), "every process stops cleanly"
