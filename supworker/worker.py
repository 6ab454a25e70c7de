"""The RQ worker class every `manage.py rqworker` uses (settings.RQ["WORKER_CLASS"]).

Recovery from a worker killed mid-job (SIGKILL, OOM killer, a lost machine), in RQ 3.0:

- Only the work-horse dies, the worker lives (what the OOM killer usually picks: the horse
  holds the memory): the worker sees its child die at once and calls the job failed; the
  job's `Retry` (set in supworker/enqueue.py `batch_jobs`) puts it back after 5 s by default
  (BASE_DELAY_MS), under the same RQ job id.
- The whole worker dies: nobody is left to notice. The job stays in StartedJobRegistry until
  its entry's heartbeat expires (the worker renews it every `job_monitoring_interval`, for that
  long plus a margin), and the next registry cleanup of any worker on the queue calls it
  abandoned and applies the same `Retry`. RQ's defaults make that slow: 30 s + 60 s for the
  entry, then a cleanup only every 10 minutes, and an idle worker blocks up to 405 s in BLPOP
  before it even looks. Up to ~12 minutes for an OTP a person is waiting for is too long.

Here: heartbeats every 10 s, cleanups every 30 s (an idle worker wakes for them), RQ's 60 s
margin kept (it is what stops a live but slow worker's job from being run twice). A job whose
whole worker died runs again within about 10 + 60 + 30 s plus its retry delay, under two
minutes, once another worker of its queue is idle or between jobs (a worker runs cleanups only
then; were they all busy, the job would have waited for one anyway). One whose horse died runs
again after its retry delay. The worker holding a queue's scheduler lock may be the one that
died: the lock expires after 61 s and another worker takes it at its next cleanup, within the
same two minutes. Each cleanup logs "cleaning registries" at INFO, once per queue.
"""

from __future__ import annotations

import gc
from typing import Any

from redis.sentinel import SentinelConnectionPool
from rq import Worker as RQWorker
from rq.exceptions import AbandonedJobError
from rq.job import Job

from supworker.enqueue import RUN_BATCH
from supworker.handlers import prepare_worker
from supworker.runner import give_up

# Seconds an idle worker waits in BLPOP when Redis is reached through Sentinel: after a
# failover, its next BLPOP asks the sentinels for the primary (supworker/redis_sentinel.py).
SENTINEL_DEQUEUE_TIMEOUT = 2


class Worker(RQWorker):
    """Imports every app's jobs.py and runs their before-fork work once, in the worker's own
    process, before it starts forking: each work-horse inherits the handlers and clients instead
    of making them again per job. Recovers the jobs of dead workers within the bounds in this
    module's docstring."""

    # Seconds between heartbeats of a running job (RQ: 30).
    heartbeat_interval = 10
    # Seconds a heartbeat outlives its interval before the job counts as abandoned (RQ: 60).
    heartbeat_margin = 60
    # Seconds between registry cleanups, which requeue abandoned jobs (RQ: 600).
    cleanup_interval = 30

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("job_monitoring_interval", self.heartbeat_interval)
        kwargs.setdefault("maintenance_interval", self.cleanup_interval)
        super().__init__(*args, **kwargs)
        self.push_exc_handler(_give_up_on_abandoned_batch)

    def handle_job_failure(
        self, job: Job, queue: Any, started_job_registry: Any = None, exc_string: str = "", execution: Any = None
    ) -> None:
        """RQ's failure handling; when RQ will not run a batch again (it raised, or its
        work-horse died, on every try), its unfinished items are dead-lettered as well."""
        final = not job.should_retry
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        if final and job.func_name == RUN_BATCH:
            give_up(job, _last_line(exc_string) or "the batch failed")

    @property
    def dequeue_timeout(self) -> int:
        # An idle worker must come out of BLPOP in time for its next cleanup; through Sentinel,
        # soon after a failover too: a BLPOP left on the old primary sees no new job.
        limit = int(self.maintenance_interval)
        pool = getattr(getattr(self, "connection", None), "connection_pool", None)  # None while __init__ runs
        if isinstance(pool, SentinelConnectionPool):
            limit = min(limit, SENTINEL_DEQUEUE_TIMEOUT)
        return max(1, min(super().dequeue_timeout, limit))

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """RQ's formula with `heartbeat_margin` in place of its fixed 60 s (and never below it)."""
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(max(interval, 0)) + self.heartbeat_margin

    def work(self, *args: Any, **kwargs: Any) -> bool:
        prepare_worker()
        # Objects made so far live as long as the worker: keep the collector away from them, so a
        # horse's collections do not write to (and so copy) the memory pages it shares with us.
        gc.freeze()
        return super().work(*args, **kwargs)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        prepare_worker()  # e.g. an access token about to expire, refreshed before the next fork

    def _shutdown(self) -> None:
        # An idle worker is stopped by StopRequested, raised from the SIGTERM handler to break out
        # of BLPOP. When the signal lands inside a logging call (a cleanup's log line), logging
        # swallows it and the worker would run on until SIGKILL; the flag stops it at the next turn.
        self._stop_requested = True
        super()._shutdown()


def _give_up_on_abandoned_batch(job: Job, exc_type: type | None, *_: Any) -> bool:
    """An exception handler: a registry cleanup found the batch's whole worker dead, and RQ has no
    retry left for it (the handler runs before RQ decides)."""
    if exc_type is AbandonedJobError and not job.should_retry and job.func_name == RUN_BATCH:
        give_up(job, "abandoned: the worker running it died on every try")
    return True  # let the other handlers run


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
