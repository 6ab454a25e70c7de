from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.testenv import ROOT

pytest_plugins = ["tests.ingest_fixtures"]


@pytest.fixture
def redis_conn() -> Iterator[Redis]:
    """The test Redis database, empty at the start of each test."""
    conn = Redis.from_url(os.environ["REDIS_URL"])
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def output_dir() -> Path:
    path = ROOT / "test-output"
    path.mkdir(exist_ok=True)
    return path
