"""Loaded with `-p tests.testenv`, before pytest-django imports the settings.

Tests run against the project-local servers of `make services`, never against whatever a
developer's `.env` or shell points at: they flush Redis and create queues. Redis DB 15 keeps
test keys apart from the jobs of a `make run` on the same machine.

SUPWORKER_TEST_SLOT=N (1-4) lets a second test run share the machine with the first: it
gets its own test database, Redis database, output directory and web port. Under pytest-xdist
(`make test` runs `-n 2`), worker gwN takes slot N; the broker needs no slot (every test
declares its own exchange and queues, tests/ingest_fixtures.py) and the clusters, sentinels and
restarted servers the slow tests start listen on free ports of their own.

SUPWORKER_TEST_VIA_PGBOUNCER=1 points DATABASE_URL at the project's PgBouncer (transaction
pooling, `scripts/services.sh up pgbouncer`) instead of PostgreSQL itself; `make test` runs the
tests marked `pgbouncer` that way. The test database is still created, migrated and dropped
directly (tests/conftest.py): CREATE and DROP DATABASE need a session of their own.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... in an xdist worker
assert not (_XDIST_WORKER and "SUPWORKER_TEST_SLOT" in os.environ), (
    "SUPWORKER_TEST_SLOT picks one slot; with pytest -n each worker takes its own: use one or the other"
)
SLOT = int(_XDIST_WORKER.removeprefix("gw") if _XDIST_WORKER else os.environ.get("SUPWORKER_TEST_SLOT", "0"))
assert 0 <= SLOT <= 4, "SUPWORKER_TEST_SLOT is 0 to 4 (and pytest -n at most 5)"
OUTPUT = ROOT / "test-output" / (f"slot{SLOT}" if SLOT else "")
REDIS_DB = (15, 11, 10, 9, 8)[SLOT]  # 12 to 14 belong to the benchmarks
WEB_PORT = 18765 + SLOT
PG_PORT = 5440
PGBOUNCER_PORT = 6440
VIA_PGBOUNCER = os.environ.get("SUPWORKER_TEST_VIA_PGBOUNCER") == "1"

os.environ.update(
    {
        "SUPWORKER_ENV_FILE": os.devnull,
        "SUPWORKER_ENV": "development",
        # pytest-django creates and drops test_<name>; the database itself need not exist.
        "DATABASE_URL": f"postgres://supworker:supworker@127.0.0.1:{PGBOUNCER_PORT if VIA_PGBOUNCER else PG_PORT}"
        + "/supworker"
        + (f"_slot{SLOT}" if SLOT else ""),
        "REDIS_URL": f"redis://127.0.0.1:6390/{REDIS_DB}",
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5690/%2F",
        "LOG_DIR": str(OUTPUT / "logs"),
        "MEDIA_ROOT": str(OUTPUT / "media"),
        "TEMP_DIR": str(OUTPUT / "tmp"),
    }
)
for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "AWS_S3_BUCKET", "SMTP_HOST", "NODE_ENV"):
    os.environ.pop(name, None)


def _ensure_slot_database() -> None:
    """`make run`, which a test starts, migrates the slot's own database: create it once."""
    import psycopg2

    name = f"supworker_slot{SLOT}"
    connection = psycopg2.connect(
        host="127.0.0.1", port=PG_PORT, user="supworker", password="supworker", dbname="postgres"
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()


if SLOT:
    _ensure_slot_database()
