"""Turning envelopes into RQ jobs: grouped into batches by the policy table, deduplicated,
and written in one Redis transaction.

The "seen" marker of every job and the RQ jobs that carry them are written in the same
MULTI/EXEC, under WATCH: either both exist or neither does. The consumer acks RabbitMQ only
after that transaction, so a crash at any point neither loses a job (not acked → redelivered)
nor runs it twice (redelivered → already seen → acked without enqueueing).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import django_rq
from django.conf import settings
from redis import Redis, WatchError
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.job import Job
from rq.queue import EnqueueData

from supworker import jobtypes
from supworker.envelope import Envelope
from supworker.policy import retry_delay

SEEN_PREFIX = "supworker:seen:"
RUN_BATCH = "supworker.runner.run_batch"

# Writes a batch's "seen" markers in one command (KEYS: the markers; ARGV: their job ids, then
# their lifetimes in seconds): one SET EX per marker from the client cost the consumer a fifth
# of its CPU in redis-py's command packing. Run inside the transaction, so still all or nothing.
_MARK_SEEN = """
local n = #KEYS
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[i], 'EX', ARGV[n + i])
end
return n
"""


@dataclass(frozen=True)
class Submission:
    envelope: Envelope
    dedup_key: str  # the job id, or for a message without one a fingerprint of it
    dedup_ttl: int  # seconds the key is remembered


@dataclass
class EnqueueResult:
    enqueued: list[Envelope]
    duplicates: list[Envelope]
    rq_jobs: int


def batch_jobs(queue: Queue, envelopes: list[Envelope], id_seed: str = "") -> list[EnqueueData]:
    """RQ job data for envelopes bound for one queue: one job per batch of the same type.

    With `id_seed`, job ids are derived from it and the items, so building the same batches
    again (a retried job scheduling its retries once more) overwrites instead of duplicating.
    """
    config = settings.CONFIG
    # Item failures are retried by the runner; this retries a batch whose work-horse died
    # (killed, out of memory, timed out).
    safety_retry = (
        Retry(max=config.max_retries, interval=[int(retry_delay(n)) for n in range(config.max_retries)])
        if config.max_retries
        else None
    )
    by_type: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in envelopes:
        by_type[envelope.job_type].append(envelope)
    jobs = []
    for job_type, items in by_type.items():
        policy = jobtypes.job_type(job_type)
        for batch, weight in _batches(items, policy):
            ids = [e.job_id for e in batch]
            job_id = uuid.uuid5(uuid.NAMESPACE_URL, id_seed + "|" + ",".join(ids)).hex if id_seed else uuid.uuid4().hex
            jobs.append(
                Queue.prepare_data(
                    RUN_BATCH,
                    args=([e.to_dict() for e in batch],),
                    job_id=job_id,
                    timeout=policy.batch_timeout(weight),
                    result_ttl=config.job_result_ttl,
                    failure_ttl=config.job_failure_ttl,
                    retry=safety_retry,
                    meta={"type": job_type, "items": len(batch), "job_ids": ids[:20]},
                    description=f"{job_type} x{len(batch)}",
                )
            )
    return jobs


def _batches(items: list[Envelope], policy: jobtypes.JobType) -> Iterator[tuple[list[Envelope], int]]:
    """Consecutive batches of at most `policy.batch_size` units of weight (an item heavier than
    that goes alone), each with its weight."""
    batch: list[Envelope] = []
    weight = 0
    for envelope in items:
        item_weight = policy.weight_of(envelope.payload)
        if batch and weight + item_weight > policy.batch_size:
            yield batch, weight
            batch, weight = [], 0
        batch.append(envelope)
        weight += item_weight
    if batch:
        yield batch, weight


def enqueue(connection: Redis, submissions: list[Submission], queue_of: dict[str, str]) -> EnqueueResult:
    """Enqueue the submissions not seen before; `queue_of` maps job id to its RQ queue name."""
    if not submissions:  # nothing to do, and WATCH without a key is an error
        return EnqueueResult(enqueued=[], duplicates=[], rq_jobs=0)
    unique: dict[str, Submission] = {}
    for submission in submissions:
        unique.setdefault(SEEN_PREFIX + submission.dedup_key, submission)
    keys = list(unique)
    with connection.pipeline() as pipe:
        while True:
            try:
                pipe.watch(*keys)
                seen = pipe.mget(keys) if keys else []
                fresh = [unique[k] for k, value in zip(keys, seen, strict=True) if value is None]
                by_queue: dict[str, list[Envelope]] = defaultdict(list)
                for submission in fresh:
                    by_queue[queue_of[submission.envelope.job_id]].append(submission.envelope)
                pipe.multi()
                if fresh:
                    connection.register_script(_MARK_SEEN)(
                        keys=[SEEN_PREFIX + s.dedup_key for s in fresh],
                        args=[s.envelope.job_id for s in fresh] + [s.dedup_ttl for s in fresh],
                        client=pipe,
                    )
                rq_jobs = _enqueue_batches(connection, pipe, by_queue)
                pipe.execute()
                break
            except WatchError:
                continue  # another consumer marked one of these keys meanwhile: look again
    fresh_ids = {s.envelope.job_id for s in fresh}
    return EnqueueResult(
        enqueued=[s.envelope for s in fresh],
        duplicates=[s.envelope for s in submissions if s.envelope.job_id not in fresh_ids],
        rq_jobs=rq_jobs,
    )


def create_jobs(queue: Queue, job_datas: list[EnqueueData], **overrides: Any) -> list[Job]:
    """Job objects from prepared data, for scheduling or for a registry instead of the queue."""
    return [
        queue.create_job(
            func=data.func,
            args=data.args,
            kwargs=data.kwargs,
            timeout=data.timeout,
            result_ttl=data.result_ttl,
            failure_ttl=data.failure_ttl,
            description=data.description,
            job_id=data.job_id,
            meta=data.meta,
            retry=data.retry,
            **overrides,
        )
        for data in job_datas
    ]


def redis_connection() -> Redis:
    """The Redis that holds every RQ queue (they all share one), failing fast.

    RQ's own connections retry for half a minute to ride out a Redis restart
    (supworker.queues.REDIS_RETRY); this one is for health checks, counters, rate limits and
    the shutdown flag, which must answer at once, and for jobs, whose errors are retried.
    """
    connection = django_rq.get_connection(jobtypes.queues()[0].name)  # every queue is on the same Redis
    # Through Sentinel, one immediate retry: a command failed because the primary moved is sent
    # to the new one (supworker/redis_sentinel.py).
    connection.set_retry(RedisRetry(NoBackoff(), 1 if settings.CONFIG.redis_sentinel else 0))
    return connection


def requeue(connection: Redis, envelopes: list[Envelope]) -> int:
    """Enqueue envelopes again on purpose (an operator's requeue): no deduplication, fresh attempts."""
    by_queue: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in envelopes:
        fresh = Envelope.from_dict(envelope.to_dict() | {"attempt": 0})
        by_queue[jobtypes.job_type(envelope.job_type).queue_for(envelope.priority)].append(fresh)
    with connection.pipeline() as pipe:
        jobs = _enqueue_batches(connection, pipe, by_queue)
        pipe.execute()
    return jobs


def _enqueue_batches(connection: Redis, pipe: Pipeline, by_queue: dict[str, list[Envelope]]) -> int:
    """Add the RQ jobs for each queue's envelopes to `pipe`; return how many jobs."""
    jobs = 0
    for queue_name, envelopes in by_queue.items():
        queue = Queue(queue_name, connection=connection)
        job_datas = batch_jobs(queue, envelopes)
        queue.enqueue_many(job_datas, pipeline=pipe)
        jobs += len(job_datas)
    return jobs
