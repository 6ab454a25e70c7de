"""Redis failover while jobs flow: what each one costs, on a private Sentinel set.

A primary, two replicas and three sentinels of the bench's own (testbeds/redis_sentinel_set.py),
and the processes as deployed, each started from its Procfile line and configured only by its
environment: `manage.py consume_rabbit`, two `manage.py rqworker notifications`, one `rqworker
cleanup` (each runs RQ's scheduler, the default), with REDIS_SENTINELS pointing at the set and
REDIS_URL at nothing. Jobs flow at 22 a second (10 push
notifications to the tests' loopback FCM server, in a thread here, and a `cleanup.sessions`
every 0.5 s) while Redis fails over:

a. `SENTINEL FAILOVER`: a replica promoted, the primary demoted;
b. kill -9 of the primary: the sentinels notice after down-after-milliseconds (1 s), promote a replica;
c. acknowledged means replicated: both replicas frozen (SIGSTOP) and their links to the primary
   cut (CLIENT KILL TYPE replica: on one machine a killed process's socket buffers would still
   reach a frozen replica, as a dead host's would not), LAG_SECONDS of flow and a burst written to
   the primary, the primary killed at once, the replicas resumed and one promoted.
Each with REDIS_WAIT_REPLICAS=0 (the default: the consumer acks once the primary has the jobs),
then each again with 1 (acked once a replica has them too; the consumer is started again with it).

Counted from what the jobs did, not from supworker's statistics: a push's effect is a request at
the FCM server (it counts them per token, one token per job), a cleanup's its succeeded record
in job_runs; every start of a job is seen by a trigger on job_runs (the runner's records.start
inserts a `running` row for every run, even one that then skips an item already done).
- stall: the longest pause between two job completions from the failover on (for c, from the kill);
- retried: jobs started more than once; duplicated: pushes the FCM server received twice;
- lost: jobs with no effect once nothing of them is left in RabbitMQ or in RQ's queues.

Isolation: its own exchange and queue names, its own Redis servers, its own database
(`<name>_bench`, as bench_load; the trigger and the bench's rows are removed at the end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pika
import psycopg2
from redis import Redis, RedisError

from bench import deployed
from bench.bench_notifications import PROJECT, TOKEN, _with_channel, topology_declare, topology_delete
from bench.table import Table
from testbeds.polling import wait_for
from testbeds.rabbit_cluster import RabbitCluster
from testbeds.redis_sentinel_set import MASTER, RedisSet

TICK_SECONDS, PUSHES_PER_TICK = 0.5, 10  # 20 pushes a second
CLEANUP_EVERY = 1  # tick: 2 cleanups a second
NOTIFICATION_WORKERS = 2  # `make run` starts 5; one alone would be busy half the time
RATE = PUSHES_PER_TICK / TICK_SECONDS + 1 / (CLEANUP_EVERY * TICK_SECONDS)
BEFORE_SECONDS = 1.5  # of flow before the fault
AFTER_SECONDS = 7.0  # of flow after it (stalls measured here: 1 to 5 s)
LAG_SECONDS = 2.0  # c: replicas frozen before the primary dies
BURST_PUSHES, BURST_CLEANUPS = 200, 20  # c: written to the primary right before it dies
SETTLE_IDLE_SECONDS = 5.0  # nothing pending and nothing completing this long: what is missing is lost
SETTLE_MAX_SECONDS = 60.0
USER = str(uuid.uuid4())

# Every INSERT into job_runs, including those ON CONFLICT turns into an update or nothing: a
# BEFORE INSERT trigger sees each proposed row, so a job run again is seen even when it skips.
AUDIT = """
CREATE UNLOGGED TABLE bench_job_runs_seen (job_id text, status text);
CREATE FUNCTION bench_job_runs_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_job_runs_seen (job_id, status) VALUES (NEW.job_id, NEW.status); RETURN NEW; END $$;
CREATE TRIGGER bench_job_runs_seen BEFORE INSERT ON job_runs FOR EACH ROW EXECUTE FUNCTION bench_job_runs_seen();
"""
DROP_AUDIT = """
DROP TRIGGER IF EXISTS bench_job_runs_seen ON job_runs;
DROP FUNCTION IF EXISTS bench_job_runs_seen();
DROP TABLE IF EXISTS bench_job_runs_seen;
"""


@dataclasses.dataclass
class Outcome:
    jobs: int
    stall: float
    normal_gap: float  # the longest pause between completions before the fault
    latency: float  # median seconds from publish to completion before the fault
    retried: int
    duplicated: int
    lost: int
    stuck: int  # neither done nor lost: left in RQ's started registry (RQ re-runs such a job after 70 s)
    failed: int  # neither done nor lost: failed for good, dead-lettered


def message(prefix: str, n: int, cleanup: bool) -> tuple[str, dict]:
    job_id = f"{prefix}-{n}"
    if cleanup:
        return "cleanup.sessions", {"type": "sessions", "jobId": job_id}
    return "notification.push", {"type": "push", "jobId": job_id, "userId": USER, "title": "Failover",
                                 "body": f"push {n}", "fcmToken": job_id}  # fmt: skip


def publish(channel, exchange: str, messages: list[tuple[str, dict]]) -> None:
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    for routing_key, body in messages:
        channel.basic_publish(exchange, routing_key, json.dumps(body).encode(), properties)


class Flow(threading.Thread):
    """Publishes PUSHES_PER_TICK pushes every TICK_SECONDS, and a cleanup every CLEANUP_EVERY ticks,
    each tick in one AMQP transaction, until stopped; keeps the jobs' ids and when each was published.

    In ticks, as traffic of this rate comes: the consumer makes one RQ job of a tick's pushes.
    One RQ job a push would be 20 forks a second, more than the notification workers here run,
    and a queue growing behind them would hide the failover's stall."""

    def __init__(self, config, prefix: str):
        super().__init__(name=f"flow-{prefix}", daemon=True)
        self.config, self.prefix = config, prefix
        self.published: list[tuple[str, bool]] = []  # (job id, is a cleanup)
        self.published_at: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.config.rabbitmq_urls[0]))
        channel = connection.channel()
        channel.tx_select()  # a tick's jobs committed at once: published for sure, and seen together
        start, tick = time.monotonic(), 0
        try:
            while not self.stopping.is_set():
                jobs = [(len(self.published) + n, False) for n in range(PUSHES_PER_TICK)]
                if tick % CLEANUP_EVERY == CLEANUP_EVERY - 1:
                    jobs.append((len(self.published) + len(jobs), True))
                publish(channel, self.config.rabbitmq_exchange, [message(self.prefix, n, c) for n, c in jobs])
                channel.tx_commit()
                now = time.time()
                for n, cleanup in jobs:
                    self.published.append((f"{self.prefix}-{n}", cleanup))
                    self.published_at[f"{self.prefix}-{n}"] = now
                tick += 1
                self.stopping.wait(max(0.0, start + tick * TICK_SECONDS - time.monotonic()))
        finally:
            connection.close()

    def stop(self) -> list[tuple[str, bool]]:
        self.stopping.set()
        self.join(30)
        return self.published


class Bench:
    def __init__(self, config, work: Path, database_url: str):
        from tests.notification_servers import FcmServer

        self.config, self.work, self.database_url = config, work, database_url
        self.redis_set = RedisSet(work / "redis")
        self.fcm = FcmServer(token=TOKEN, keep_requests=False)
        self.db = psycopg2.connect(database_url)
        self.db.autocommit = True
        self.processes: dict[str, deployed.Process] = {}
        self.wait_replicas = 0
        self.probes = 0
        self.cluster: RabbitCluster | None = None  # d: the processes' RabbitMQ is a cluster of the bench's own

    # --- the processes ------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        tag = self.config.rabbitmq_queue_prefix
        # REDIS_URL is never used: REDIS_SENTINELS wins.
        return (
            deployed.isolated_env(tag, "redis://127.0.0.1:1/0", **self.redis_set.env)
            | {
                "REDIS_WAIT_REPLICAS": str(self.wait_replicas),
                "REDIS_WAIT_TIMEOUT_MS": "500",
                "DATABASE_URL": self.database_url,
                "FCM_ENDPOINT": self.fcm.url,
                "FCM_ACCESS_TOKEN": TOKEN,
                "FCM_PROJECT_ID": PROJECT,
                "LOG_DIR": str(self.work / "logs"),
            }
            | ({"RABBITMQ_URL": self.cluster.url_list(), "RABBITMQ_QUEUE_TYPE": "quorum"} if self.cluster else {})
        )

    def start(self, kind: str, name: str) -> None:
        self.processes[name] = deployed.start(kind, self.env(), self.work, name=name)

    def start_all(self) -> None:
        for n in range(NOTIFICATION_WORKERS):
            self.start("notifications", f"notifications{n}")
        self.start("cleanup", "cleanup")
        self.start("consumer", "consumer")

    def consumer_with(self, wait_replicas: int) -> None:
        """REDIS_WAIT_REPLICAS is read at start: a consumer started again with the new value."""
        if wait_replicas != self.wait_replicas:
            deployed.stop([self.processes.pop("consumer")])
            self.wait_replicas = wait_replicas
            self.start("consumer", "consumer")

    def check_alive(self) -> None:
        dead = {name: p.popen.returncode for name, p in self.processes.items() if not p.alive()}
        if dead:
            raise RuntimeError(f"process(es) exited: {dead}; see {self.work}")

    def stop_all(self) -> None:
        deployed.stop(list(self.processes.values()))

    # --- what the jobs did ------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with self.db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def done(self, jobs: list[tuple[str, bool]]) -> set[str]:
        """The jobs whose effect happened: a push received by the FCM server, a cleanup succeeded."""
        cleanups = [job_id for job_id, cleanup in jobs if cleanup]
        succeeded = self.query(
            "SELECT job_id FROM job_runs WHERE job_id = ANY(%s) AND status = 'succeeded'", [cleanups]
        )
        with self.fcm.lock:
            pushed = {job_id for job_id, cleanup in jobs if not cleanup and self.fcm.attempts.get(job_id)}
        return pushed | {job_id for (job_id,) in succeeded}

    def probe(self) -> None:
        """A push and a cleanup through every process: the pipeline works before a scenario starts."""
        self.probes += 1
        jobs = [message(f"{self.config.rabbitmq_queue_prefix}-probe{self.probes}", n, n == 1) for n in range(2)]
        _with_channel(self.config, lambda channel: publish(channel, self.config.rabbitmq_exchange, jobs))
        ids = [(body["jobId"], routing_key.startswith("cleanup")) for routing_key, body in jobs]
        wait_for(lambda: len(self.done(ids)) == 2 or self.check_alive(), 90, "a probe job through every process")

    def pending(self) -> int:
        """Messages still in the bench's RabbitMQ queues, jobs still queued or scheduled in RQ."""
        from rq import Queue
        from rq.registry import ScheduledJobRegistry

        from supworker import jobtypes
        from supworker.rabbit import topology

        waiting = 0

        def count(channel) -> None:
            nonlocal waiting
            for source in topology.sources():
                waiting += channel.queue_declare(source.queue, passive=True).method.message_count

        _with_channel(self.config, count)
        try:
            redis = self.redis_set.primary()
            for spec in jobtypes.queues():
                queue = Queue(spec.name, connection=redis)
                waiting += queue.count + ScheduledJobRegistry(queue=queue).count
        except RedisError:
            return waiting + 1  # no primary to ask yet: something may be waiting there
        return waiting

    def started_in_rq(self) -> set[str]:
        """Job ids carried by RQ jobs left in a started registry of the primary."""
        from rq import Queue
        from rq.job import Job
        from rq.registry import StartedJobRegistry

        from supworker import jobtypes

        redis = self.redis_set.primary()
        ids: set[str] = set()
        for spec in jobtypes.queues():
            registry = StartedJobRegistry(queue=Queue(spec.name, connection=redis))
            for job in Job.fetch_many(registry.get_job_ids(), connection=redis):
                if job is not None:
                    ids.update(item["job_id"] for item in job.args[0])
        return ids

    def settle(self, jobs: list[tuple[str, bool]]) -> set[str]:
        """Wait until every job is done, or nothing is pending nor completing any more."""
        last, moved_at, deadline = -1, time.monotonic(), time.monotonic() + SETTLE_MAX_SECONDS
        while time.monotonic() < deadline:
            self.check_alive()
            done = self.done(jobs)
            if len(done) == len(jobs):
                return done
            if len(done) != last or self.pending():
                last, moved_at = len(done), time.monotonic()
            elif time.monotonic() - moved_at > SETTLE_IDLE_SECONDS:
                return done
            time.sleep(0.5)
        return self.done(jobs)

    def measure(self, jobs: list[tuple[str, bool]], flow: Flow, fault_at: float, flow_end: float) -> Outcome:
        ids = [job_id for job_id, _ in jobs]
        done = self.settle(jobs)
        finished = dict(
            self.query(
                "SELECT job_id, extract(epoch FROM finished_at)::float FROM job_runs"
                " WHERE job_id = ANY(%s) AND status = 'succeeded'",
                [ids],
            )
        )
        before = sorted(at for at in finished.values() if at <= fault_at)
        after = sorted(at for at in finished.values() if at > fault_at)
        published = flow.published_at
        latencies = [
            at - published[job_id] for job_id, at in finished.items() if at <= fault_at and job_id in published
        ]
        starts = self.query(
            "SELECT job_id FROM bench_job_runs_seen WHERE job_id = ANY(%s) AND status = 'running'"
            " GROUP BY job_id HAVING count(*) > 1",
            [ids],
        )
        with self.fcm.lock:
            duplicated = sum(1 for job_id, cleanup in jobs if not cleanup and self.fcm.attempts.get(job_id, 0) > 1)
        missing = set(ids) - done
        stuck = missing & self.started_in_rq() if missing else set()
        failed_for_good = "SELECT job_id FROM job_runs WHERE job_id = ANY(%s) AND status = 'failed'"
        failed = {job_id for (job_id,) in self.query(failed_for_good, [list(missing)])}
        return Outcome(
            jobs=len(jobs),
            stall=_longest_gap([before[-1] if before else fault_at, *after], starting_before=flow_end),
            normal_gap=_longest_gap(before),
            latency=statistics.median(latencies) if latencies else float("nan"),
            retried=len(starts),
            duplicated=duplicated,
            lost=len(missing - stuck - failed),
            stuck=len(stuck),
            failed=len(failed),
        )

    # --- the scenarios ------------------------------------------------------------------------
    def scenario(self, key: str, fault: Callable[[str], tuple[float, list[tuple[str, bool]]]]) -> Outcome:
        wait_for(lambda: self.redis_set.replicas_ready(2), 60, "both replicas in sync")
        self.probe()
        prefix = f"{self.config.rabbitmq_queue_prefix}-{key}"
        flow = Flow(self.config, prefix)
        flow.start()
        time.sleep(BEFORE_SECONDS)
        fault_at, extra = fault(prefix)
        time.sleep(AFTER_SECONDS)
        jobs = flow.stop() + extra
        return self.measure(jobs, flow, fault_at, time.time())

    def sentinel_failover(self, prefix: str) -> tuple[float, list[tuple[str, bool]]]:
        self.redis_set.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER)
        return time.time(), []

    def kill_primary(self, prefix: str) -> tuple[float, list[tuple[str, bool]]]:
        killed = self.redis_set.kill_primary()
        fault_at = time.time()
        self._back_as_replica_later(killed)
        return fault_at, []

    def kill_lagging_primary(self, prefix: str) -> tuple[float, list[tuple[str, bool]]]:
        """Replicas frozen and cut off, a burst written (and acked, unless REDIS_WAIT_REPLICAS), the primary killed."""
        from supworker.enqueue import SEEN_PREFIX

        primary = self.redis_set.primary_port()
        replicas = [port for port in self.redis_set.nodes if port != primary]
        for port in replicas:
            self.redis_set.pause(port)
        Redis(port=primary).execute_command("CLIENT", "KILL", "TYPE", "replica")
        time.sleep(LAG_SECONDS)
        burst = [message(f"{prefix}burst", n, n < BURST_CLEANUPS) for n in range(BURST_PUSHES + BURST_CLEANUPS)]
        _with_channel(self.config, lambda channel: publish(channel, self.config.rabbitmq_exchange, burst))
        keys = [f"{SEEN_PREFIX}id:{body['jobId']}" for _, body in burst]
        written = lambda: Redis(port=primary).exists(*keys) == len(keys)  # noqa: E731
        wait_for(written, 30, "the burst written to the primary", interval=0.01)
        killed = self.redis_set.kill_primary()
        fault_at = time.time()
        for port in replicas:
            self.redis_set.resume(port)
        self._back_as_replica_later(killed)
        return fault_at, [(body["jobId"], routing_key.startswith("cleanup")) for routing_key, body in burst]

    def on_rabbit_cluster(self) -> None:
        """d: the processes started again on a three-node cluster with quorum queues; the bench
        publishes to a node that does not lead them (the consumer declared them: they are led from
        its node), as the messenger's API on another node would."""
        from supworker.rabbit import topology

        self.cluster = RabbitCluster(self.work / "rabbit")
        self.cluster.start()
        self.stop_all()
        self.start_all()
        queue = next(s.queue for s in topology.sources() if s.binding == "notification.#")
        wait_for(lambda: self._leader(queue), 60, "the consumer to declare its quorum queues")
        leader = self._leader(queue)
        survivor = next(u for n, u in zip(self.cluster.nodes, self.cluster.urls, strict=True) if n.name != leader)
        self.config = dataclasses.replace(self.config, rabbitmq_url=survivor, rabbitmq_queue_type="quorum")

    def _leader(self, queue: str) -> str | None:
        assert self.cluster is not None
        try:
            return self.cluster.leader(queue)
        except (LookupError, RuntimeError):
            return None

    def stop_rabbit_leader(self, prefix: str) -> tuple[float, list[tuple[str, bool]]]:
        from supworker.rabbit import topology

        assert self.cluster is not None
        leader = self.cluster.leader(next(s.queue for s in topology.sources() if s.binding == "notification.#"))
        self.cluster.stop_node(leader)
        return time.time(), []

    def primary_port(self) -> int | None:
        try:
            return self.redis_set.primary_port()
        except RedisError:  # the sentinels know no primary for the moment
            return None

    def _back_as_replica_later(self, port: int) -> None:
        """The killed node returns as a replica once another primary is announced, as an operator would."""

        def restart() -> None:
            with contextlib.suppress(AssertionError):
                wait_for(lambda: self.primary_port() not in (None, port), 60, "a new primary")
                self.redis_set.restart_as_replica(port)

        threading.Thread(target=restart, daemon=True).start()


def _longest_gap(times: list[float], starting_before: float = float("inf")) -> float:
    """The longest pause between consecutive times, of the pauses that begin before `starting_before`
    (after the flow stopped, a late retry's completion is no sign of a stall)."""
    return max((b - a for a, b in itertools.pairwise(times) if a < starting_before), default=0.0)


def run() -> Table:
    from django.conf import settings

    original = settings.CONFIG
    tag = f"fo{uuid.uuid4().hex[:6]}"
    settings.CONFIG = config = dataclasses.replace(
        original, rabbitmq_exchange=f"{tag}_exchange", rabbitmq_queue_prefix=tag, rabbitmq_queue_name=f"{tag}_otp"
    )
    database_url = deployed.bench_database(settings.DATABASES["default"])
    work = Path(tempfile.mkdtemp(prefix="supworker-failover-"))
    bench = Bench(config, work, database_url)
    rows: list[list[object]] = []
    try:
        bench.query(DROP_AUDIT + AUDIT)
        _with_channel(config, topology_declare)
        bench.redis_set.start()
        bench.fcm.start()
        bench.start_all()
        outcomes = []
        for wait_replicas in (0, 1):  # the consumer is started again once, with REDIS_WAIT_REPLICAS=1
            bench.consumer_with(wait_replicas)
            for label, key, fault in [
                ("a. SENTINEL FAILOVER", "a", bench.sentinel_failover),
                ("b. kill -9 of the primary", "b", bench.kill_primary),
                ("c. primary killed right after a burst, replicas lagging", "c", bench.kill_lagging_primary),
            ]:
                outcome = bench.scenario(f"{key}{wait_replicas}", fault)
                outcomes.append(outcome)
                rows.append([label, wait_replicas, outcome.jobs, outcome.stall, outcome.retried, outcome.duplicated,
                             outcome.lost])  # fmt: skip
        bench.on_rabbit_cluster()
        outcome = bench.scenario("d1", bench.stop_rabbit_leader)
        outcomes.append(outcome)
        rows.append(["d. RabbitMQ: the node leading the quorum queues stops", 1, outcome.jobs, outcome.stall,
                     outcome.retried, outcome.duplicated, outcome.lost])  # fmt: skip
    finally:
        bench.stop_all()
        bench.redis_set.stop()
        if bench.cluster is not None:
            bench.cluster.stop()
        with contextlib.suppress(Exception):
            bench.fcm.stop()
        with contextlib.suppress(Exception):
            _with_channel(config, topology_delete)
        bench.query(DROP_AUDIT)
        for table in ("job_runs", "notifications", "dead_letters"):
            bench.query(f"DELETE FROM {table} WHERE job_id LIKE %s", [tag + "-%"])  # noqa: S608 - our names
        bench.db.close()
        settings.CONFIG = original
    print(f"(process output, logs and the Redis servers' files in {work})")
    return _table(rows, outcomes)


def _table(rows: list[list[object]], outcomes: list[Outcome]) -> Table:
    stuck, failed = sum(o.stuck for o in outcomes), sum(o.failed for o in outcomes)
    return Table(
        title=f"Failover while {RATE:.0f} jobs/s flow (consumer, {NOTIFICATION_WORKERS} notification and 1"
        " cleanup workers; Redis: 1 primary, 2 replicas, 3 sentinels; d: RabbitMQ, 3 nodes, quorum queues)",
        columns=["failover", "REDIS_WAIT_REPLICAS", "jobs", "stall s", "retried", "duplicated", "lost"],
        rows=rows,
        notes=[
            "stall: longest pause between two job completions from the failover (c: the kill) on; before it the"
            f" longest was {max(o.normal_gap for o in outcomes):.2f} s, and a job took"
            f" {min(o.latency for o in outcomes):.2f} to {max(o.latency for o in outcomes):.2f} s (median) from"
            " publish to done.",
            "retried: jobs started more than once (seen by a trigger on job_runs); duplicated: pushes the FCM server"
            " received twice;",
            "lost: no effect (push not received, cleanup not succeeded) and nothing of the job left in RabbitMQ or RQ.",
            f"c: replicas frozen {LAG_SECONDS:.0f} s with their links cut, then a burst of {BURST_PUSHES} pushes and"
            f" {BURST_CLEANUPS} cleanups written to the primary, which is killed at once.",
            *([f"{stuck} job(s) left in RQ's started registry (RQ runs them again after 70 s), not counted lost."]
              if stuck else []),
            *([f"{failed} job(s) failed for good (dead-lettered), not counted lost."] if failed else []),
        ],
    )  # fmt: skip
