"""Push rate against multicast size, through the processes as deployed (issue 17, part 3).

A `notification.push` may name up to 1,000 users (`userIds`): the worker reads the active devices
of every user of its batch in PostgreSQL (`fcm_devices`, one query per batch), claims a log row per
device, and sends one FCM request per device. So a message's cost grows with its devices, and
the consumer batches messages (500 a job), not devices: how does the delivery rate hold up when
each message fans out to 2, 200 or 2,000 devices?

Rows: messages addressed to 1, 100 and 1,000 users with 2 active devices each (seeded in the
benchmark's own database before the row, deleted afterwards), about the same number of FCM
requests per row (BENCH_MULTICAST_PUSHES, 10,000 by default). Each message names its users in
`userIds` (`userId`: the first), a title and body, and a chat (`data.chatId`, a UUID: its users'
mutes are looked up, as for a group chat's message). The machinery is bench_notifications':
`consume_rabbit` and `rqworker notifications` processes from their Procfile lines (as many as
`make run` starts), the operator's settings but for isolation (own exchange and queue names,
Redis database 12, the `<name>_bench` database, own log directory, the loopback FCM v1
stand-in's endpoint and token), the clock from the first publish to the last row logged, CPU by
psutil over the same window. Every device must have got exactly one push per message: the
stand-in counts one request for each seeded token, and the notification log holds exactly the
rows of every (message, device) pair, each successful.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from bench import deployed
from bench.bench_notifications import (
    PROJECT,
    REDIS_DB,
    TOKEN,
    WORKERS,
    Bench,
    Drain,
    _serve_fcm,
    _start_server,
    _with_channel,
    topology_declare,
    topology_delete,
)
from bench.table import Table

PUSHES = int(os.environ.get("BENCH_MULTICAST_PUSHES", "10000"))  # FCM requests per row, about
USERS_PER_MESSAGE = (1, 100, 1_000)  # 1,000: the most `userIds` a message may name
DEVICES_PER_USER = 2


class NoMail:
    """Stands in for bench_notifications' smtp-sink, which a push-only run does not start."""

    def messages(self) -> int:
        return 0

    def stop(self) -> None:
        pass


@dataclasses.dataclass
class MulticastBench(Bench):
    """bench_notifications' Bench, for messages that each reach several devices: it waits for, and
    checks, a log row per (message, device) rather than one per message."""

    addressed: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # job id -> its devices' tokens
    # prefix -> requests sent again: FCM did not answer within FCM_TIMEOUT_SECONDS, so the push was
    # retried (shared by the copies dataclasses.replace makes)
    resent: dict[str, int] = dataclasses.field(default_factory=dict)

    def _wait_logged(self, prefix: str, count: int, alive) -> None:
        super()._wait_logged(prefix, sum(len(tokens) for tokens in self.addressed.values()), alive)

    def _verify(self, prefix: str, count: int, sent_before: tuple[int, int, int], processes) -> None:
        """Every device of every message sent to, and logged once, successfully. A request the
        stand-in answered after the client's timeout is sent again (at least once, with the same
        collapse key): counted, not an error."""
        from notifications.push import token_reference

        pushes = sum(len(tokens) for tokens in self.addressed.values())
        expected = {(job_id, token_reference(token)) for job_id, tokens in self.addressed.items() for token in tokens}
        with self.db.cursor() as cursor:
            cursor.execute("SELECT job_id, recipient, success FROM notifications WHERE job_id LIKE %s", [prefix + "-%"])
            rows = cursor.fetchall()
        logged = {(job_id, recipient) for job_id, recipient, _ in rows}
        requests, tokens, _ = (after - before for after, before in zip(self._sent(), sent_before, strict=True))
        problems = []
        if len(self.addressed) != count:
            problems.append(f"{count:,} messages published, {len(self.addressed):,} expected")
        if len(rows) != pushes or logged != expected or not all(success for *_, success in rows):
            problems.append(f"{len(rows):,} log rows, {len(logged & expected):,} of the {pushes:,} (message, device)"
                            f" pairs among them, {sum(bool(s) for *_, s in rows):,} successful")  # fmt: skip
        # Each row seeds tokens of its own: every one of them reached at the stand-in is every push.
        if not tokens == pushes <= requests:
            problems.append(f"the FCM stand-in received {requests:,} requests for {tokens:,} new tokens,"
                            f" expected {pushes:,} tokens")  # fmt: skip
        self.resent[prefix] = requests - tokens
        if problems:
            outputs = "; ".join(f"{process.log}" for process in processes)
            raise RuntimeError(f"{prefix} was not delivered exactly once per device: {'; '.join(problems)}"
                               f" (output: {outputs})")  # fmt: skip


@dataclasses.dataclass
class Row:
    users: int  # per message
    messages: int
    pushes: int
    drain: Drain
    rq_jobs: int
    resent: int  # requests sent again after FCM_TIMEOUT_SECONDS without an answer

    @property
    def seconds(self) -> float:
        return self.drain.seconds


def _seed(db, prefix: str, messages: int, users: int) -> dict[str, dict[str, list[str]]]:
    """`messages` times `users` users of their own, each with DEVICES_PER_USER active devices (an
    android and an ios one, as the messenger registers them), inserted in one statement;
    returns each message's job id -> its users -> their devices' tokens."""
    addressed: dict[str, dict[str, list[str]]] = {}
    for n in range(messages):
        addressed[f"{prefix}-{n}"] = {
            str(uuid.uuid4()): [f"{prefix}-{n}-{u}-{d}-{uuid.uuid4().hex}" for d in range(DEVICES_PER_USER)]
            for u in range(users)
        }
    devices = [(user_id, token) for users_of in addressed.values() for user_id, tokens in users_of.items()
               for token in tokens]  # fmt: skip
    with db.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO fcm_devices (name, active, date_created, device_id, registration_id, type, user_id, changed_at)
            SELECT NULL, true, now(), md5(d.token), d.token, CASE WHEN d.n %% 2 = 0 THEN 'android' ELSE 'ios' END,
                   d.user_id, now()
            FROM unnest(%s::text[], %s::uuid[]) WITH ORDINALITY AS d(token, user_id, n)
            """,
            [[token for _, token in devices], [user_id for user_id, _ in devices]],
        )
    return addressed


def _rq_jobs(db, prefix: str) -> int:
    """How many RQ jobs (batches) the row's messages ran in, from their job records."""
    with db.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT rq_job_id) FROM job_runs WHERE job_id LIKE %s", [prefix + "-%"])
        return cursor.fetchone()[0]


def _row(bench: MulticastBench, prefix: str, users: int) -> Row:
    messages = max(1, PUSHES // (users * DEVICES_PER_USER))
    addressed = _seed(bench.db, prefix, messages, users)
    chat = {job_id: str(uuid.uuid4()) for job_id in addressed}

    def body(n: int, job_id: str) -> dict:
        ids = list(addressed[job_id])
        return {"type": "push", "userId": ids[0], "userIds": ids, "title": "New message in your group",
                "body": f"Alice: see you at {n % 24}:00", "data": {"chatId": chat[job_id]},
                "jobId": job_id}  # fmt: skip

    tokens = {job_id: [token for user in users_of.values() for token in user] for job_id, users_of in addressed.items()}
    drain = dataclasses.replace(bench, addressed=tokens).supworker(prefix, messages, body, "notification.push")
    pushes = sum(len(job_tokens) for job_tokens in tokens.values())
    return Row(users, messages, pushes, drain, _rq_jobs(bench.db, prefix), bench.resent[prefix])


def run() -> Table:
    with deployed.own_site("bm", REDIS_DB) as site:
        return _run(site)


def _run(site: deployed.Site) -> Table:
    tag, db = site.tag, site.db
    work = Path(tempfile.mkdtemp(prefix="supworker-bench-multicast-"))
    fcm = None
    rows: list[Row] = []
    try:
        fcm = _start_server(_serve_fcm)
        env = site.env(
            LOG_DIR=str(work / "logs"),
            FCM_ENDPOINT=f"http://127.0.0.1:{fcm.port}", FCM_ACCESS_TOKEN=TOKEN, FCM_PROJECT_ID=PROJECT,
        )  # fmt: skip
        bench = MulticastBench(env, work, site.redis, db, fcm, NoMail())
        _with_channel(site.config, topology_declare)
        for users in USERS_PER_MESSAGE:
            rows.append(_row(bench, f"{tag}-u{users}", users))
    finally:
        _with_channel(site.config, topology_delete)
        with db.cursor() as cursor:
            for table in ("notifications", "job_runs", "dead_letters"):
                cursor.execute(f"DELETE FROM {table} WHERE job_id LIKE %s", [tag + "-%"])  # noqa: S608 - our names
            cursor.execute("DELETE FROM fcm_devices WHERE registration_id LIKE %s", [tag + "-%"])
        if fcm is not None:
            fcm.stop()
        if len(rows) == len(USERS_PER_MESSAGE):
            shutil.rmtree(work)  # the processes' output is kept only when a row failed or was interrupted
        else:
            print(f"(process output and logs in {work})")
    return _table(rows)


def _table(rows: list[Row]) -> Table:
    table = Table(
        title=f"Push against multicast size (`consume_rabbit` and {WORKERS} `rqworker notifications` as deployed,"
        " loopback FCM v1 server)",
        columns=["users per message", "devices per message", "messages", "pushes", "RQ jobs", "seconds",
                 "pushes/s", "messages/s", "sent again", "worker CPU ms/push", "consumer CPU s/1,000 messages"],
    )  # fmt: skip
    for row in rows:
        table.rows.append([
            row.users, row.users * DEVICES_PER_USER, row.messages, row.pushes, row.rq_jobs, row.seconds,
            row.pushes / row.seconds, row.messages / row.seconds, row.resent,
            f"{1000 * row.drain.workers_cpu / row.pushes:.3f}",
            f"{1000 * (row.drain.consumer_cpu or 0.0) / row.messages:.3f}",
        ])  # fmt: skip
    table.notes = [
        f"users of their own per row, {DEVICES_PER_USER} active devices each (seeded in fcm_devices, deleted after);"
        " each message names them in userIds, with a title, body and data.chatId. Every device got its push (every"
        " seeded token reached the stand-in) and its own successful row in `notifications`. Sent again: requests"
        " the stand-in answered after the worker's FCM_TIMEOUT_SECONDS (10 s), which the worker retried with the"
        " same collapse key (the device shows one); pushes ÷ seconds counts each push once.",
        "clock: from the first publish to RabbitMQ to the last row logged (Django's start-up untimed). CPU: psutil,"
        f" same window; workers: the {WORKERS} processes with their work-horses. RQ jobs: the batches the messages"
        " ran in (job_runs.rq_job_id); a batch runs on one worker, whatever its number of devices.",
        "consumer CPU over few messages is mostly the cost of its loop over the window (psutil counts 10 ms ticks),"
        " not of the messages: validating one naming 1,000 users takes about a millisecond.",
    ]
    return table
