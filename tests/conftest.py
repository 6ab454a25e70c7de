from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.db.models.signals import pre_migrate
from redis import Redis

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


@pytest.fixture
def redis_conn() -> Iterator[Redis]:
    """The test Redis database, empty at the start of each test."""
    conn = Redis.from_url(os.environ["REDIS_URL"])
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()
