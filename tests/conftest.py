from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis import Redis

pytest_plugins = ["tests.ingest_fixtures"]


@pytest.fixture
def redis_conn() -> Iterator[Redis]:
    """The test Redis database, empty at the start of each test."""
    conn = Redis.from_url(os.environ["REDIS_URL"])
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()
