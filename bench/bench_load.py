"""Load: 100,000 mixed jobs through the whole pipeline, as `make run` runs it.

Published to RabbitMQ while the service runs (one consumer, 2 media, 5 notification and 1
cleanup worker processes, as `make run` starts them: each from its Procfile line, with the
operator's settings), delivered to loopback FCM, SMTP (Postfix's smtp-sink) and SMS servers,
media written to a local store, every outcome recorded in PostgreSQL. The mix:
70 % push, 15 % e-mail, 10 % SMS, 4 % OTP e-mail, 0.8 % cleanup, 0.2 % image.

Printed: end-to-end throughput (first publish to last job recorded; Django's start-up is before),
the memory of each process kind and of Redis sampled over the run (it must stay flat), the CPU
seconds of each process kind per 1,000 jobs over the run, and what Redis holds afterwards:
every key left must carry a TTL (job results JOB_RESULT_TTL, dedup keys JOB_DEDUP_TTL). Then
the rows and on-disk size of every table supworker writes, after the run, after the cleanups
that bound them (`manage.py cleanup retention` and `job_records`, with --older-than 1s so that
the run's rows count as old) and after `cleanup maintenance` (VACUUM).

Isolation: its own database (`<name>_bench`), Redis database 13, exchange and queue names,
media and log directories, the loopback servers' endpoints and credentials; every other setting
is the default. E-mail and SMS rate limits are off while measuring (the defaults stand for a
provider's quota, which the stand-ins have not: they would measure the limit).
BENCH_LOAD_JOBS changes the count (e.g. 10000 for a quick look).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pika
from PIL import Image
from redis import Redis

from bench import deployed
from bench.bench_notifications import PROJECT, TOKEN, SmtpSink, _serve_fcm, _start_server
from bench.table import Table

JOBS = int(os.environ.get("BENCH_LOAD_JOBS", "100000"))
MIX = {"email": 0.15, "sms": 0.10, "otp": 0.04, "cleanup": 0.008, "image": 0.002}  # push: the rest
WORKERS = {kind: deployed.make_run_count(kind) for kind in ("media", "notifications", "cleanup")}  # as `make run`
REDIS_DB = 13
STALL_SECONDS = 60.0
SAMPLE_SECONDS = 2.0
SMS_KEY, SMS_SECRET = "bench-sms-key", "bench-sms-secret"
CLEANUPS = ["sessions", "temp_files", "prekeys", "stories"]
# What supworker writes: its records, the notification log, monitoring's and cleanup's tables, and
# the messenger's `messages` rows the image jobs update.
WRITTEN_TABLES = ["job_runs", "dead_letters", "notifications", "health_check_results", "global_statistics", "messages"]
CLEANUPS_AFTER = ["retention", "job_records"]  # the ones that bound those tables (cleanup/)
ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Sample:
    seconds: float
    done: int
    rss_mb: dict[str, float]  # per process kind, the long-lived processes (work-horses live for one job)
    redis_mb: float


def _serve_sms(connection) -> None:
    from tests.notification_servers import SmsServer

    server = SmsServer(key=SMS_KEY, secret=SMS_SECRET)
    server.start()
    connection.send(server.port)
    server.thread.join()


def run() -> list[Table]:
    with deployed.own_site("ld", REDIS_DB) as site:  # its Redis database emptied after: bench_drain wants it so
        return _run(site)


def _run(site: deployed.Site) -> list[Table]:
    from bench.bench_notifications import _with_channel, topology_declare, topology_delete

    config, db, redis, tag = site.config, site.db, site.redis, site.tag
    work = Path(tempfile.mkdtemp(prefix="supworker-load-"))
    smtp = SmtpSink()
    try:
        fcm, sms = [_start_server(target) for target in (_serve_fcm, _serve_sms)]
    except BaseException:
        smtp.stop()
        raise
    env = site.env(
        FCM_ENDPOINT=f"http://127.0.0.1:{fcm.port}", FCM_ACCESS_TOKEN=TOKEN, FCM_PROJECT_ID=PROJECT,
        SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp.port), SMTP_SECURITY="none",
        SMS_BACKEND="vonage", SMS_API_URL=f"http://127.0.0.1:{sms.port}", SMS_API_KEY=SMS_KEY,
        SMS_API_SECRET=SMS_SECRET, SMS_FROM_NUMBER="+15550100000",
        EMAIL_RATE_PER_SECOND="0", SMS_RATE_PER_SECOND="0",
        LOG_DIR=str(work / "logs"), MEDIA_ROOT=str(work / "media"), TEMP_DIR=str(work / "tmp"),
    )  # fmt: skip
    messages = _media_fixtures(db, work / "media", int(JOBS * MIX["image"]))
    processes: dict[str, list[deployed.Process]] = {}
    try:
        _with_channel(config, topology_declare)
        processes = _start(env, work)
        time.sleep(4)  # Django set-up of every process before the clock runs
        publisher = threading.Thread(target=_publish, args=(config, messages), daemon=True)
        start, cpu_before = time.perf_counter(), _cpu_seconds(processes)
        publisher.start()
        samples = _watch(db, redis, processes, tag, start)
        elapsed = samples[-1].seconds
        cpu = {kind: seconds - cpu_before[kind] for kind, seconds in _cpu_seconds(processes).items()}
        publisher.join(30)
        outcomes = _outcomes(db, tag)
        redis_after = _redis_keys(redis)
        sizes = _sizes_through_cleanups(db, env)
    finally:
        deployed.stop([process for group in processes.values() for process in group])
        fcm.stop()
        sms.stop()
        smtp.stop()
        _with_channel(config, topology_delete)
    print(f"(process output and logs in {work})")
    return [_table(samples, elapsed, cpu, outcomes, redis_after), _sizes_table(sizes)]


def _media_fixtures(db, media_root: Path, count: int) -> list[tuple[str, str]]:
    """Photos in the media store and their `messages` rows: (message id, storage key)."""
    media_root.mkdir(parents=True)
    made = []
    with db.cursor() as cursor:
        cursor.execute("TRUNCATE notifications, job_runs, dead_letters, messages")
        for n in range(count):
            key = f"uploads/load/{n}.jpg"
            (media_root / key).parent.mkdir(parents=True, exist_ok=True)
            Image.effect_noise((1600, 1200), 40).convert("RGB").save(media_root / key, quality=90)
            message_id = str(uuid.uuid4())
            cursor.execute(
                "INSERT INTO messages (id, sender_id, chat_id, content) VALUES (%s, %s, %s, '')",
                [message_id, str(uuid.uuid4()), str(uuid.uuid4())],
            )
            made.append((message_id, key))
    return made


def _start(env: dict[str, str], work: Path) -> dict[str, list[deployed.Process]]:
    """The Procfile's lines as they are: `rqworker` runs RQ's scheduler unless told not to (so no
    --with-scheduler), and RQ names each worker uniquely (so no --name); only the log files are
    named per process."""
    processes = {
        kind: [deployed.start(kind, env, work, name=f"{kind}{n}") for n in range(count)]
        for kind, count in WORKERS.items()
    }
    processes["consumer"] = [deployed.start("consumer", env, work)]
    return processes


def _cpu_seconds(processes: dict[str, list[deployed.Process]]) -> dict[str, float]:
    return {kind: deployed.cpu_seconds(group) for kind, group in processes.items()}


def _bodies(messages: list[tuple[str, str]]):
    """(routing key or OTP queue, body) of every job, the kinds interleaved."""
    counts = {kind: int(JOBS * share) for kind, share in MIX.items()}
    counts["image"] = len(messages)
    counts["push"] = JOBS - sum(counts.values())
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    random.Random(8).shuffle(kinds)  # noqa: S311 - interleaved, the same order every run
    images = iter(messages)
    for n, kind in enumerate(kinds):
        user = str(uuid.uuid4())
        common = {"userId": user, "title": f"Hello {n}", "body": "You have a new message"}
        if kind == "push":
            yield "notification.push", {**common, "type": "push", "fcmToken": f"load-token-{n}"}
        elif kind == "email":
            yield "notification.email", {**common, "type": "email", "email": f"user{n}@example.com"}
        elif kind == "sms":
            yield "notification.sms", {**common, "type": "sms", "phoneNumber": f"+1555{n:07d}"}
        elif kind == "otp":
            yield None, {"email": f"otp{n}@example.com", "otp": f"{n % 1_000_000:06d}"}
        elif kind == "cleanup":
            yield f"cleanup.{CLEANUPS[n % len(CLEANUPS)]}", {"type": CLEANUPS[n % len(CLEANUPS)]}
        else:
            message_id, key = next(images)
            yield "media.image", {"type": "image", "s3Key": key, "userId": user, "messageId": message_id}


def _publish(config, messages: list[tuple[str, str]]) -> None:
    tag = config.rabbitmq_queue_prefix
    connection = pika.BlockingConnection(pika.URLParameters(config.rabbitmq_urls[0]))
    channel = connection.channel()
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    for n, (routing_key, body) in enumerate(_bodies(messages)):
        body["jobId"] = f"{tag}-{n}"
        if routing_key is None:  # OTP e-mails arrive on their own queue, through the default exchange
            channel.basic_publish("", config.rabbitmq_queue_name, json.dumps(body).encode(), properties)
        else:
            channel.basic_publish(config.rabbitmq_exchange, routing_key, json.dumps(body).encode(), properties)
        if n % 2000 == 0:
            connection.process_data_events(0)  # heartbeats
    connection.close()


def _recorded(db, tag: str) -> int:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM job_runs WHERE job_id LIKE %s AND status IN ('succeeded', 'failed')",
            [tag + "-%"],
        )
        return cursor.fetchone()[0]


def _watch(db, redis: Redis, processes: dict[str, list[deployed.Process]], tag: str, start: float) -> list[Sample]:
    samples: list[Sample] = []
    last, moved_at = -1, time.monotonic()
    while True:
        done = _recorded(db, tag)
        now = time.perf_counter() - start
        rss = {kind: deployed.rss_mb(group) for kind, group in processes.items()}
        samples.append(Sample(now, done, rss, redis.info("memory")["used_memory"] / 2**20))
        if done >= JOBS:
            return samples
        if not all(process.alive() for group in processes.values() for process in group):
            raise RuntimeError(f"a process died at {done:,} of {JOBS:,} jobs")
        if done != last:
            last, moved_at = done, time.monotonic()
        elif time.monotonic() - moved_at > STALL_SECONDS:
            raise RuntimeError(f"stalled at {done:,} of {JOBS:,} jobs")
        time.sleep(SAMPLE_SECONDS)


def _outcomes(db, tag: str) -> dict[str, int]:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM job_runs WHERE job_id LIKE %s GROUP BY status", [tag + "-%"]
        )  # fmt: skip
        outcomes = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM notifications WHERE job_id LIKE %s AND success", [tag + "-%"])
        outcomes["notifications delivered"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM messages WHERE media_status = 'ready'")
        outcomes["images ready"] = cursor.fetchone()[0]
    return outcomes


def _redis_keys(redis: Redis) -> dict[str, object]:
    """What is left in Redis: keys, those without a TTL (by name: they should be RQ's bookkeeping), memory."""
    keys, without_ttl, longest = 0, [], 0
    for key in redis.scan_iter(count=1000):
        keys += 1
        ttl = redis.ttl(key)
        if ttl < 0:
            without_ttl.append(key.decode())
        longest = max(longest, ttl)
    return {"keys": keys, "without_ttl": sorted(without_ttl), "longest_ttl_h": longest / 3600,
            "mb": redis.info("memory")["used_memory"] / 2**20}  # fmt: skip


def _table(
    samples: list[Sample], elapsed: float, cpu: dict[str, float], outcomes: dict[str, int], redis_after: dict
) -> Table:
    kinds = ["consumer", *WORKERS]
    workers = ", ".join(f"{count} {kind}" for kind, count in WORKERS.items())
    table = Table(
        title=f"Load: {JOBS:,} mixed jobs end to end (consumer; workers: {workers}; as deployed)",
        columns=["moment", "seconds", "jobs done", *kinds, "Redis MB"],
    )
    for label, fraction in [("10 %", 0.1), ("25 %", 0.25), ("50 %", 0.5), ("75 %", 0.75), ("end", 1.0)]:
        sample = next(s for s in samples if s.done >= JOBS * fraction)
        table.rows.append([f"{label}: MB", sample.seconds, sample.done,
                           *(sample.rss_mb[kind] for kind in kinds), sample.redis_mb])  # fmt: skip
    table.rows.append(
        ["CPU s per 1,000 jobs", elapsed, JOBS, *(f"{1000 * cpu[kind] / JOBS:.3f}" for kind in kinds), ""]
    )
    table.notes = [
        f"throughput: {JOBS / elapsed:,.0f} jobs/s end to end ({elapsed:,.0f} s); outcomes: "
        + ", ".join(f"{name} {count:,}" for name, count in sorted(outcomes.items())),
        f"Redis afterwards: {redis_after['keys']:,.0f} keys, {redis_after['mb']:,.1f} MB, "
        f"the last expiring in {redis_after['longest_ttl_h']:,.1f} h; without a TTL: "
        + ", ".join(redis_after["without_ttl"]),
        "MB rows: resident memory of the long-lived processes of a kind (RQ's work-horses live for one job);"
        " the same over the run means flat.",
        "CPU row: user + system seconds (psutil) of a kind's processes, work-horses included, from the first publish"
        f" to the last job recorded, per 1,000 jobs of the mix; {1000 * sum(cpu.values()) / JOBS:.3f} for all of them.",
    ]
    return table


def _sizes(db) -> dict[str, tuple[int, float]]:
    """Rows and MB on disk (with indexes and TOAST) of each table supworker writes."""
    sizes = {}
    with db.cursor() as cursor:
        for table in WRITTEN_TABLES:
            cursor.execute(f'SELECT count(*), pg_total_relation_size(%s::regclass) FROM "{table}"', [table])  # noqa: S608
            rows, size = cursor.fetchone()
            sizes[table] = (rows, size / 2**20)
    return sizes


def _sizes_through_cleanups(db, env: dict[str, str]) -> list[dict[str, tuple[int, float]]]:
    """The sizes after the run, after the cleanups that bound the tables, and after VACUUM, each
    cleanup run as an operator runs it."""

    def cleanup(*args: str) -> None:
        command = [sys.executable, "manage.py", "cleanup", *args]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"manage.py cleanup {' '.join(args)} failed: {done.stderr[-2000:]}")

    snapshots = [_sizes(db)]
    time.sleep(1)  # the last row is older than --older-than now
    for name in CLEANUPS_AFTER:
        cleanup(name, "--older-than", "1s")
    snapshots.append(_sizes(db))
    cleanup("maintenance")
    snapshots.append(_sizes(db))
    return snapshots


def _sizes_table(snapshots: list[dict[str, tuple[int, float]]]) -> Table:
    after_run, after_cleanups, after_vacuum = snapshots
    table = Table(
        title=f"Tables supworker writes after the {JOBS:,}-job run, after `manage.py cleanup retention` and"
        " `job_records` with --older-than 1s (every row of the run counts as old) and after"
        " `cleanup maintenance` (VACUUM)",
        columns=["table", "rows after the run", "MB", "rows after the cleanups", "MB", "MB after VACUUM"],
    )
    for name in WRITTEN_TABLES:
        table.rows.append([name, *after_run[name], *after_cleanups[name], after_vacuum[name][1]])
    table.notes = [
        "MB: pg_total_relation_size (table, indexes, TOAST). With the default retentions rows stay 30 days"
        " (job_runs), 90 (notifications; dead letters, 30 once requeued), 7 (health checks), 365 (statistics).",
    ]
    return table
