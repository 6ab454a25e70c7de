"""supworker's processes as an operator runs them: each started from its Procfile line, configured
only by the environment (the defaults, plus the benchmark's own queue names and Redis database so
that a `make run` on the same servers is not disturbed), measured from outside with psutil.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psutil
import psycopg2

ROOT = Path(__file__).resolve().parent.parent


def procfile_command(kind: str) -> list[str]:
    """The Procfile's command for a kind of process (`consumer`, `notifications`, ...), with this
    interpreter (the virtualenv's) in place of `python`."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind and not line.startswith("#"):
            words = shlex.split(command)
            return [sys.executable if word == "python" else word for word in words]
    raise KeyError(f"the Procfile has no {kind!r} process")


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server, another database (a `db` query argument would win over the path)."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "db"]
    if parts.scheme == "unix":
        return urlunsplit(parts._replace(query=urlencode([*query, ("db", str(db))])))
    return urlunsplit(parts._replace(path=f"/{db}", query=urlencode(query)))


def own_config(config: Any, tag: str, redis_url: str) -> Any:
    """settings.CONFIG with the names isolated_env gives the processes: what this process uses to
    declare, fill and delete the benchmark's topology and to read its Redis database."""
    return dataclasses.replace(
        config,
        rabbitmq_exchange=f"{tag}_exchange",
        rabbitmq_queue_prefix=tag,
        rabbitmq_queue_name=f"{tag}_otp",
        redis_url=redis_url,
    )


@contextlib.contextmanager
def channel(config: Any) -> Iterator[Any]:
    """A channel on a connection of its own, closed after the step: a blocking connection left idle
    through a long phase (a fill, a drain) misses its heartbeats."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(config.rabbitmq_urls[0]))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@dataclass
class Site:
    """A benchmark's own corner of the servers `make run` uses: its tag (exchange, queue names and
    job id prefix), its Redis database and the benchmark database (`bench_database`)."""

    tag: str
    config: Any  # settings.CONFIG with the tag's names: how this process declares, fills and reads them
    redis_url: str
    redis: Any  # redis.Redis on the benchmark's database
    database_url: str
    db: Any  # psycopg2 connection to the benchmark database, autocommit

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the processes it starts: the operator's, with the site's names."""
        return isolated_env(self.tag, self.redis_url, DATABASE_URL=self.database_url, **extra)


@contextlib.contextmanager
def own_site(prefix: str, redis_db: int) -> Iterator[Site]:
    """A Site tagged `prefix` + 6 hex digits, with settings.CONFIG switched to its names while it
    lasts; its Redis database is emptied before and after."""
    from django.conf import settings
    from redis import Redis

    original = settings.CONFIG
    tag = f"{prefix}{uuid.uuid4().hex[:6]}"
    redis_url = with_redis_db(original.redis_url, redis_db)
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    database_url = bench_database(settings.DATABASES["default"])
    db = psycopg2.connect(database_url)
    db.autocommit = True
    settings.CONFIG = config = own_config(original, tag, redis_url)
    try:
        yield Site(tag, config, redis_url, redis, database_url, db)
    finally:
        settings.CONFIG = original
        db.close()
        redis.flushdb()


def isolated_env(tag: str, redis_url: str, **extra: str) -> dict[str, str]:
    """This process's environment with the benchmark's own RabbitMQ names and Redis database;
    every other setting stays what the operator has."""
    return (
        dict(os.environ)
        | {
            "RABBITMQ_EXCHANGE": f"{tag}_exchange",
            "RABBITMQ_QUEUE_PREFIX": tag,
            "RABBITMQ_QUEUE_NAME": f"{tag}_otp",
            "REDIS_URL": redis_url,
        }
        | extra
    )


@dataclass
class Process:
    """One running `manage.py` process, its output in `log`."""

    kind: str
    popen: subprocess.Popen
    log: Path
    handle: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.handle = psutil.Process(self.popen.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU of the process, its finished children (RQ work-horses, reaped by their
        worker) and the children running now."""
        return sum(self.cpu_parts())

    def cpu_parts(self) -> tuple[float, float, float]:
        """CPU seconds of the process itself, of its finished children (reaped) and of those running
        now (an RQ worker's scheduler, a work-horse at work)."""
        return tree_cpu_parts(self.handle)

    def rss_mb(self) -> float:
        return self.handle.memory_info().rss / 2**20

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def tree_cpu_parts(handle: psutil.Process) -> tuple[float, float, float]:
    """CPU seconds of a process itself, of its finished children (reaped) and of those running now:
    any process tree, one started here or not (PostgreSQL's postmaster and its backends). A child
    reaped between reading the finished ones and the running ones would be in neither (a whole
    work-horse lost): read again until the finished ones did not change meanwhile."""
    while True:
        before = handle.cpu_times()
        running = 0.0
        for child in handle.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child_times = child.cpu_times()
                running += child_times.user + child_times.system
        after = handle.cpu_times()
        reaped = after.children_user + after.children_system
        if reaped == before.children_user + before.children_system:
            return after.user + after.system, reaped, running


def start(kind: str, env: dict[str, str], log_dir: Path, *extra_args: str, name: str | None = None) -> Process:
    """Start the Procfile's `kind` process (its command, then `extra_args`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name or kind}.out"
    with open(log, "ab") as output:
        popen = subprocess.Popen(
            [*procfile_command(kind), *extra_args], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Process(kind, popen, log)


def stop(processes: list[Process], timeout: float = 30) -> None:
    """SIGTERM (each finishes what it holds), then SIGKILL whatever is left after `timeout`."""
    for process in processes:
        if process.alive():
            process.popen.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()


def make_run_count(kind: str) -> int:
    """How many processes of `kind` `make run` starts (the Makefile's CONCURRENCY; honcho's default is 1)."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        name, _, value = line.partition("?=")
        if name.strip() == "CONCURRENCY":
            counts = dict(pair.split("=") for pair in value.strip().split(","))
            return int(counts.get(kind, 1))
    return 1


def bench_database(default: dict) -> str:
    """The benchmarks' own database next to the configured one, created on first use and migrated
    (`manage.py migrate`, as an operator would)."""
    name = f"{default['NAME']}_bench"
    admin = psycopg2.connect(
        host=default["HOST"], port=default["PORT"], user=default["USER"], password=default["PASSWORD"],
        dbname="postgres",
    )  # fmt: skip
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    url = f"postgres://{default['USER']}:{default['PASSWORD']}@{default['HOST']}:{default['PORT']}/{name}"
    migrate = [sys.executable, "manage.py", "migrate", "--no-input", "-v0"]
    done = subprocess.run(migrate, cwd=ROOT, env=os.environ | {"DATABASE_URL": url}, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"manage.py migrate on {name} failed: {(done.stdout + done.stderr)[-3000:]}")
    return url


def cpu_seconds(processes: list[Process]) -> float:
    """The CPU seconds of processes together (each with its work-horses)."""
    return sum(process.cpu_seconds() for process in processes)


def rss_mb(processes: list[Process]) -> float:
    """Resident memory of long-lived processes (RQ's work-horses live for one job and are left out)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.rss_mb()
    return total
