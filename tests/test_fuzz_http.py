"""The monitoring endpoints fuzzed against monitoring/openapi.yaml with schemathesis, in process
(Django's WSGI application, the test database, the slot's Redis).

Every generated request, valid or not (wrong methods, missing or garbage credentials, stray
headers and cookies), must get a response the description allows, never a 5xx, and 405 for a
method the description does not list. POST /shutdown is fuzzed with a token schemathesis cannot
know, so it must never be accepted: the Redis key consumers and workers watch stays unset.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from redis import Redis

from supworker.shutdown import SHUTDOWN_KEY
from tests.testenv import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMA = schemathesis.openapi.from_path(ROOT / "monitoring" / "openapi.yaml")
SCHEMA.app = get_wsgi_application()
TOKEN = secrets.token_urlsafe(32)  # per run: no generated header can carry it

# Deterministic and database-free: CI sees the same requests every run.
FUZZ = hypothesis.settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@pytest.fixture
def guarded(settings, redis_conn: Redis) -> Iterator[Redis]:
    """A shutdown token the fuzz does not know; afterwards, proof that nothing asked for a shutdown."""
    settings.CONFIG = dataclasses.replace(settings.CONFIG, shutdown_token=TOKEN)
    yield redis_conn
    assert not redis_conn.exists(SHUTDOWN_KEY), "a fuzzed request shut the service down"


@SCHEMA.parametrize()
@FUZZ
def test_every_endpoint_answers_as_described_and_never_with_a_5xx(case, guarded: Redis) -> None:
    # Runs schemathesis' checks: no 5xx, status code, content type, headers and body as described,
    # undeclared methods answered 405, invalid input not accepted.
    response = case.call_and_validate()
    if case.path == "/shutdown":
        assert response.status_code in (401, 403, 405), response.status_code
        assert not guarded.exists(SHUTDOWN_KEY)


def test_the_guard_sees_a_shutdown_when_the_token_is_right(client, settings, redis_conn: Redis) -> None:
    """The fuzz test's guard can fail: the right token does set the key it checks."""
    settings.CONFIG = dataclasses.replace(settings.CONFIG, shutdown_token=TOKEN)
    response = client.post("/shutdown", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_HOST="127.0.0.1")
    assert response.status_code == 202 and redis_conn.exists(SHUTDOWN_KEY)
