"""Delete 1,000,000 expired sessions (BENCH_CLEANUP_EXPIRED) as production deletes them, against one
raw `DELETE … WHERE` (the floor) and Django's `QuerySet.delete()`, each on the same fresh rows in
the benchmarks' own database (`<name>_bench`, bench/deployed.py), 200,000 live sessions beside them
(a fifth of the count) that must all stay.

- as deployed (the main figure): `manage.py rqworker cleanup` started from its Procfile line, idle
  (Django started) before the clock, runs the `sessions` entry of the cron table: the entry
  supworker registers with rq-scheduler (`supworker.schedule.register`), moved to the `cleanup`
  queue by rq-scheduler's own `enqueue_job`, which is what `manage.py rqscheduler` does at the tick
  (called here: the process would wait for 00:00). The work-horse runs it as every tick runs,
  through the runner, with the job's time budget (a run out of it enqueues follow-ups, waited for
  too). Clocked from the enqueue to the last part's record finished.
- `manage.py cleanup sessions`, as an operator runs it: a process of its own, clocked by its job
  record (the run, after Django's start-up); its CPU is the whole process's (os.wait4), start-up
  included, and a run with nothing to delete shows what start-up costs.
- in-process: the same cleanup called in this process (isolates it from the job around it);
  the raw `DELETE` and `QuerySet.delete()` also run here.

CPU per 1,000 rows: each supworker process's (psutil; the worker with its work-horse) and the
PostgreSQL server's (its postmaster's whole tree: the deleting happens there, so anything else
using the server meanwhile counts too). Targets, for the process as deployed: at most 1.5 x the raw
statement, every batch under 1 s, peak memory of the process under 200 MB.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg2
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone
from redis import Redis
from rq import Worker
from rq_scheduler import Scheduler

from bench import deployed
from bench.bench_ingest import _wait_for
from bench.table import Table

EXPIRED = int(os.environ.get("BENCH_CLEANUP_EXPIRED", "1000000"))
LIVE = max(EXPIRED // 5, 1)  # sessions that must survive every method
REDIS_DB = 14  # the cleanup and rq_enqueue benchmarks' (tests use 8-11 and 15, the others 12 and 13)
TAG = "benchcleanup"
CLEANUP = "sessions"
PART_TIMEOUT_S = 180.0  # a part (one RQ job) of the worker's run that takes longer is stuck (job timeout: 120 s)
FILL = """
INSERT INTO user_sessions (id, user_id, device_id, last_active_at, is_active, created_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'device-' || n, now() - %s * interval '1 day', true,
       now() - interval '90 days'
FROM generate_series(1, %s) AS n
"""
# The records of the runs here: the cron tick's (and its follow-ups), and manage.py cleanup's.
RECORDS = [f"cron:{CLEANUP}:%", f"cli:{CLEANUP}:%"]


class PeakMemory:
    """Samples the resident memory of a process and its children every 10 ms; keeps the largest
    single process's (a work-horse shares its worker's pages: their sum would count them twice)."""

    def __init__(self, process: psutil.Process | None = None) -> None:
        self.process, self.peak, self._stop = process or psutil.Process(), 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                for process in [self.process, *self.process.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        self.peak = max(self.peak, process.memory_info().rss)
            self._stop.wait(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Result:
    label: str
    seconds: float
    cpu: float | None  # the supworker process's (or this one's, in-process) CPU seconds
    postgres_cpu: float
    peak_rss: int
    summary: dict[str, Any] = field(default_factory=dict)  # the cleanup's own (batches, slowest batch)

    @property
    def rate(self) -> float:
        return EXPIRED / self.seconds


@dataclass
class Bench:
    db: Any  # psycopg2 connection to the bench database, autocommit
    postmaster: psutil.Process
    redis: Redis
    env: dict[str, str]
    work: Path

    def postgres_cpu(self) -> float:
        return sum(deployed.tree_cpu_parts(self.postmaster))

    def sql(self, statement: str, params: list[Any] | None = None) -> list[tuple]:
        with self.db.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def fresh_data(self, expired: int = EXPIRED, live: int = LIVE) -> None:
        self.sql("TRUNCATE user_sessions")
        for days, rows in ((40, expired), (1, live)):
            if rows:
                self.sql(FILL, [days, rows])
        self.sql("VACUUM (ANALYZE) user_sessions")
        self.forget_runs()

    def forget_runs(self) -> None:
        """Drop the records of earlier runs: a cron tick in the same minute as one already recorded
        succeeded would be skipped as done (the runner's redelivery rule)."""
        for pattern in RECORDS:
            self.sql("DELETE FROM job_runs WHERE job_id LIKE %s", [pattern])
            self.sql("DELETE FROM dead_letters WHERE job_id LIKE %s", [pattern])

    def check_left(self, label: str, live: int = LIVE) -> None:
        left = self.sql("SELECT count(*) FROM user_sessions")[0][0]
        if left != live:
            raise RuntimeError(f"{label}: {left:,} sessions left instead of the {live:,} live ones")

    def records(self, pattern: str) -> list[tuple]:
        """(job id, status, result, started_at, finished_at, error) of the matching job records."""
        return self.sql(
            "SELECT job_id, status, result, started_at, finished_at, error FROM job_runs WHERE job_id LIKE %s"
            " ORDER BY started_at",
            [pattern],
        )

    # --- the methods --------------------------------------------------------------------------
    def in_process(self, label: str, action: Callable[[], object]) -> Result:
        self.fresh_data()
        with PeakMemory() as memory:
            started, cpu, pg = time.perf_counter(), time.process_time(), self.postgres_cpu()
            returned = action()
            seconds = time.perf_counter() - started
            cpu, pg = time.process_time() - cpu, self.postgres_cpu() - pg
        self.check_left(label)
        summary = returned if isinstance(returned, dict) else {}
        if summary:
            _check_summary(label, summary)
        return Result(label, seconds, cpu, pg, memory.peak, summary)

    def worker(self) -> Result:
        """The cron tick run by `rqworker cleanup`, as deployed."""
        # rq-scheduler's crontab calls (registering, and the next tick at enqueue) warn of the
        # crontab package's next version: not ours to act on, and noise in the table's output.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="rq_scheduler")
            return self._worker()

    def _worker(self) -> Result:
        from supworker import schedule

        label = "`manage.py rqworker cleanup` runs the cron tick (process, as deployed)"
        self.fresh_data()
        scheduler = Scheduler(queue_name="cleanup", connection=self.redis)
        schedule.register(scheduler)
        entry = schedule.registered(scheduler)[schedule.ID_PREFIX + CLEANUP][0]
        worker = deployed.start("cleanup", self.env, self.work, name="cleanup-worker")
        try:
            registered = lambda: sum(w.pid == worker.popen.pid for w in Worker.all(connection=self.redis))  # noqa: E731
            _wait_for(registered, 1, "the cleanup worker registered", 0.05, worker.alive, stall=60)
            with PeakMemory(worker.handle) as memory:
                cpu, pg = worker.cpu_seconds(), self.postgres_cpu()
                enqueued = time.time()
                scheduler.enqueue_job(entry)
                parts = self._wait_for_parts(worker)
                # The last work-horse may still be at RQ's bookkeeping: its CPU counts while it runs
                # (cpu_parts) and once reaped, so wait until the worker is idle again.
                _wait_for(lambda: int(_idle(self.redis, worker)), 1, "the worker idle", 0.01, worker.alive)
                cpu, pg = worker.cpu_seconds() - cpu, self.postgres_cpu() - pg
        finally:
            deployed.stop([worker])
        self.check_left(label)
        seconds = parts[-1][4].timestamp() - enqueued
        summary = _combined([part[2] or {} for part in parts])
        _check_summary(label, summary)
        summary["parts"] = len(parts)
        return Result(label, seconds, cpu, pg, memory.peak, summary)

    def _wait_for_parts(self, worker: deployed.Process) -> list[tuple]:
        """The records of the tick's job and its follow-ups, once the last has finished."""
        deadline, finished = time.monotonic() + PART_TIMEOUT_S, 0
        while True:
            parts = self.records(RECORDS[0])
            failed = [part for part in parts if part[1] in ("failed", "retrying")]
            if failed:
                raise RuntimeError(
                    f"the cleanup job {failed[0][0]} is {failed[0][1]}: {failed[0][5]} (see {worker.log})"
                )
            done = [part for part in parts if part[1] == "succeeded"]
            if done and len(done) == len(parts) and not (done[-1][2] or {}).get("continued_as"):
                return done
            if len(done) > finished:
                deadline, finished = time.monotonic() + PART_TIMEOUT_S, len(done)
            if not worker.alive():
                raise RuntimeError(
                    f"the cleanup worker exited with {worker.popen.returncode}: {worker.output()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cleanup job made no progress for {PART_TIMEOUT_S:.0f} s (see {worker.log})")
            time.sleep(0.01)

    def command(self, label: str, expired: int = EXPIRED, live: int = LIVE) -> Result:
        """`manage.py cleanup sessions` in a process of its own, as an operator runs it."""
        self.fresh_data(expired, live)
        log = self.work / f"cli-{uuid.uuid4().hex[:6]}.out"
        with open(log, "wb") as output:
            pg = self.postgres_cpu()
            popen = subprocess.Popen(
                [sys.executable, "manage.py", "cleanup", CLEANUP], cwd=deployed.ROOT, env=self.env, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                with PeakMemory(psutil.Process(popen.pid)) as memory:
                    _, status, usage = os.wait4(popen.pid, 0)  # its rusage: its CPU, exactly
            except BaseException:
                popen.kill()
                popen.wait()
                raise
            popen.returncode = os.waitstatus_to_exitcode(status)
            pg = self.postgres_cpu() - pg
        if popen.returncode:
            raise RuntimeError(f"manage.py cleanup {CLEANUP} exited {popen.returncode}: {log.read_text()[-2000:]}")
        records = self.records(RECORDS[1])
        if len(records) != 1 or records[0][1] != "succeeded":
            raise RuntimeError(f"manage.py cleanup {CLEANUP} left the records {records} (output: {log})")
        _, _, summary, started_at, finished_at, _ = records[0]
        self.check_left(label, live)
        if summary.get("counts", {}).get("sessions_removed", 0) != expired:
            raise RuntimeError(f"{label}: the cleanup reports {summary}, expected {expired:,} sessions removed")
        return Result(label, (finished_at - started_at).total_seconds(), usage.ru_utime + usage.ru_stime, pg,
                      memory.peak, summary)  # fmt: skip


def _idle(redis: Redis, worker: deployed.Process) -> bool:
    found = [w for w in Worker.all(connection=redis) if w.pid == worker.popen.pid]
    return bool(found) and found[0].get_state() == "idle"


def _combined(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's summary from its parts' (a run out of time continues in follow-up jobs)."""
    counts: dict[str, int] = {}
    for summary in summaries:
        for key, value in summary.get("counts", {}).items():
            counts[key] = counts.get(key, 0) + value
    return {
        "counts": counts,
        "batches": sum(summary.get("batches", 0) for summary in summaries),
        "slowest_batch_s": max((summary.get("slowest_batch_s", 0.0) for summary in summaries), default=0.0),
    }


def _check_summary(label: str, summary: dict[str, Any]) -> None:
    if (removed := summary.get("counts", {}).get("sessions_removed")) != EXPIRED:
        raise RuntimeError(f"{label}: the cleanup reports {removed} sessions removed, expected {EXPIRED:,} ({summary})")


def _use_database(url: str) -> dict:
    """Point this process's default connection at `url`'s database; returns the settings to restore."""
    settings_dict = connections["default"].settings_dict
    original = dict(settings_dict)
    connection.close()
    settings_dict["NAME"] = urlsplit(url).path.lstrip("/")
    return original


def run() -> Table:
    from cleanup.base import Options
    from cleanup.registry import CLEANUPS
    from supworker.models import UserSession

    redis_url = deployed.with_redis_db(settings.CONFIG.redis_url, REDIS_DB)
    database_url = deployed.bench_database(settings.DATABASES["default"])
    work = Path(tempfile.mkdtemp(prefix="supworker-bench-cleanup-"))
    env = deployed.isolated_env(TAG, redis_url, DATABASE_URL=database_url, LOG_DIR=str(work / "logs"))
    redis = Redis.from_url(redis_url)
    db = psycopg2.connect(database_url)
    db.autocommit = True
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        postmaster = psutil.Process(cursor.fetchone()[0]).parent()
    if postmaster is None:
        raise RuntimeError("cannot find PostgreSQL's postmaster (the parent of this connection's backend)")
    bench = Bench(db, postmaster, redis, env, work)
    original_database = _use_database(database_url)
    cutoff = timezone.now() - timezone.timedelta(days=settings.CONFIG.cleanup.session_inactive_days)
    failed = True
    try:
        redis.flushdb()

        def raw() -> None:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM user_sessions WHERE last_active_at < %s", [cutoff])

        def queryset() -> None:
            UserSession.objects.filter(last_active_at__lt=cutoff).delete()

        def batched() -> dict:
            return CLEANUPS[CLEANUP](Options.from_payload(None))  # the options a cron tick's job gets

        floor = bench.in_process("one raw DELETE … WHERE (floor; in this process)", raw)
        queryset_result = bench.in_process("QuerySet.delete() (in this process)", queryset)
        worker = bench.worker()
        command = bench.command("`manage.py cleanup sessions` (process, as an operator runs it)")
        in_process = bench.in_process("the same batched cleanup called in this process (in-process)", batched)
        empty = bench.command("`manage.py cleanup sessions`, nothing to delete", expired=0, live=0)
        failed = False
    finally:
        with contextlib.suppress(Exception):
            bench.sql("TRUNCATE user_sessions")
            bench.forget_runs()
            bench.sql("DELETE FROM cleanup_leases WHERE name = %s", [CLEANUP])
        db.close()
        redis.flushdb()
        connection.close()
        connections["default"].settings_dict.update(original_database)
        if failed:
            print(f"(process output and logs in {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return _table(floor, queryset_result, worker, command, in_process, empty)


def _table(
    floor: Result, queryset: Result, worker: Result, command: Result, in_process: Result, empty: Result
) -> Table:
    table = Table(
        f"Cleanup: delete {EXPIRED:,} expired sessions ({LIVE:,} live ones stay)",
        ["method", "seconds", "rows/s", "x raw DELETE", "batches", "slowest batch s", "process CPU s per 1,000",
         "PostgreSQL CPU s per 1,000", "peak RSS MB"],
    )  # fmt: skip
    per_1000 = 1000 / EXPIRED
    for result in (worker, command, in_process, floor, queryset):
        summary = result.summary
        batches = summary.get("batches", 1)
        slowest = f"{summary['slowest_batch_s']:.3f}" if summary else "-"
        cpu = "" if result.cpu is None else f"{result.cpu * per_1000:.4f}"
        table.rows.append([result.label, result.seconds, result.rate, f"{result.seconds / floor.seconds:.2f}", batches,
                           slowest, cpu, f"{result.postgres_cpu * per_1000:.4f}", result.peak_rss / 2**20])  # fmt: skip
    ratio, slowest, peak = worker.seconds / floor.seconds, worker.summary["slowest_batch_s"], worker.peak_rss / 2**20
    table.notes.append(
        f"targets for the process as deployed: ≤ 1.5 x raw: {_verdict(ratio <= 1.5)} ({ratio:.2f}); "
        f"every batch < 1 s: {_verdict(slowest < 1)} ({slowest:.3f} s); "
        f"peak memory < 200 MB: {_verdict(peak < 200)} ({peak:.0f} MB)"
    )
    table.notes.append(
        f"worker: {worker.summary['parts']} RQ job(s) (a run out of its CLEANUP_TIME_BUDGET_S continues in another),"
        " clocked from rq-scheduler's enqueue of the cron entry to the last record finished (the work-horse's fork"
        " and the job's records included); its CPU: the worker with its work-horses, its peak RSS: the largest of"
        " them (the work-horse)."
    )
    table.notes.append(
        "manage.py cleanup: clocked by its job record (started to finished: the run, not Django's start-up); its CPU"
        f" is the whole process's, start-up included: with nothing to delete it took {empty.cpu or 0:.2f} CPU s"
        f" ({empty.seconds:.3f} s in its run)."
    )
    table.notes.append(
        f"batch size {settings.CONFIG.cleanup.batch_size:,} (CLEANUP_BATCH_SIZE), each batch its own transaction."
        " PostgreSQL CPU: its postmaster and every backend (all of the server: other users count too)."
        " In-process rows: this process's CPU and RSS."
    )
    return table


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"
