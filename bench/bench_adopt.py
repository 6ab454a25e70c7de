"""`manage.py migrate` on a messenger database the Node API created, while the API keeps inserting.

A database is made from the seed schema and given BENCH_ADOPT_ROWS messages (3,000,000). An
"API" thread inserts messages one at a time, as the Node API does, and times each insert. The
same run measures, for comparison, one plain `CREATE INDEX` on messages (what Django's
AddIndex would run), then `manage.py migrate` as an operator runs it (a process, default
settings): its catalog changes under lock_timeout and its concurrent index builds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg2
from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT

from bench.table import Table
from supworker import messenger_ddl

ROOT = Path(__file__).resolve().parent.parent
SERVER = {"host": "127.0.0.1", "port": 5440, "user": "supworker", "password": "supworker"}
DATABASE = "supworker_bench_adopt"
ROWS = int(os.environ.get("BENCH_ADOPT_ROWS", "3000000"))
SEED = [
    messenger_ddl.MESSAGES,
    messenger_ddl.STORIES,
    messenger_ddl.USER_SESSIONS,
    messenger_ddl.USER_PREKEYS,
    messenger_ddl.NOTIFICATIONS,
    messenger_ddl.TEMPORARY_FILES,
]


def connect(dbname: str) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(dbname=dbname, **SERVER)
    connection.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
    return connection


def execute(dbname: str, sql: str) -> None:
    connection = connect(dbname)
    try:
        connection.cursor().execute(sql)
    finally:
        connection.close()


class ApiInserts:
    """Insert messages one by one until stopped; keep each insert's latency."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ApiInserts:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        connection = connect(DATABASE)
        cursor = connection.cursor()
        while not self._stop.is_set():
            started = time.perf_counter()
            cursor.execute(
                "INSERT INTO messages (id, sender_id, chat_id, content) VALUES (%s, %s, %s, 'hi')",
                [str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())],
            )
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.002)  # a steady trickle, not a load test
        connection.close()


def row(what: str, seconds: float, api: ApiInserts) -> list[object]:
    latencies = sorted(api.latencies)
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    return [
        what,
        seconds,
        len(latencies),
        statistics.median(latencies) * 1000 if latencies else 0.0,
        p99 * 1000,
        max(latencies, default=0.0) * 1000,
    ]


def run() -> Table:
    execute("postgres", f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    execute("postgres", f'CREATE DATABASE "{DATABASE}"')
    try:
        for ddl in SEED:
            execute(DATABASE, ddl)
        execute(
            DATABASE,
            f"""INSERT INTO messages (id, sender_id, chat_id, content, media_url, created_at)
                SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), repeat('x', 80),
                       CASE WHEN n % 5 = 0 THEN 'media/' || n || '.jpg' END,
                       NOW() - (n % 31536000) * interval '1 second'
                FROM generate_series(1, {ROWS:d}) AS n""",  # noqa: S608 - an int from the environment
        )
        execute(DATABASE, "VACUUM ANALYZE messages")
        table = Table(
            f"Adopting a messages table of {ROWS:,} rows while the API inserts (PostgreSQL on this machine)",
            ["what runs", "seconds", "API inserts", "p50 ms", "p99 ms", "max ms"],
        )
        with ApiInserts() as api:
            time.sleep(1)
            api.latencies.clear()
            started = time.perf_counter()
            execute(DATABASE, "CREATE INDEX bench_blocking_idx ON messages (created_at, id)")
            elapsed = time.perf_counter() - started
        # Read once the thread has stopped: the insert the build held up is counted too.
        table.rows.append(row("CREATE INDEX, one index (Django's AddIndex)", elapsed, api))
        execute(DATABASE, "DROP INDEX bench_blocking_idx")

        env = os.environ | {"DATABASE_URL": f"postgres://supworker:supworker@127.0.0.1:5440/{DATABASE}"}
        with ApiInserts() as api:
            time.sleep(1)
            api.latencies.clear()
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--no-input"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.perf_counter() - started
        table.rows.append(row("manage.py migrate (every adoption step)", elapsed, api))
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed: {done.stderr[-2000:]}")
        table.notes.append(
            "migrate: 2 columns added to messages and 5 to notifications, 21 indexes built concurrently, "
            "supworker's and Django's own tables created; the API's latency is what its inserts waited."
        )
        return table
    finally:
        execute("postgres", f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
