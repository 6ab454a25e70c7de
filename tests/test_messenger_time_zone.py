"""The messenger's TIMESTAMP columns hold local times of the API's session zone: MESSENGER_DB_TIME_ZONE.

The Node API writes `created_at DEFAULT NOW()` into a column without time zone, so the value is
the wall-clock time of its session's zone. Here the API runs in New York (UTC-5 or UTC-4): a
story it wrote 23 hours ago looks 27 or 28 hours old to a reader who assumes UTC, and would be
expired early. supworker run as an operator runs it, with the setting, reads it right.
"""

from __future__ import annotations

import re
import uuid

import psycopg2
import pytest
from django.conf import settings

from supworker.models import Story
from tests.helpers import run_manage

# Run again through PgBouncer in transaction mode by `make test`.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pgbouncer]

API_ZONE = "America/New_York"


def database_env(**extra: str) -> dict[str, str]:
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {"DATABASE_URL": url} | extra


def api_writes_story(hours_ago: int) -> str:
    """Insert a story the way the Node API does, from a session in its own time zone."""
    db = settings.DATABASES["default"]
    story_id = str(uuid.uuid4())
    with (
        psycopg2.connect(
            dbname=db["NAME"], host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"]
        ) as api,
        api.cursor() as cursor,
    ):
        cursor.execute("SET TIME ZONE %s", [API_ZONE])
        cursor.execute(
            "INSERT INTO stories (id, user_id, created_at) VALUES (%s, %s, NOW() - make_interval(hours => %s))",
            [story_id, str(uuid.uuid4()), hours_ago],
        )
    api.close()
    return story_id


def to_expire(output: str) -> int:
    match = re.search(r"stories_to_expire\s+([\d,]+)", output)
    assert match, output
    return int(match.group(1).replace(",", ""))


def test_story_ages_are_read_in_the_zone_the_api_writes_them():
    young, old = api_writes_story(23), api_writes_story(25)

    assumed_utc = run_manage("cleanup", "stories", "--dry-run", env=database_env())
    assert assumed_utc.returncode == 0, assumed_utc.stderr
    assert to_expire(assumed_utc.stdout) == 2, "read as UTC, the 23-hour-old story looks older than a day"

    in_api_zone = database_env(MESSENGER_DB_TIME_ZONE=API_ZONE)
    ages = run_manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.utils import timezone; from supworker.models import Story\n"
        "for s in Story.objects.order_by('-created_at'):\n"
        "    print(round((timezone.now() - s.created_at).total_seconds() / 3600))",
        env=in_api_zone,
    )
    assert ages.returncode == 0, ages.stderr
    assert ages.stdout.split() == ["23", "25"], "each story's age as the API meant it"

    expired = run_manage("cleanup", "stories", env=in_api_zone)
    assert expired.returncode == 0, expired.stderr
    assert set(Story.objects.filter(deleted_at__isnull=False).values_list("id", flat=True)) == {uuid.UUID(old)}
    assert Story.objects.get(id=young).deleted_at is None


def test_an_unknown_zone_stops_start_up_naming_the_variable():
    result = run_manage("check", env=database_env(MESSENGER_DB_TIME_ZONE="Mars/Olympus_Mons"))
    assert result.returncode != 0
    assert "MESSENGER_DB_TIME_ZONE" in result.stderr and "IANA time zone" in result.stderr
