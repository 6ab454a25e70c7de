"""The function every RQ job runs: a batch of envelopes, each item handled and recorded on its own.

Per item: already succeeded (a redelivered or requeued job) → skipped; success → recorded;
PermanentError → dead-lettered at once; any other failure → retried after
min(BASE * 2^n + jitter, MAX) (or the provider's Retry-After) until MAX_RETRIES, then
dead-lettered. Dead items are recorded in PostgreSQL and put in RQ's failed registry as a job
of their own, so RQ's "requeue" runs exactly them again.

`run_here` runs items the same way in a command's own process (`manage.py cleanup`): the same
records, dead letters, counters and on_settled listeners, with no RQ job and no retries.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, get_current_job
from rq.job import Job
from rq.job import JobStatus as RQJobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result

from supworker import records
from supworker.enqueue import batch_jobs, create_jobs, redis_connection
from supworker.envelope import Envelope
from supworker.handlers import (
    BatchHandler,
    Outcome,
    PermanentError,
    Settled,
    TransientError,
    handler_for,
    report_settled,
)
from supworker.interrupts import interrupts_deferred, reconnect_if_left_in_a_transaction
from supworker.models.job_records import JobStatus
from supworker.policy import retry_delay
from supworker.stats import count_outcomes, observe_duration

log = logging.getLogger(__name__)


def run_batch(items: list[dict]) -> dict[str, int]:
    # A worker that does not fork (SimpleWorker, a pre-warmed pool) keeps its connection from
    # one job to the next: drop it if it broke, and have it health-checked before its first use.
    close_old_connections()
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_batch is an RQ job function: it runs inside an RQ worker")
    queue = Queue(job.origin, connection=job.connection)
    envelopes = [Envelope.from_dict(item) for item in items]
    started = timezone.now()
    pending = records.start(envelopes, queue.name, job.id)
    settlement = settle(pending, handle(pending), started, retries=True)
    if settlement.retry:
        schedule_retries(queue, settlement.retry, seed=job.id)
    if settlement.dead:
        park_in_failed_registry(queue, settlement.dead, seed=job.id)
    report_settled(settlement.settled)
    count(settlement, job.connection)
    return settlement.summary(skipped=len(envelopes) - len(pending))


HERE = "manage.py"  # the queue a record names for an item run in a command's own process


def run_here(envelopes: list[Envelope], handler: BatchHandler | None = None) -> list[Settled]:
    """Run items now, in this process (a management command), recorded and counted as run_batch
    records and counts them; `handler` replaces the job type's registered one when given.

    Nothing here retries: a terminal is no worker, and a record left `running` or `retrying` would
    promise an end or a retry that never comes. So any failure is final, as for an item out of
    retries: recorded failed and dead-lettered, where an operator can requeue it to a worker. An
    interrupt (Ctrl-C) settles the items the same way before it goes on: it can cut the handler
    short, not the writes of the records (it waits for them, see supworker/interrupts.py).
    """
    with interrupts_deferred() as interrupts:
        started = timezone.now()
        pending = records.start(envelopes, HERE, "")
        in_callers_transaction = connection.in_atomic_block
        try:
            with interrupts.delivered():
                outcomes = handle(pending, handler)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: handle() turns the rest into outcomes
            failures = [Outcome.failure(e, exc) for e in pending]
            settle_here(pending, failures, started, in_callers_transaction)
            raise
        return settle_here(pending, outcomes, started, in_callers_transaction).settled


def settle_here(
    pending: list[Envelope], outcomes: list[Outcome], started: datetime, in_callers_transaction: bool
) -> Settlement:
    if not in_callers_transaction:  # an interrupt may have left the connection stuck in one of the handler's
        reconnect_if_left_in_a_transaction()
    settlement = settle(pending, outcomes, started, retries=False)
    report_settled(settlement.settled)
    try:
        count(settlement, redis_connection())
    except RedisError:  # the run is recorded in PostgreSQL; a lost counter is no reason to fail it
        log.warning("could not count the outcomes of %d item(s) in Redis", len(settlement.settled), exc_info=True)
    return settlement


@dataclass(frozen=True)
class Settlement:
    """What the runner decided for each item it ran, recorded: succeeded, retrying, failed for good."""

    settled: list[Settled]
    retry: list[tuple[Envelope, Outcome]]
    dead: list[tuple[Envelope, Outcome]]
    started: datetime

    def summary(self, skipped: int) -> dict[str, int]:
        return {
            "succeeded": sum(s.outcome.ok for s in self.settled),
            "retrying": len(self.retry),
            "failed": len(self.dead),
            "skipped": skipped,
        }


def settle(pending: list[Envelope], outcomes: list[Outcome], started: datetime, retries: bool) -> Settlement:
    """Decide each item's status from its outcome, record it, dead-letter what failed for good;
    without `retries`, a transient failure is final too."""
    by_id = {e.job_id: e for e in pending}
    statuses: dict[str, str] = {}
    retry: list[tuple[Envelope, Outcome]] = []
    dead: list[tuple[Envelope, Outcome]] = []
    for outcome in outcomes:
        envelope = by_id[outcome.job_id]
        if outcome.ok:
            statuses[outcome.job_id] = JobStatus.SUCCEEDED
        elif outcome.permanent or not retries or envelope.attempt >= settings.CONFIG.max_retries:
            statuses[outcome.job_id] = JobStatus.FAILED
            dead.append((envelope, outcome))
            log.error("job %s (%s) failed for good: %s", envelope.job_id, envelope.job_type, outcome.error)
        else:
            statuses[outcome.job_id] = JobStatus.RETRYING
            retry.append((envelope, outcome))
            log.warning("job %s (%s) will be retried: %s", envelope.job_id, envelope.job_type, outcome.error)
    records.finish(outcomes, statuses, started)
    for envelope, outcome in dead:
        records.dead_letter(envelope, outcome.error)
    settled = [Settled(by_id[o.job_id], o, statuses[o.job_id]) for o in outcomes]
    return Settlement(settled, retry, dead, started)


def count(settlement: Settlement, connection: Redis) -> None:
    """Add the items to the per-type outcome counters and duration histogram monitoring reads."""
    by_type: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in settlement.settled:
        kind = "succeeded" if item.outcome.ok else item.status
        by_type[item.envelope.job_type][kind.replace("retrying", "retried")] += 1
    per_item = (timezone.now() - settlement.started).total_seconds() / max(len(settlement.settled), 1)
    with connection.pipeline(transaction=False) as pipe:
        for job_type, counts in by_type.items():
            count_outcomes(pipe, job_type, **counts)
            observe_duration(pipe, job_type, per_item, items=sum(counts.values()))
        pipe.execute()


def handle(envelopes: list[Envelope], handler: BatchHandler | None = None) -> list[Outcome]:
    """Run each type's handler (or `handler`) on its items; whatever goes wrong becomes an item's outcome."""
    by_type: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in envelopes:
        by_type[envelope.job_type].append(envelope)
    outcomes: list[Outcome] = []
    for job_type, group in by_type.items():
        run = handler or handler_for(job_type)
        if run is None:
            error = PermanentError(f"no handler is registered for job type {job_type!r}")
            outcomes.extend(Outcome.failure(e, error) for e in group)
            continue
        try:
            returned = {o.job_id: o for o in run(group)}
        except Exception as exc:
            log.exception("handler for %s raised", job_type)
            returned = {e.job_id: Outcome.failure(e, exc) for e in group}
        missing = TransientError("the handler returned no outcome for this item")
        outcomes.extend(returned.get(e.job_id) or Outcome.failure(e, missing) for e in group)
    return outcomes


def schedule_retries(queue: Queue, failed: list[tuple[Envelope, Outcome]], seed: str) -> None:
    """Put the failed items back, one attempt later, after the longest delay any of them needs."""
    delay = max(retry_delay(envelope.attempt, outcome.retry_after) for envelope, outcome in failed)
    when = timezone.now() + timedelta(seconds=delay)
    jobs = create_jobs(queue, batch_jobs(queue, [e.next_attempt() for e, _ in failed], id_seed=seed + ":retry"))
    for job in jobs:
        queue.schedule_job(job, when)


def park_in_failed_registry(queue: Queue, dead: list[tuple[Envelope, Outcome]], seed: str) -> None:
    registry = FailedJobRegistry(queue=queue)
    reasons = "\n".join(f"{envelope.job_id}: {outcome.error}" for envelope, outcome in dead)
    job_datas = batch_jobs(queue, [envelope for envelope, _ in dead], id_seed=seed + ":dead")
    ttl = settings.CONFIG.job_failure_ttl
    for job in create_jobs(queue, job_datas, status=RQJobStatus.FAILED):
        with queue.connection.pipeline() as pipe:
            registry.add(job, ttl=ttl, exc_string=reasons, pipeline=pipe)
            # The reason RQ's dashboard shows for a failed job is its failure result.
            Result.create_failure(job, ttl, exc_string=reasons, pipeline=pipe)
            pipe.execute()


def give_up(job: Job, reason: str) -> None:
    """RQ will not run this batch again: each item not finished yet (neither succeeded, failed
    nor waiting for its own retry) is recorded failed and dead-lettered, so an operator sees it
    and can requeue it, as any item the runner gives up on."""
    envelopes = [Envelope.from_dict(item) for item in job.args[0]]
    try:
        unfinished = records.unfinished(envelopes, job.id)
        error = PermanentError(f"given up after {settings.CONFIG.max_retries} retries of its batch: {reason}")
        outcomes = [Outcome.failure(e, error) for e in unfinished]
        records.finish(outcomes, {e.job_id: JobStatus.FAILED for e in unfinished}, timezone.now())
        for envelope, outcome in zip(unfinished, outcomes, strict=True):
            records.dead_letter(envelope, outcome.error)
        report_settled([Settled(e, o, JobStatus.FAILED) for e, o in zip(unfinished, outcomes, strict=True)])
        # Counted as the runner counts the items it settles itself (run_batch).
        with job.connection.pipeline(transaction=False) as pipe:
            for job_type, number in Counter(e.job_type for e in unfinished).items():
                count_outcomes(pipe, job_type, failed=number)
            pipe.execute()
    except Exception:  # PostgreSQL may be what failed: the batch stays in RQ's failed registry
        log.exception("could not record the items of failed batch %s", job.id)
        return
    if unfinished:
        log.error("batch %s failed for good: %d item(s) dead-lettered: %s", job.id, len(unfinished), reason)
