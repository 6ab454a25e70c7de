"""`make services` is idempotent: a second run keeps the running servers and their data."""

from __future__ import annotations

import subprocess

import pytest

from tests.testenv import ROOT

pytestmark = pytest.mark.slow

PID_FILES = {
    "redis": ROOT / "var/run/redis.pid",
    "rabbitmq": ROOT / "var/rabbitmq/rabbitmq.pid",
    "postgresql": ROOT / "var/postgres/data/postmaster.pid",
}


def services_up() -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "services"], cwd=ROOT, capture_output=True, text=True, timeout=300)


def server_pids() -> dict[str, str]:
    return {name: path.read_text().splitlines()[0].strip() for name, path in PID_FILES.items()}


def test_running_make_services_twice_is_harmless(redis_conn):
    first = services_up()
    assert first.returncode == 0, first.stderr
    pids = server_pids()
    redis_conn.set("survives:services-up", "yes")

    second = services_up()
    assert second.returncode == 0, second.stderr
    for name in ("redis", "rabbitmq", "postgresql"):
        assert f"{name} already running" in second.stderr
    assert server_pids() == pids, "a second `make services` must not restart the servers"
    assert redis_conn.get("survives:services-up") == b"yes"

    status = subprocess.run(["scripts/services.sh", "status"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert status.stdout.count(" up ") == 3
