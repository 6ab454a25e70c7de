"""Notification throughput end to end, through the processes as deployed, side by side in one run:

- push: `notification.push` messages published to RabbitMQ, drained by `manage.py consume_rabbit`
  and `manage.py rqworker notifications` processes, each started from its Procfile line, as many
  workers as `make run` starts (5), with the operator's settings: batches of 500, firebase-admin
  `send`, 100 in flight, carried by libcurl, against a local FCM HTTP v1 server
  (tests/notification_servers.py on uvicorn, in its own process), every delivery logged in
  `notifications`; against the naive design (one RQ job per notification, each calling
  firebase-admin `send` once and writing its row) on the same workers.
  Targets (issue 17): at least 2,500 pushes/s and at least 60 times the naive design.
- e-mail: `notification.email` messages the same way, to Postfix's smtp-sink (one SMTP session
  per batch of 50); against one RQ job per e-mail opening its own connection. Target: 1,000/s.
- both again with RQ's SimpleWorker (`--worker-class rq.worker.SimpleWorker`, no fork per RQ job):
  not the Procfile's worker, a comparison.
- the push floor (issue 17), right after the push run, against the same FCM server: Debian's
  `curl --parallel --parallel-max 100` sending as many `messages:send` requests, each as
  firebase-admin sends our pushes (the URL, the bearer token and the SDK's headers, the JSON body
  it encodes from push_message.build_message's messages), from a curl config file. Printed
  beside the push figure, with supworker's rate as a fraction of it.
- firebase-admin's send paths in this process, "in-process, send path only" (bench/push_floor.py):
  `messaging.send` from 100 threads per batch of 500 as notifications/push.py sends, over libcurl
  (FCM_HTTP_CLIENT=curl, the default) and over requests' own adapter (FCM_HTTP_CLIENT=requests);
  and `messaging.send_each_async` (httpx) per batch of 500; each with the same number of fresh
  messages: 3,000 (or the push count if lower; BENCH_SEND_PATH_COUNT changes it).
  Over http:// all of them speak HTTP/1.1 (httpx negotiates HTTP/2 only by TLS ALPN); the table
  says which protocol the server saw.

Timing: Django's start-up is not timed: the workers are registered in Redis and the consumer
is consuming (RabbitMQ counts it) before the clock starts. The clock runs from the first
publish (by this process, with pika, while the pipeline drains, as the messenger's API publishes
in production) to the last row logged; the naive design's from its first enqueue to its last
row (it skips RabbitMQ, which only flatters it). CPU: user + system seconds (psutil) of the
consumer process, and of the worker processes with their work-horses, over that window.
Each delivery is checked to have happened exactly once: one successful row per job id, and as
many requests at the FCM server or messages at smtp-sink.
The floor and the send paths are clocked by the FCM server, from the first to the last valid
request it received (authorised, a `messages:send` JSON body with a message, answered 200),
and it must have counted exactly the pushes sent, one per token (curl must also report 200 for
each); supworker's push run is clocked the same way too, for the fraction. CPU: curl's own
(rusage), this process's for the in-process paths (time.process_time, after an untimed warm-up
of 100 pushes), the FCM server's (psutil): it is Python on the same two cores, and when it
is busy a whole core the floor is its limit, not curl's.

Settings are the operator's defaults but for isolation: own exchange and queue names, Redis
database 12, own database (`<name>_bench`), own log directory, the loopback servers' endpoints
and credentials; and EMAIL_RATE_PER_SECOND=0 (the default 50/s stands for a provider's quota,
which smtp-sink has not: with it this would measure the limit). BENCH_NOTIFICATIONS_COUNT
changes the push count (e-mails: a fifth), BENCH_NOTIFICATION_WORKERS the worker count.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import pika
import psutil
import psycopg2
from redis import Redis
from rq import Queue, Worker

from bench import deployed, push_floor
from bench.bench_ingest import _wait_for
from bench.table import Table
from supworker import jobtypes

PUSHES = int(os.environ.get("BENCH_NOTIFICATIONS_COUNT", "10000"))
EMAILS = PUSHES // 5
NAIVE_PUSHES = min(300, PUSHES)  # one forked RQ job each: the full count would take many minutes; the rate counts
NAIVE_EMAILS = min(200, EMAILS)
# The in-process send paths each send as many (3,000 at most): send_each_async spends about 7 ms of
# CPU a push here, 10,000 would add minutes. The rates and CPU per push are what is compared.
SEND_PATH_PUSHES = int(os.environ.get("BENCH_SEND_PATH_COUNT") or min(3_000, PUSHES))
WORKERS = int(os.environ.get("BENCH_NOTIFICATION_WORKERS") or deployed.make_run_count("notifications"))
SIMPLE_WORKER = ("--worker-class", "rq.worker.SimpleWorker")
TARGET_PUSHES, TARGET_TIMES_NAIVE, TARGET_EMAILS = 2_500, 60, 1_000
REDIS_DB = 12
NAIVE_QUEUE = "notifications"  # one of `rqworker notifications`'s queues; Redis database 12 is the bench's alone
TOKEN = "bench-static-token"  # noqa: S105 - the loopback server's token
PROJECT = "sup-bench"
STALL_SECONDS = 30.0
# Google's servers are tens of milliseconds away: a second stand-in answers each push this late,
# and as many pushes (half the count) go to it, through supworker and through curl.
FAR_LATENCY_S = 0.05
FAR_PUSHES = max(PUSHES // 2, 1)
# Latency from publish to the FCM stand-in, published at half the rate the push run reached.
PACED_PUSHES = max(PUSHES // 4, 1)


# --- the naive design: what RQ runs, one job per notification -------------------------------------
def naive_push(job_id: str, user_id: str, token: str, title: str, body: str) -> None:
    from firebase_admin import messaging

    from notifications import fcm
    from notifications.models import Notification

    message = messaging.Message(token=token, notification=messaging.Notification(title=title, body=body))
    message_id = messaging.send(message, app=fcm.app())
    Notification.objects.create(
        job_id=job_id, user_id=user_id, type="push", title=title, body=body, success=True,
        recipient="naive", provider_message_id=message_id,
    )  # fmt: skip


def naive_email(job_id: str, user_id: str, address: str, title: str, body: str) -> None:
    from django.core.mail import EmailMultiAlternatives

    from notifications.models import Notification
    from notifications.rendering import render

    rendered = render("notification", {"title": title, "body": body})
    message = EmailMultiAlternatives(rendered.subject, rendered.text, to=[address])
    message.attach_alternative(rendered.html, "text/html")
    message.send()  # a connection of its own
    Notification.objects.create(
        job_id=job_id, user_id=user_id, type="email", title=title, body=body, success=True, recipient="naive"
    )


# --- loopback servers, each in its own process -----------------------------------------------------
def _serve_fcm(connection: Connection, latency_s: float = 0.0) -> None:
    """The FCM stand-in; answers "counts" on `connection` with (requests received, distinct tokens),
    "window" with the push_floor.Window since the last "window" (and opens the next). Each answer
    leaves `latency_s` after its request arrived."""
    server = push_floor.windowed_fcm_server(TOKEN, latency_s)
    server.start()
    connection.send(server.port)
    while command := connection.recv():
        if command == "window":
            connection.send(server.take_window())
        else:
            with server.lock:
                connection.send((sum(server.attempts.values()), len(server.attempts)))


class SmtpSink:
    """Postfix's smtp-sink: a real SMTP server in C, made for benchmarks, that accepts and counts
    every message. aiosmtpd (the tests' server) spends 2 to 4 ms of CPU a message on the same two
    cores as the workers, more than the client it serves."""

    def __init__(self) -> None:
        from tests.notification_servers import free_port, wait_until_listening

        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it will not run as root
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's life, closed in stop()
        # -c: print its counters (sessions, messages) as it goes; 1024: the listen backlog.
        self.process = subprocess.Popen(
            ["smtp-sink", "-c", *user, f"127.0.0.1:{self.port}", "1024"], stdout=self.output, stderr=subprocess.STDOUT
        )
        alive = lambda: self.process.poll() is None  # noqa: E731
        wait_until_listening(self.port, alive, "smtp-sink (make bench installs it: Debian's postfix)")

    def messages(self) -> int:
        """How many messages it has accepted so far (its last `mesg=` counter)."""
        self.output.seek(0)
        counts = re.findall(rb"mesg=(\d+)", self.output.read())
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.output.close()


@dataclasses.dataclass
class StandIn:
    """A loopback server in a process of its own (spawned: it shares nothing with this one)."""

    process: BaseProcess
    port: int
    connection: Connection

    def received(self) -> tuple[int, int]:
        """(requests, distinct tokens) so far; the FCM stand-in's only."""
        self.connection.send("counts")
        return self.connection.recv()

    def window(self) -> push_floor.Window:
        """The valid requests since the last call, first and last arrival; the FCM stand-in's only."""
        self.connection.send("window")
        return self.connection.recv()

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.process.kill()
        self.process.join()


def _start_server(target, *args) -> StandIn:
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    process = context.Process(target=target, args=(there, *args), daemon=True)
    process.start()
    if not here.poll(30):
        process.kill()
        raise RuntimeError(f"{target.__name__} did not start within 30 s")
    return StandIn(process, here.recv(), here)


@dataclasses.dataclass
class Drain:
    count: int
    seconds: float
    workers_cpu: float
    consumer_cpu: float | None = None  # None: no consumer (the naive design enqueues directly)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


@dataclasses.dataclass
class Sent:
    """One path's pushes as the FCM stand-in received them."""

    count: int
    window: push_floor.Window  # first to last valid request at the stand-in
    server_cpu: float  # the stand-in's CPU seconds meanwhile
    client: push_floor.ClientRun | None = None  # None: supworker's processes (their CPU is in the Drain)

    @property
    def rate(self) -> float:
        return self.window.rate()


@dataclasses.dataclass
class Bench:
    env: dict[str, str]
    work: Path
    redis: Redis
    db: psycopg2.extensions.connection
    fcm: StandIn
    smtp: SmtpSink

    def supworker(
        self, prefix: str, count: int, make_body, routing_key: str, *worker_args: str, pace: float = 0.0
    ) -> Drain:
        """The consumer and worker processes as deployed, started and idle; then `count` messages
        published and drained. The clock and the CPU count from the first publish on. With `pace`,
        messages are published that many a second, each carrying its publish time (`data.sentAt`)."""
        from django.conf import settings

        from bench.bench_ingest import _notification_queue

        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        bodies = [json.dumps(make_body(n, f"{prefix}-{n}")).encode() for n in range(count)]
        sent = self._sent()
        workers = self._workers(prefix, *worker_args)
        consumer = deployed.start("consumer", self.env, self.work, name=f"{prefix}-consumer")
        processes = [consumer, *workers]
        alive = lambda: all(process.alive() for process in processes)  # noqa: E731
        connection = pika.BlockingConnection(pika.URLParameters(settings.CONFIG.rabbitmq_urls[0]))
        try:
            channel = connection.channel()
            consuming = lambda: channel.queue_declare(_notification_queue(), passive=True).method.consumer_count  # noqa: E731
            _wait_for(consuming, 1, f"the consumer process consuming ({prefix})", 0.05, alive, stall=60)
            start = time.perf_counter()
            consumer_cpu, workers_cpu = consumer.cpu_seconds(), deployed.cpu_seconds(workers)
            for n, body in enumerate(bodies):
                if pace:
                    time.sleep(max(0.0, start + n / pace - time.perf_counter()))
                    paced = json.loads(body)
                    paced["data"] = {**paced.get("data", {}), "sentAt": f"{time.time():.6f}"}
                    body = json.dumps(paced).encode()
                channel.basic_publish(settings.CONFIG.rabbitmq_exchange, routing_key, body, properties)
            connection.close()
            self._wait_logged(prefix, count, alive)
            drain = Drain(count, time.perf_counter() - start, deployed.cpu_seconds(workers) - workers_cpu,
                          consumer.cpu_seconds() - consumer_cpu)  # fmt: skip
        finally:
            if connection.is_open:
                connection.close()
            deployed.stop(processes)
        self._verify(prefix, count, sent, processes)
        return drain

    def naive(self, prefix: str, count: int, function, make_args) -> Drain:
        """One RQ job per notification, enqueued by this process on the same worker processes."""
        sent = self._sent()
        workers = self._workers(prefix)
        queue = Queue(NAIVE_QUEUE, connection=self.redis)
        jobs = [Queue.prepare_data(function, make_args(n, f"{prefix}-{n}")) for n in range(count)]
        alive = lambda: all(worker.alive() for worker in workers)  # noqa: E731
        try:
            start, cpu = time.perf_counter(), deployed.cpu_seconds(workers)
            for offset in range(0, count, 500):
                queue.enqueue_many(jobs[offset : offset + 500])
            self._wait_logged(prefix, count, alive)
            drain = Drain(count, time.perf_counter() - start, deployed.cpu_seconds(workers) - cpu)
        finally:
            deployed.stop(workers)
        self._verify(prefix, count, sent, workers)
        return drain

    def at_stand_in(self, count: int, send) -> Sent:
        """What `send(on_timed)` (a push_floor path, which calls `on_timed` just before its clock
        starts) delivered to the FCM stand-in: checked to be `count` valid requests, one per token."""
        marks: dict = {}

        def on_timed() -> None:
            marks["sent"], _, marks["cpu"] = self._sent(), self.fcm.window(), self.fcm.cpu_seconds()

        client = send(on_timed)
        window, server_cpu = self.fcm.window(), self.fcm.cpu_seconds() - marks["cpu"]
        requests, tokens, _ = (after - before for after, before in zip(self._sent(), marks["sent"], strict=True))
        if not window.requests == requests == tokens == count:
            raise RuntimeError(f"the FCM stand-in counted {window.requests:,} valid requests ({requests:,} in all,"
                               f" {tokens:,} tokens), expected {count:,}")  # fmt: skip
        return Sent(count, window, server_cpu, client)

    def curl_floor(self, prefix: str, count: int) -> Sent:
        """The same FCM requests from `curl --parallel --parallel-max 100`."""
        from notifications import fcm

        bodies = [push_floor.request_body(message) for message in _push_messages(prefix, count)]
        url = fcm.send_url(f"http://127.0.0.1:{self.fcm.port}", PROJECT)
        headers = push_floor.request_headers(TOKEN, url)
        return self.at_stand_in(count, lambda on_timed: push_floor.run_curl(url, headers, bodies, self.work, on_timed))

    def send_paths(self, prefix: str, count: int) -> dict[str, Sent]:
        """firebase-admin's send paths in this process: `send` from 100 threads over libcurl, over
        requests' adapter, and `send_each_async`, each with `count` fresh messages."""
        from django.conf import settings

        from notifications import fcm

        original, apps, results = settings.CONFIG, [], {}
        try:
            for path in ("curl", "requests", "async"):
                # send_each_async never uses the requests session: the SDK's own app, as shipped, serves it.
                settings.CONFIG = original.with_section(
                    "notifications", fcm_endpoint=f"http://127.0.0.1:{self.fcm.port}", fcm_access_token=TOKEN,
                    fcm_project_id=PROJECT, fcm_http_client="requests" if path == "async" else path,
                )  # fmt: skip
                app = fcm.app()
                apps.append(app)
                warm_up = _push_messages(f"{prefix}-{path}-warm", push_floor.WARM_UP)
                messages = _push_messages(f"{prefix}-{path}", count)
                sender = push_floor.send_each_async if path == "async" else push_floor.send_threads
                results[path] = self.at_stand_in(count, lambda on_timed: sender(app, messages, warm_up, on_timed))  # noqa: B023 - called at once
        finally:
            settings.CONFIG = original
            push_floor.forget_apps(list(dict.fromkeys(apps)))
        return results

    def _workers(self, prefix: str, *worker_args: str) -> list[deployed.Process]:
        """WORKERS `rqworker notifications` processes, started and registered in Redis (Django set up)."""
        workers = [
            deployed.start("notifications", self.env, self.work, *worker_args, name=f"{prefix}-worker{n}")
            for n in range(WORKERS)
        ]
        pids = {worker.popen.pid for worker in workers}
        registered = lambda: sum(w.pid in pids for w in Worker.all(connection=self.redis))  # noqa: E731
        try:
            _wait_for(registered, WORKERS, "workers registered", 0.05, lambda: all(w.alive() for w in workers), 60)
        except BaseException:
            deployed.stop(workers)
            raise
        return workers

    def _wait_logged(self, prefix: str, count: int, alive) -> None:
        def logged() -> int:
            with self.db.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM notifications WHERE job_id LIKE %s AND success", [prefix + "-%"])
                return cursor.fetchone()[0]

        _wait_for(logged, count, f"notifications logged ({prefix})", 0.02, alive, STALL_SECONDS)

    def _sent(self) -> tuple[int, int, int]:
        """What the stand-ins have received so far: FCM requests, FCM tokens, smtp-sink messages."""
        return (*self.fcm.received(), self.smtp.messages())

    def _verify(self, prefix: str, count: int, sent_before: tuple[int, int, int], processes) -> None:
        """Every notification delivered and logged exactly once (checked once the processes stopped)."""
        with self.db.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE success) FROM notifications"
                " WHERE job_id LIKE %s",
                [prefix + "-%"],
            )
            rows, job_ids, succeeded = cursor.fetchone()
        requests, tokens, mails = (after - before for after, before in zip(self._sent(), sent_before, strict=True))
        problems = []
        if not rows == job_ids == succeeded == count:
            problems.append(f"{rows:,} rows for {job_ids:,} job ids, {succeeded:,} successful, expected {count:,} each")
        if requests + mails != count or (requests and tokens != requests):
            problems.append(f"the stand-ins received {requests:,} FCM requests for {tokens:,} tokens and"
                            f" {mails:,} e-mails, expected {count:,} notifications")  # fmt: skip
        if problems:
            outputs = "; ".join(f"{process.log}" for process in processes)
            raise RuntimeError(f"{prefix} was not delivered exactly once: {'; '.join(problems)} (output: {outputs})")


# --- the run -------------------------------------------------------------------------------------
def run() -> list[Table]:
    with deployed.own_site("bn", REDIS_DB) as site:
        return _run(site)


def _run(site: deployed.Site) -> list[Table]:
    tag, config, db = site.tag, site.config, site.db
    work = Path(tempfile.mkdtemp(prefix="supworker-bench-notifications-"))
    smtp = SmtpSink()
    try:
        fcm = _start_server(_serve_fcm)
    except BaseException:
        smtp.stop()
        raise
    env = site.env(
        LOG_DIR=str(work / "logs"),
        FCM_ENDPOINT=f"http://127.0.0.1:{fcm.port}", FCM_ACCESS_TOKEN=TOKEN, FCM_PROJECT_ID=PROJECT,
        SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp.port), SMTP_SECURITY="none", EMAIL_RATE_PER_SECOND="0",
    )  # fmt: skip
    bench = Bench(env, work, site.redis, db, fcm, smtp)
    try:
        _with_channel(config, topology_declare)
        fcm.window()  # opens the push run's
        stand_in_cpu = fcm.cpu_seconds()
        push = bench.supworker(f"{tag}-push", PUSHES, _push_body, "notification.push")
        push_at_stand_in = Sent(PUSHES, fcm.window(), fcm.cpu_seconds() - stand_in_cpu)
        paced = bench.supworker(f"{tag}-paced", PACED_PUSHES, _push_body, "notification.push", pace=push.rate / 2)
        paced_window = fcm.window()
        simple_paced = bench.supworker(f"{tag}-spaced", PACED_PUSHES, _push_body, "notification.push",
                                       *SIMPLE_WORKER, pace=push.rate / 2)  # fmt: skip
        simple_paced_window = fcm.window()
        floor = bench.curl_floor(f"{tag}-curl", PUSHES)
        paths = bench.send_paths(f"{tag}-send", SEND_PATH_PUSHES)
        simple = bench.supworker(f"{tag}-spush", PUSHES, _push_body, "notification.push", *SIMPLE_WORKER)
        naive = bench.naive(f"{tag}-npush", NAIVE_PUSHES, naive_push, _push_args)
        mail = bench.supworker(f"{tag}-mail", EMAILS, _email_body, "notification.email")
        simple_mail = bench.supworker(f"{tag}-smail", EMAILS, _email_body, "notification.email", *SIMPLE_WORKER)
        naive_mail = bench.naive(f"{tag}-nmail", NAIVE_EMAILS, naive_email, _email_args)
        far, far_floor = _far_away(bench, f"{tag}-far")
    finally:
        _with_channel(config, topology_delete)
        with db.cursor() as cursor:
            for table in ("notifications", "job_runs", "dead_letters"):
                cursor.execute(f"DELETE FROM {table} WHERE job_id LIKE %s", [tag + "-%"])  # noqa: S608 - our names
        fcm.stop()
        smtp.stop()
    print(f"(process output and logs in {work})")
    return [
        _table(push, simple, naive, mail, simple_mail, naive_mail, push_at_stand_in, floor),
        _paths_table(push, push_at_stand_in, floor, paths),
        _far_table(far, far_floor),
        _latency_table(
            push,
            [
                ("Procfile workers", paced, paced_window),
                ("SimpleWorker (no fork per RQ job)", simple_paced, simple_paced_window),
            ],
        ),
    ]


def _latency_table(push: Drain, runs: list[tuple[str, Drain, push_floor.Window]]) -> Table:
    table = Table(
        title="Push latency from publish to the FCM stand-in, at half the rate the push run reached",
        columns=["workers", "pushes", "published per second", "delivered per second", "p50 ms", "p99 ms", "max ms"],
    )
    for label, paced, window in runs:
        latencies = sorted(window.latencies)
        if len(latencies) != paced.count:
            raise RuntimeError(f"{len(latencies):,} latencies for {paced.count:,} paced pushes")

        def percentile(share: float, latencies: list[float] = latencies) -> str:
            return f"{1000 * latencies[min(len(latencies) - 1, int(share * len(latencies)))]:.1f}"

        table.rows.append([label, paced.count, f"{push.rate / 2:,.0f}", paced.rate, percentile(0.50),
                           percentile(0.99), f"{1000 * latencies[-1]:.1f}"])  # fmt: skip
    table.notes = [
        "Each push carries the time it was published (data.sentAt, this process's clock); the stand-in, on the same"
        " machine's clock, takes its arrival: RabbitMQ, the consumer's batch, RQ, a work-horse's fork, the send.",
    ]
    return table


def _far_away(bench: Bench, prefix: str) -> tuple[tuple[Drain, Sent], Sent]:
    """FAR_PUSHES through supworker as deployed, then through curl, to a stand-in answering each
    request FAR_LATENCY_S after it arrived."""
    far = _start_server(_serve_fcm, FAR_LATENCY_S)
    try:
        env = bench.env | {"FCM_ENDPOINT": f"http://127.0.0.1:{far.port}"}
        far_bench = dataclasses.replace(bench, env=env, fcm=far)
        far.window()  # opens supworker's
        cpu = far.cpu_seconds()
        drain = far_bench.supworker(prefix, FAR_PUSHES, _push_body, "notification.push")
        at_stand_in = Sent(FAR_PUSHES, far.window(), far.cpu_seconds() - cpu)
        floor = far_bench.curl_floor(f"{prefix}-curl", FAR_PUSHES)
    finally:
        far.stop()
    return (drain, at_stand_in), floor


def _far_table(far: tuple[Drain, Sent], floor: Sent) -> Table:
    drain, at_stand_in = far
    table = Table(
        title=f"Push to an FCM stand-in answering {1000 * FAR_LATENCY_S:.0f} ms after each request (clocked by it)",
        columns=["client", "pushes", "seconds", "per second", "most requests in flight", "end to end per second"],
    )
    table.rows.append([f"supworker as deployed (consume_rabbit + {WORKERS} rqworker, 100 sends in flight each)",
                       at_stand_in.count, at_stand_in.window.seconds, at_stand_in.rate,
                       at_stand_in.window.most_in_flight, drain.rate])  # fmt: skip
    table.rows.append([f"{push_floor.curl_version()} --parallel --parallel-max 100", floor.count,
                       floor.window.seconds, floor.rate, floor.window.most_in_flight, ""])  # fmt: skip
    table.notes = [
        f"Requests in flight bound the rate at this latency: at most in-flight / {FAR_LATENCY_S} s"
        f" ({100 / FAR_LATENCY_S:,.0f}/s for 100). supworker's workers each keep up to 100 of a batch in flight.",
    ]
    return table


def _table(push: Drain, simple: Drain, naive: Drain, mail: Drain, simple_mail: Drain, naive_mail: Drain,
           push_at_stand_in: Sent, floor: Sent) -> Table:  # fmt: skip
    # Read here, not at import: the loopback servers' spawned processes import this module
    # before Django is set up, when no app has declared its job types yet.
    push_batch = jobtypes.job_type("notification.push").batch_size
    email_batch = jobtypes.job_type("notification.email").batch_size
    times_naive = push.rate / naive.rate
    table = Table(
        title=f"Notifications end to end (`consume_rabbit` and {WORKERS} `rqworker notifications` processes as"
        " deployed, loopback FCM v1 server and smtp-sink)",
        columns=["design", "notifications", "seconds", "per second", "consumer CPU s per 1,000",
                 "workers CPU s per 1,000", "target"],
    )  # fmt: skip
    for label, drain, target in [
        (f"push, supworker (batches of {push_batch}, 100 sends in flight)", push, push.rate >= TARGET_PUSHES),
        ("push, supworker, SimpleWorker (no fork per RQ job; not the Procfile's)", simple, None),
        ("push, naive (1 RQ job + send each)", naive, None),
        (f"e-mail, supworker (1 SMTP session per {email_batch})", mail, mail.rate >= TARGET_EMAILS),
        ("e-mail, supworker, SimpleWorker (no fork per RQ job; not the Procfile's)", simple_mail, None),
        ("e-mail, naive (1 RQ job + connection each)", naive_mail, None),
    ]:
        consumer = "" if drain.consumer_cpu is None else f"{1000 * drain.consumer_cpu / drain.count:.3f}"
        workers = f"{1000 * drain.workers_cpu / drain.count:.3f}"
        verdict = "" if target is None else _verdict(target)
        table.rows.append([label, drain.count, drain.seconds, drain.rate, consumer, workers, verdict])
        if drain is push:
            table.rows.append(["push floor: curl --parallel --parallel-max 100, same requests, same stand-in",
                               floor.count, floor.window.seconds, floor.rate, "", "", ""])  # fmt: skip
            table.rows.append(["push, supworker as a fraction of that floor (at the stand-in; end to end)", "", "",
                               f"{push_at_stand_in.rate / floor.rate:.3f} ({push.rate / floor.rate:.3f})", "", "",
                               ""])  # fmt: skip
        if drain is naive:
            table.rows.append(["push speed-up (Procfile workers over naive)", "", "", times_naive, "", "",
                               _verdict(times_naive >= TARGET_TIMES_NAIVE)])  # fmt: skip
    table.notes = [
        f"targets (issue 17): push ≥ {TARGET_PUSHES:,}/s and ≥ {TARGET_TIMES_NAIVE}x naive; e-mail ≥"
        f" {TARGET_EMAILS:,}/s. Every notification was delivered (FCM requests, smtp-sink messages) and logged in"
        " `notifications` exactly once.",
        "clock: from the first publish to RabbitMQ (the naive design: its first enqueue to RQ), by this process"
        " while the pipeline drains, to the last row logged; Django's start-up is not timed (every process idle"
        f" before). CPU: psutil, over the same window; workers: the {WORKERS} processes with their work-horses.",
        f"naive runs measure {NAIVE_PUSHES:,} pushes and {NAIVE_EMAILS:,} e-mails (RQ forks a process per job).",
        "push floor: clocked by the FCM stand-in, first to last valid request (every one answered 200 and counted);"
        f" supworker at the stand-in the same way: {push_at_stand_in.rate:,.0f}/s. See the next table.",
    ]
    return table


def _paths_table(push: Drain, push_at_stand_in: Sent, floor: Sent, paths: dict[str, Sent]) -> Table:
    table = Table(
        title="Push send paths against the same FCM stand-in, clocked by it (first to last valid request)",
        columns=["path", "pushes", "seconds", "per second", "of the curl floor", "client wall s",
                 "client CPU s per 1,000", "stand-in CPU s per 1,000", "stand-in cores busy", "HTTP"],
    )  # fmt: skip
    supworker_cpu = (push.workers_cpu + (push.consumer_cpu or 0.0)) / push.count
    for label, sent, client_cpu in [
        (f"C floor: {push_floor.curl_version()} --parallel --parallel-max 100", floor, None),
        (f"supworker as deployed (consume_rabbit + {WORKERS} rqworker; end to end {push.rate:,.0f}/s)",
         push_at_stand_in, supworker_cpu),
        ("in-process, send path only: firebase-admin send, 100 threads, libcurl (FCM_HTTP_CLIENT=curl)",
         paths["curl"], None),
        ("in-process, send path only: firebase-admin send, 100 threads, requests (FCM_HTTP_CLIENT=requests)",
         paths["requests"], None),
        ("in-process, send path only: firebase-admin send_each_async (httpx), 500 per call", paths["async"], None),
    ]:  # fmt: skip
        client = sent.client
        wall = f"{client.wall:.2f}" if client else ""
        cpu = client.cpu / sent.count if client else client_cpu
        table.rows.append([label, sent.count, sent.window.seconds, sent.rate, f"{sent.rate / floor.rate:.3f}", wall,
                           f"{1000 * cpu:.3f}", f"{1000 * sent.server_cpu / sent.count:.3f}",
                           f"{sent.server_cpu / sent.window.seconds:.2f}", sent.window.protocol()])  # fmt: skip
    curl_cpu, async_cpu = (paths[path].client.cpu for path in ("curl", "async"))  # type: ignore[union-attr]
    table.notes = [
        f"send_each_async against libcurl: {paths['async'].rate / paths['curl'].rate:.2f}x the rate,"
        f" {async_cpu / curl_cpu:.2f}x the client CPU per push.",
        "clock: the stand-in's, from the first to the last valid request (authorised, a messages:send body with a"
        " message, answered 200); each path's count at the stand-in is checked to be the pushes sent, one per token."
        " client wall s: the client's own clock (curl: its process, config file parsing included).",
        "client CPU: curl's rusage; in-process rows: this process (time.process_time), after an untimed warm-up of"
        f" {push_floor.WARM_UP} pushes; supworker: its consumer and workers, over its end-to-end clock."
        " The messages are built first (push_message.build_message), untimed; encoding them is part of the send.",
        "stand-in cores busy: its CPU seconds over its clock. The stand-in (uvicorn, Python) runs on the same 2 cores:"
        " near 1.0 it, not the client, sets the pace.",
        "HTTP: as the stand-in saw it. Over http:// httpx cannot negotiate HTTP/2 (no ALPN, and firebase-admin does"
        " not ask for prior knowledge): send_each_async was measured on HTTP/1.1, with httpx's default pool (100"
        " connections, 20 kept alive).",
    ]
    return table


def _with_channel(config, action) -> None:
    """A connection per step: a BlockingConnection left idle through a long phase misses its heartbeats."""
    with deployed.channel(config) as channel:
        action(channel)


def topology_declare(channel) -> None:
    from supworker.rabbit import topology

    topology.declare(channel)


def topology_delete(channel) -> None:
    from django.conf import settings

    from supworker.rabbit import topology

    for queue in [source.queue for source in topology.sources()] + [topology.dead_letter_queue()]:
        channel.queue_delete(queue)
    channel.exchange_delete(settings.CONFIG.rabbitmq_exchange)
    channel.exchange_delete(topology.dead_letter_exchange())


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _push_body(n: int, job_id: str) -> dict:
    return {"type": "push", "userId": str(uuid.uuid4()), "title": "New message",
            "body": f"You have a new message ({n})", "fcmToken": f"bench-token-{n}-{uuid.uuid4().hex}",
            "data": {"chatId": str(n)}, "jobId": job_id}  # fmt: skip


def _push_messages(prefix: str, count: int) -> list:
    """The firebase-admin messages supworker would send for `count` pushes (one device each)."""
    from notifications.push_message import build_message
    from supworker.envelope import Envelope

    envelopes = [Envelope(job_id=f"{prefix}-{n}", job_type="notification.push", payload=_push_body(n, f"{prefix}-{n}"))
                 for n in range(count)]  # fmt: skip
    return [build_message(envelope, envelope.payload["fcmToken"]) for envelope in envelopes]


def _email_body(n: int, job_id: str) -> dict:
    return {"type": "email", "userId": str(uuid.uuid4()), "title": f"Weekly digest {n}",
            "body": "Here is what you missed this week.", "email": f"user{n}@example.com", "jobId": job_id}  # fmt: skip


def _push_args(n: int, job_id: str) -> tuple:
    return (job_id, str(uuid.uuid4()), f"bench-token-{n}", "New message", f"You have a new message ({n})")


def _email_args(n: int, job_id: str) -> tuple:
    return (job_id, str(uuid.uuid4()), f"user{n}@example.com", f"Weekly digest {n}", "Here is what you missed.")
