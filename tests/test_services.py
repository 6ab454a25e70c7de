"""`make services` is idempotent: a second run keeps the running servers and their data; a
second set of servers (other ports, data directory, node name) runs beside it."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.ingest_fixtures import free_port
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
    for name in ("redis", "rabbitmq", "postgresql"):  # PgBouncer runs only when `up pgbouncer` started it
        assert re.search(rf"^{name} +up ", status.stdout, re.MULTILINE), status.stdout


def test_a_throwaway_set_of_servers_starts_and_stops_one_server_at_a_time(tmp_path, redis_conn):
    """What the fault tests do: a Redis of their own (own port and data directory), restarted
    with its AOF, while the shared servers keep running untouched."""
    port = free_port()
    env = os.environ | {
        "SUPWORKER_VAR": str(tmp_path / "var"),
        "SUPWORKER_REDIS_PORT": str(port),
        "SUPWORKER_AMQP_PORT": str(free_port()),
        "SUPWORKER_EPMD_PORT": str(free_port()),
        "SUPWORKER_RABBIT_NODE": f"supworker-services-test-{port}@localhost",
        "SUPWORKER_PG_PORT": str(free_port()),
        # The shared PgBouncer may be up (an earlier `make test` started it): status must not see it.
        "SUPWORKER_PGBOUNCER_PORT": str(free_port()),
    }

    def services(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scripts/services.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    assert services("up", "redis").returncode == 0
    try:
        own = Redis(port=port)
        own.set("survives:restart", "yes")
        status = services("status").stdout
        assert f"redis      up   127.0.0.1:{port}" in status and status.count(" up ") == 1, status
        assert (tmp_path / "var/redis/appendonlydir").is_dir()

        assert services("down", "redis").returncode == 0
        with pytest.raises(RedisConnectionError):
            own.ping()
        assert redis_conn.ping(), "the shared Redis keeps running"
        assert services("up", "redis").returncode == 0
        assert own.get("survives:restart") == b"yes", "the AOF brought the data back"
    finally:
        services("down", "redis")

    wrong = services("up", "memcached")
    assert wrong.returncode != 0 and "unknown server 'memcached'" in wrong.stderr
