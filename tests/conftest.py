from __future__ import annotations

import dataclasses
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from django.db import connections
from django.db.models.signals import pre_migrate
from redis import Redis

from tests.testenv import PG_PORT, PGBOUNCER_PORT, VIA_PGBOUNCER

pytest_plugins = ["tests.ingest_fixtures"]

SEED_SCHEMA = Path(__file__).parent / "fixtures" / "messenger_seed_schema.sql"


def create_the_apis_tables(using: str = "default", **kwargs: Any) -> None:
    """Before pytest-django migrates the test database, give it the tables the Node API creates.

    So every test runs where supworker is meant to run: on the seed schema, adopted by migrate.
    """
    connection = connections[using]
    if not connection.settings_dict["NAME"].startswith("test_"):
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('messages') IS NULL")
        if cursor.fetchone()[0]:
            cursor.execute(SEED_SCHEMA.read_text())


pre_migrate.connect(create_the_apis_tables, dispatch_uid="tests.create_the_apis_tables")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under a node id of its own: pytest-xdist schedules by node id, and runs only one
    of several items that share one. schemathesis' `parametrize()` gives each API operation's test
    its operation in the name (`test_x[GET /health]`) but the function's bare node id: use the name."""
    for item in items:
        if item.name.endswith("]") and not item.nodeid.endswith(item.name):
            # pytest 9 keeps the node id structured (_pytest.nodeid.NodeId): set its parameters.
            item._id = dataclasses.replace(item._id, params=item.name.partition("[")[2][:-1])  # type: ignore[attr-defined]
    seen = Counter(item.nodeid for item in items)
    repeated = [nodeid for nodeid, count in seen.items() if count > 1]
    if repeated:
        raise pytest.UsageError(f"tests share a node id, so pytest -n would run one of them: {repeated}")


@pytest.fixture(autouse=True)
def _signal_handlers_restored() -> Iterator[None]:
    """An RQ worker run inside the test process (SimpleWorker.work) installs its SIGINT and SIGTERM
    handlers and leaves them: put back what the test started with, so the next test's Ctrl-C is
    Python's KeyboardInterrupt, not a stop request to a worker that has finished."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


@pytest.fixture
def redis_conn() -> Iterator[Redis]:
    """The test Redis database, empty at the start of each test."""
    conn = Redis.from_url(os.environ["REDIS_URL"])
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


# --- through PgBouncer (SUPWORKER_TEST_VIA_PGBOUNCER=1) -------------------------------------
# CREATE and DROP DATABASE, and migrate (whose adoption steps set lock_timeout for the session),
# need a session of their own: the test database is set up and dropped on PostgreSQL directly,
# and the tests, and every process they start, reach it through PgBouncer.


def _connect_default_to(port: int) -> None:
    """Point the default database (settings.DATABASES, which subprocess_env copies) at `port`."""
    connection = connections["default"]
    connection.close()
    connection.settings_dict["PORT"] = port


def _end_pooled_sessions(database: str) -> None:
    """End the server sessions PgBouncer keeps open on `database`, which DROP DATABASE would wait for."""
    settings = connections["default"].settings_dict
    direct = psycopg2.connect(
        host=settings["HOST"], port=PG_PORT, user=settings["USER"], password=settings["PASSWORD"], dbname="postgres"
    )
    try:
        with direct.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [database],
            )
    finally:
        direct.close()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    if VIA_PGBOUNCER:
        _connect_default_to(PG_PORT)
        _end_pooled_sessions("test_" + connections["default"].settings_dict["NAME"])  # an earlier run's


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's set-up (directly, see above); then the tests run through PgBouncer."""
    if not VIA_PGBOUNCER:
        yield
        return
    _connect_default_to(PGBOUNCER_PORT)
    yield
    _end_pooled_sessions(connections["default"].settings_dict["NAME"])
    _connect_default_to(PG_PORT)
