"""consume_rabbit: RabbitMQ messages in, RQ jobs out, nothing lost and nothing twice.

Messages are taken with a prefetch window and handled in small batches: a batch leaves
CONSUMER_FLUSH_MS after its first message, or once it holds PREFETCH_COUNT; when the workers it
is bound for are all busy (their RQ queues already have jobs waiting, so it would wait anyway),
it keeps filling for up to CONSUMER_MAX_LINGER_MS (fewer, larger RQ jobs: a forking worker pays
a fork and its connections per RQ job, not per item). Every message of a batch is validated,
the valid ones are enqueued to RQ in one Redis transaction (see supworker.enqueue), the invalid
ones are republished to the dead-letter exchange with confirms, and only then is the batch acked
with one `multiple=True` ack. Whatever goes wrong before that ack leaves the messages unacked
in RabbitMQ, which redelivers them.

- Redis unreachable: the batch is not acked, the connection to RabbitMQ is closed (so the
  messages wait there, not here), and the consumer waits for Redis with backoff.
- RabbitMQ gone: reconnect with backoff; AMQP heartbeats detect a dead peer.
- stop(): cancel consumption, finish the batch in hand, ack it, close.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial

import pika
import psutil
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from pika.spec import Basic
from redis import Redis, RedisError
from rq import Queue

from supworker import jobtypes
from supworker.enqueue import Submission, enqueue
from supworker.envelope import Envelope
from supworker.masking import dead_letter_body, mask_payload
from supworker.models import DeadLetter
from supworker.payloads import InvalidMessage, parse_message, usable_message_id
from supworker.queues import redis_client
from supworker.rabbit import topology
from supworker.rabbit.connection import connect
from supworker.shutdown import requested_since
from supworker.stats import CONSUMER_KEY, CONSUMERS_KEY, memory_usage

log = logging.getLogger(__name__)

REPLICATION_MARK = "supworker:consumer-replicated:"  # + name: written before each WAIT


class NotReplicated(RedisError):
    """Fewer replicas than REDIS_WAIT_REPLICAS confirmed a batch: it must not be acked."""


# How often a queue RabbitMQ could not serve at connection (a classic queue whose node is down)
# is asked for again.
UNAVAILABLE_CHECK_S = 5.0

# A message without a jobId is recognised on redelivery by a fingerprint of its body, kept
# this long: identical anonymous messages within the window count as one job.
REDELIVERY_WINDOW = 3600


@dataclass
class Delivery:
    tag: int
    source: topology.Source
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool


@dataclass
class Stats:
    """What this consumer did with the messages it took: its intake. (The LMS worker's statistics,
    OTP e-mails delivered, failed and retried, are kept by the workers that send them:
    notifications/otp_stats.py.)"""

    receivedMessages: int = 0  # every message taken from RabbitMQ
    enqueuedJobs: int = 0  # messages that became RQ jobs
    rejectedMessages: int = 0  # invalid: dead-lettered with the reason
    duplicateMessages: int = 0  # a job already enqueued: acked, not enqueued again
    redeliveredMessages: int = 0  # delivered again by RabbitMQ (a connection dropped before their ack)
    ownEvents: int = 0  # our own media.processed/failed events, skipped
    startTime: float = field(default_factory=time.time)
    lastMessageAt: float = 0.0
    lastError: str = ""


class Backoff:
    # The ceiling bounds how long messages wait after RabbitMQ or Redis is back: a broker
    # restart takes 10-30 s, and a refused connection costs the server nothing.
    def __init__(self, first: float = 0.5, ceiling: float = 10.0):
        self.first, self.ceiling, self.tries = first, ceiling, 0

    def next(self) -> float:
        delay = min(self.first * 2**self.tries, self.ceiling)
        self.tries += 1
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - spreading reconnects

    def reset(self) -> None:
        self.tries = 0


class Consumer:
    def __init__(self, redis: Redis | None = None, name: str | None = None):
        config = settings.CONFIG
        self.config = config
        self.redis = redis or redis_client(
            config.redis_url,
            config.redis_sentinel,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = Stats()
        self.batch_limit = config.prefetch_count
        self.flush_after = config.consumer_flush_ms / 1000
        self.max_linger = config.consumer_max_linger_ms / 1000
        self._lingering = False  # the batch in hand waits for busy workers (see the module docstring)
        self._stopping = threading.Event()
        self._buffer: list[Delivery] = []
        self._buffer_since = 0.0
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._dead_channel: BlockingChannel | None = None
        self._next_heartbeat = 0.0
        self._received_at_heartbeat = 0
        self._process = psutil.Process()
        # The RQ queue keys each domain's job types are enqueued to (normal and high priority).
        self._rq_queue_keys: dict[str, tuple[str, ...]] = {}
        for job_type in jobtypes.job_types().values():
            names = (job_type.high_queue, job_type.queue)
            keys = tuple(Queue.redis_queue_namespace_prefix + name for name in names)
            self._rq_queue_keys[job_type.domain] = tuple(
                dict.fromkeys(self._rq_queue_keys.get(job_type.domain, ()) + keys)
            )

    # --- life cycle -----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the consumer to finish the batch in hand and return from run(); safe from a signal handler."""
        self._stopping.set()

    def run(self) -> None:
        backoff = Backoff()
        log.info("consumer %s starting; prefetch %d", self.name, self.batch_limit)
        while not self._stopping.is_set():
            try:
                self._consume(backoff)
            except RedisError as exc:
                self._failed(f"Redis unavailable: {exc}")
                self._wait_for_redis(backoff)
            except topology.QueueMismatch as exc:  # nothing to consume until an operator moves the queue
                self._failed(str(exc))
                self._stopping.wait(backoff.next())
            except (AMQPError, OSError) as exc:
                self._failed(f"RabbitMQ connection lost: {exc!r}")
                self._stopping.wait(backoff.next())
        with contextlib.suppress(RedisError):
            self.redis.srem(CONSUMERS_KEY, self.name)
        close_old_connections()
        connections.close_all()  # this thread's connection; a stopped consumer holds none open
        log.info("consumer %s stopped: %s", self.name, self._stats_line())

    def _consume(self, backoff: Backoff) -> None:
        # Registered on every (re)connection: a consumer started while Redis is down waits for
        # it instead of dying, and one whose Redis lost its data appears again.
        self.redis.sadd(CONSUMERS_KEY, self.name)
        self._connection = connect("consumer", heartbeat=30)
        self._channel = self._connection.channel()
        sources = self._present(topology.declare(self._channel))
        unavailable = [s for s in topology.sources() if not s.adopted and s not in sources]  # home node down
        self._channel.basic_qos(prefetch_count=self.batch_limit)
        self._dead_channel = self._connection.channel()
        self._dead_channel.confirm_delivery()
        tags = [self._channel.basic_consume(s.queue, partial(self._on_message, s)) for s in sources]
        log.info("consuming from %s", ", ".join(s.queue for s in sources))
        backoff.reset()
        self._save_stats(memory=True)  # monitoring sees a consumer at once, not at its first batch
        next_shutdown_check = next_unavailable_check = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_shutdown_check:  # POST /shutdown asks through Redis
                next_shutdown_check = time.monotonic() + 1.0
                if requested_since(self.stats.startTime):
                    log.warning("shutdown requested: finishing the batch in hand")
                    self.stop()
                    break
            wait = 0.5
            if self._buffer:
                wait = max(0.0, self._buffer_since + self._batch_window() - time.monotonic())
            self._connection.process_data_events(time_limit=wait)
            if self._buffer and (
                len(self._buffer) >= self.batch_limit or time.monotonic() - self._buffer_since >= self._batch_window()
            ):
                if not self._lingering and self.max_linger > self.flush_after and self._workers_busy():
                    self._lingering = True  # keep filling the batch: its workers are all busy
                else:
                    self._flush()
            if unavailable and time.monotonic() >= next_unavailable_check:
                next_unavailable_check = time.monotonic() + UNAVAILABLE_CHECK_S
                tags += self._consume_returned(unavailable, sources)
            self._heartbeat(sources)
        # Stopping: undispatched messages are returned to the queue by basic_cancel; the
        # batch in hand is finished and acked.
        for tag in tags:
            self._channel.basic_cancel(tag)
        if self._buffer:
            self._flush()
        self._connection.close()

    @staticmethod
    def _open(channel: BlockingChannel | None) -> BlockingChannel:
        """A channel of the current connection; only the consuming loop calls this, while connected."""
        if channel is None:
            raise RuntimeError("the consumer is not connected to RabbitMQ")
        return channel

    def _present(self, sources: list[topology.Source]) -> list[topology.Source]:
        """The sources to consume: an adopted queue that does not exist is left out, and said so
        at every connection (nothing can be waiting in it; a misspelt name leaves the real queue
        without this consumer)."""
        missing = topology.missing_queues(self._connection, [s.queue for s in sources if s.adopted])
        for queue in missing:
            log.error(
                "RABBITMQ_ADOPT_QUEUES names the queue %r, which does not exist in RabbitMQ: not consuming it", queue
            )
        if missing:
            self.stats.lastError = f"adopted queue(s) missing: {', '.join(missing)}"
        return [s for s in sources if s.queue not in missing]

    def _consume_returned(self, unavailable: list[topology.Source], sources: list[topology.Source]) -> list[str]:
        """Start consuming those `unavailable` queues that are back (their node returned); moves
        them to `sources` and returns their consumer tags."""
        back = topology.reachable(self._open_connection(), [s.queue for s in unavailable])
        tags = []
        for source in [s for s in unavailable if s.queue in back]:
            log.info("queue %s is available again: consuming it", source.queue)
            tags.append(self._open(self._channel).basic_consume(source.queue, partial(self._on_message, source)))
            unavailable.remove(source)
            sources.append(source)
        return tags

    def _open_connection(self) -> pika.BlockingConnection:
        if self._connection is None:
            raise RuntimeError("the consumer is not connected to RabbitMQ")
        return self._connection

    def _failed(self, reason: str) -> None:
        log.error("%s; %d unacked message(s) stay in RabbitMQ", reason, len(self._buffer))
        self.stats.lastError = reason
        self._buffer.clear()  # their delivery tags die with the connection; RabbitMQ redelivers them
        self._lingering = False
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(AMQPError, OSError):
                self._connection.close()
        self._connection = None

    def _wait_for_redis(self, backoff: Backoff) -> None:
        while not self._stopping.is_set():
            delay = backoff.next()
            log.warning("waiting %.1f s for Redis", delay)
            if self._stopping.wait(delay):
                return
            try:
                self.redis.ping()
            except RedisError:
                continue
            log.info("Redis is back; reconnecting to RabbitMQ")
            return

    # --- messages -------------------------------------------------------------------------
    def _on_message(
        self,
        source: topology.Source,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.append(
            Delivery(method.delivery_tag, source, method.routing_key, body, properties, method.redelivered)
        )

    def _batch_window(self) -> float:
        return self.max_linger if self._lingering else self.flush_after

    def _workers_busy(self) -> bool:
        """Whether the workers of every domain in the batch in hand are all busy: one of the RQ
        queues of the domain's job types has jobs waiting (an idle worker would have taken them),
        so the batch's jobs would wait behind those anyway. Asked once per batch; a Redis error
        says no (the flush meets it and handles it)."""
        if len(self._buffer) >= self.batch_limit:
            return False
        domains = {delivery.source.domain for delivery in self._buffer}
        groups = [self._rq_queue_keys[domain] for domain in domains if domain in self._rq_queue_keys]
        if not groups or len(groups) < len(domains):
            return False
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for keys in groups:
                    for key in keys:
                        pipe.llen(key)
                lengths = iter(pipe.execute())
        except RedisError:
            return False
        return all([any([next(lengths) > 0 for _ in keys]) for keys in groups])

    def _flush(self) -> None:
        self._lingering = False
        deliveries = self._buffer
        now = time.time()
        submissions: list[Submission] = []
        queue_of: dict[str, str] = {}
        rejected: list[tuple[Delivery, str]] = []
        for delivery in deliveries:
            if delivery.routing_key in topology.OWN_EVENTS:
                self.stats.ownEvents += 1
                continue
            try:
                parsed = parse_message(
                    delivery.source.domain, delivery.body, delivery.routing_key, self.config.max_message_bytes
                )
            except InvalidMessage as exc:
                rejected.append((delivery, exc.reason))
                continue
            job_id, dedup_key, dedup_ttl = self._identity(parsed.job_id, delivery)
            envelope = Envelope.sealed(
                job_id=job_id,
                job_type=parsed.job_type,
                payload=parsed.payload,
                attempt=parsed.retries_done,
                created_at=parsed.created_at or now,
                received_at=now,
                priority=parsed.priority,
                routing_key=delivery.routing_key,
            )
            submissions.append(Submission(envelope, dedup_key, dedup_ttl))
            queue_of[job_id] = jobtypes.job_type(parsed.job_type).queue_for(parsed.priority)

        for delivery, reason in rejected:
            self._dead_letter(delivery, reason)
        result = enqueue(self.redis, submissions, queue_of) if submissions else None
        if submissions and self.config.redis_wait_replicas:
            self._wait_for_replicas()
        self._open(self._channel).basic_ack(delivery_tag=deliveries[-1].tag, multiple=True)
        self._buffer = []

        self.stats.receivedMessages += len(deliveries)
        self.stats.enqueuedJobs += len(result.enqueued) if result else 0
        self.stats.duplicateMessages += len(result.duplicates) if result else 0
        self.stats.rejectedMessages += len(rejected)
        self.stats.redeliveredMessages += sum(d.redelivered for d in deliveries)
        self.stats.lastMessageAt = now
        self._save_stats()

    def _wait_for_replicas(self) -> None:
        """REDIS_WAIT_REPLICAS: ack only once that many replicas have the batch's jobs, so a primary
        lost right after the ack takes none of them along. A mark written just before WAIT, on the
        same connection, puts every earlier write (this batch's, or the first delivery's of a
        redelivered duplicate) under the offset WAIT waits for. Too few replicas in time: raised
        as a Redis error, so the batch is not acked and RabbitMQ redelivers it; the redelivery
        is deduplicated if the jobs survived and enqueued again if they did not, then waited for."""
        wanted, timeout_ms = self.config.redis_wait_replicas, self.config.redis_wait_timeout_ms
        with self.redis.pipeline(transaction=False) as pipe:  # one connection, in order
            pipe.set(REPLICATION_MARK + self.name, time.time(), ex=3600)
            pipe.execute_command("WAIT", wanted, timeout_ms)
            _, replicas = pipe.execute()
        if replicas < wanted:
            raise NotReplicated(
                f"only {replicas} of {wanted} replica(s) (REDIS_WAIT_REPLICAS) had the batch within {timeout_ms} ms"
            )

    def _identity(self, job_id: str | None, delivery: Delivery) -> tuple[str, str, int]:
        """The job id, its deduplication key and how long that key is remembered."""
        job_id = job_id or delivery.properties.message_id
        if usable_message_id(job_id):  # a publisher's message_id may hold anything
            return job_id, f"id:{job_id}", self.config.job_dedup_ttl
        fingerprint = hashlib.sha256(delivery.routing_key.encode() + b"\0" + delivery.body).hexdigest()
        return uuid.uuid4().hex, f"fp:{fingerprint}", REDELIVERY_WINDOW

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park a message that can never become a job, with the reason, before it is acked."""
        log.warning("dead-lettering a message from %s (%s): %s", delivery.source.queue, delivery.routing_key, reason)
        self.stats.lastError = f"rejected a message from {delivery.source.queue}: {reason}"
        headers = dict(delivery.properties.headers or {})
        headers.update(
            {
                "x-supworker-reason": reason[:1000],
                "x-original-queue": delivery.source.queue,
                "x-original-routing-key": delivery.routing_key,
                "x-rejected-at": int(time.time()),
                "x-rejected-by": self.name,
            }
        )
        properties = pika.BasicProperties(
            content_type=delivery.properties.content_type, delivery_mode=2, headers=headers
        )
        # Confirmed publish: if it does not reach RabbitMQ, this raises and nothing is acked. Secret
        # fields are sealed (the fixed message can be republished as is), other text masked.
        self._open(self._dead_channel).basic_publish(
            topology.dead_letter_exchange(),
            delivery.routing_key,
            dead_letter_body(delivery.body),
            properties,
            mandatory=True,
        )
        self._record_dead_letter(delivery, reason)

    def _record_dead_letter(self, delivery: Delivery, reason: str) -> None:
        """The admin's copy; the message itself is safe in the dead-letter queue, so this may fail."""
        try:
            close_old_connections()
            payload = _readable(delivery.body)
            DeadLetter.objects.create(
                job_id=str(payload.get("jobId", ""))[:128] if isinstance(payload, dict) else "",
                job_type=delivery.source.domain,
                source=DeadLetter.Source.CONSUMER,
                routing_key=str(delivery.routing_key).replace("\x00", "\ufffd"),  # a key may hold NUL
                payload=mask_payload(payload),
                error=reason,
            )
        except DatabaseError as exc:
            log.error(
                "could not record the dead letter in PostgreSQL (it is in %s): %s", topology.dead_letter_queue(), exc
            )

    # --- health ---------------------------------------------------------------------------
    def _save_stats(self, memory: bool = False) -> None:
        """Publish the statistics (after every batch); the memory at connecting and at heartbeats."""
        fields = {k: v for k, v in vars(self.stats).items()}
        fields.update({"pid": os.getpid(), "host": socket.gethostname(), "heartbeatAt": time.time()})
        if memory:
            fields["memoryUsage"] = json.dumps(memory_usage(self._process))
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(CONSUMER_KEY + self.name, mapping=fields)
            pipe.expire(CONSUMER_KEY + self.name, 86400)
            pipe.execute()

    def _heartbeat(self, sources: list[topology.Source]) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        first = self._next_heartbeat == 0.0
        self._next_heartbeat = now + self.config.heartbeat_interval_ms / 1000
        if first:
            self._received_at_heartbeat = self.stats.receivedMessages
            return
        channel = self._open(self._channel)
        waiting = sum(channel.queue_declare(s.queue, passive=True).method.message_count for s in sources)
        log.info("consumer health: %s, %d ready in RabbitMQ", self._stats_line(), waiting)
        if waiting and self.stats.receivedMessages == self._received_at_heartbeat and not self._buffer:
            log.warning(
                "consumer looks stuck: %d messages wait and none was processed since the last heartbeat", waiting
            )
        self._received_at_heartbeat = self.stats.receivedMessages
        self._save_stats(memory=True)

    def _stats_line(self) -> str:
        rss_mb = self._process.memory_info().rss / 2**20
        s = self.stats
        return (
            f"received={s.receivedMessages} enqueued={s.enqueuedJobs} rejected={s.rejectedMessages} "
            f"duplicates={s.duplicateMessages} redelivered={s.redeliveredMessages} rss={rss_mb:.0f}MB"
        )


def _readable(body: bytes) -> object:
    """The body as JSON when it is JSON, else a short preview with digits and control characters masked.

    PostgreSQL's jsonb refuses NUL characters, which hostile messages do contain.
    """
    try:
        # Neither NaN nor a lone surrogate (replaced by "?") can go into jsonb either.
        text = json.dumps(json.loads(body), ensure_ascii=False, allow_nan=False)
        return json.loads(text.replace("\\u0000", "\\ufffd").encode(errors="replace"))
    except (ValueError, RecursionError):  # hostile bodies nest JSON thousands deep
        preview = body[:200].decode("utf-8", "replace")
        masked = "".join("#" if c.isdigit() else "?" if not c.isprintable() else c for c in preview)
        return {"bytes": len(body), "preview": masked}
