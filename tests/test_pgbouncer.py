"""supworker behind PgBouncer in transaction mode: nothing it relies on lives in a server session.

`make test` runs this module, and the other tests marked `pgbouncer`, through the project's
PgBouncer (SUPWORKER_TEST_VIA_PGBOUNCER=1); on a direct connection the tests that need the pooler
are skipped. Each one makes another client take the server session the test's connection just
used, which is what transaction pooling does under load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg2
import pytest
from django.conf import settings
from django.db import connection

from supworker.models import JobRun
from tests.helpers import run_manage
from tests.ingest_fixtures import subprocess_env
from tests.testenv import PGBOUNCER_PORT, VIA_PGBOUNCER

pytestmark = [
    pytest.mark.pgbouncer,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not VIA_PGBOUNCER, reason="needs PgBouncer: SUPWORKER_TEST_VIA_PGBOUNCER=1 (make test)"),
]


@pytest.fixture
def other_client() -> Iterator[psycopg2.extensions.connection]:
    """Another client of the same pool, as another worker process would be."""
    db = settings.DATABASES["default"]
    client = psycopg2.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"]
    )
    yield client
    client.close()


def take_the_last_used_server_session(client: psycopg2.extensions.connection) -> None:
    """Open a transaction: PgBouncer hands the client the server session most recently released
    (the test's), and the client keeps it until it commits."""
    with client.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_the_tests_reach_the_database_through_pgbouncer():
    connection.ensure_connection()
    assert connection.connection.info.port == PGBOUNCER_PORT == settings.DATABASES["default"]["PORT"]


def test_a_queryset_iterator_survives_another_client_taking_its_server_session(other_client):
    """QuerySet.iterator() with a server-side cursor would FETCH from a cursor another session
    holds ("cursor does not exist"): supworker's settings disable server-side cursors."""
    JobRun.objects.bulk_create([JobRun(job_id=f"j{n}", job_type="t", queue="q") for n in range(5)])
    rows = JobRun.objects.order_by("job_id").values_list("job_id", flat=True).iterator(chunk_size=1)
    first = next(rows)
    take_the_last_used_server_session(other_client)
    try:
        assert [first, *rows] == ["j0", "j1", "j2", "j3", "j4"]
    finally:
        other_client.rollback()


def test_the_messenger_time_zone_holds_in_every_transaction_while_clients_in_other_zones_share_the_pool(
    other_client,
):
    """Django sets the session's zone once, at connect. PgBouncer tracks TimeZone (like
    client_encoding and DateStyle) per client and sets it again on whichever server session runs
    the client's next transaction, so the zone holds; a `-c timezone=` startup option would not
    even be accepted (PgBouncer 1.18: "unsupported startup parameter: options")."""
    with other_client.cursor() as cursor:  # a client in another zone, using the same server sessions
        cursor.execute("SET TIME ZONE 'America/New_York'")
    other_client.commit()
    code = (
        "import json; from django.db import connection, transaction\n"
        "zones = []\n"
        "for _ in range(20):\n"
        "    with transaction.atomic(), connection.cursor() as c:\n"
        "        c.execute(\"SELECT current_setting('TimeZone'),\"\n"
        "                  \" now()::timestamp = (now() AT TIME ZONE 'Asia/Kolkata')\")\n"
        "        zones.append(list(c.fetchone()))\n"
        "print(json.dumps(zones))\n"
    )
    env = subprocess_env({}) | {"MESSENGER_DB_TIME_ZONE": "Asia/Kolkata"}
    result = run_manage("shell", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [["Asia/Kolkata", True]] * 20
    with other_client.cursor() as cursor:
        cursor.execute("SELECT current_setting('TimeZone')")
        assert cursor.fetchone()[0] == "America/New_York", "the other client keeps its own zone"
    other_client.commit()
