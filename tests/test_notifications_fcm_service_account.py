"""Push with the production credentials: a service account given as FIREBASE_PROJECT_ID,
FIREBASE_CLIENT_EMAIL and FIREBASE_PRIVATE_KEY (the PEM on one line with literal \\n escapes, as
the Node worker's operators keep it), read by `manage.py rqworker` processes from their
environment or `.env` file. Their firebase-admin credential signs a JWT, exchanges it at
FIREBASE_TOKEN_URI (a loopback token endpoint that checks it as Google does) for an access
token, and sends every push to the loopback FCM server with that token; the FCM server accepts
only live tokens the token endpoint issued. No static token, no test-only code path.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth._helpers import REFRESH_THRESHOLD

from notifications.models import Device
from supworker.models import DeadLetter, JobRun
from tests.helpers import ManagedProcesses, wait_for
from tests.ingest_fixtures import subprocess_env
from tests.notification_helpers import envelope, submit
from tests.notification_servers import FcmServer
from tests.oauth_token_server import FCM_SCOPES, GOOGLE_TOKEN_AUDIENCE, TokenServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROJECT = "sup-loopback"
CLIENT_EMAIL = f"supworker-push@{PROJECT}.iam.gserviceaccount.com"
# google-auth treats a token as expired this long before its expiry (its clock-skew margin):
# a token granted for that plus STALE_AFTER seconds is due for refresh STALE_AFTER seconds on.
STALE_AFTER = 2
SHORT_LIFETIME = int(REFRESH_THRESHOLD.total_seconds()) + STALE_AFTER


def private_key_pem(key: rsa.RSAPrivateKey) -> str:
    """PKCS #8 PEM, as in the private_key of a key file the Google Cloud console issues."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def one_line(pem: str) -> str:
    """The key as operators store it in a .env file or a hosting panel: literal \\n, one line."""
    return pem.replace("\n", "\\n")


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Setup:
    fcm: FcmServer
    workers: ManagedProcesses
    token_endpoints: list[TokenServer]  # the FCM server accepts the tokens any of these issued

    def token_endpoint(self, key: rsa.RSAPrivateKey, lifetimes: tuple[int, ...]) -> TokenServer:
        """The service account's token endpoint; each grant's expires_in comes from `lifetimes`."""
        server = TokenServer(CLIENT_EMAIL, key.public_key(), lifetimes)
        server.start()
        self.token_endpoints.append(server)
        return server

    def start_worker(self, **env: str) -> subprocess.Popen:
        return self.workers.start("rqworker", "notifications_high", "notifications", "--with-scheduler", **env)


@pytest.fixture
def setup(tmp_path, redis_conn) -> Iterator[Setup]:
    """Depends on redis_conn so that the workers stop before their Redis database is flushed."""
    endpoints: list[TokenServer] = []
    fcm = FcmServer(authorize=lambda header: any(e.authorizes_fcm(header) for e in endpoints))
    fcm.start()
    # Only the service account: an empty FCM_ACCESS_TOKEN turns the static-token mode off.
    env = subprocess_env({}) | {"FCM_ENDPOINT": fcm.url, "FCM_ACCESS_TOKEN": "", "FCM_PROJECT_ID": ""}
    workers = ManagedProcesses(tmp_path, env | {"BASE_DELAY_MS": "50", "MAX_DELAY_MS": "200"})
    yield Setup(fcm, workers, endpoints)
    workers.stop_all()
    fcm.stop()
    for endpoint in endpoints:
        endpoint.stop()


def service_account_env(key: rsa.RSAPrivateKey, token: TokenServer) -> dict[str, str]:
    return {
        "FIREBASE_PROJECT_ID": PROJECT,
        "FIREBASE_CLIENT_EMAIL": CLIENT_EMAIL,
        "FIREBASE_PRIVATE_KEY": one_line(private_key_pem(key)),
        "FIREBASE_TOKEN_URI": token.token_uri,
    }


def users_with_phones(count: int, phones: int = 2) -> list[str]:
    users = [str(uuid.uuid4()) for _ in range(count)]
    for user in users:
        for n in range(phones):
            Device.objects.create(user_id=user, registration_id=f"{user}-phone-{n}", type="android", active=True)
    return users


def push_to_each(redis_conn, users: list[str]) -> list[str]:
    """One push job per user, each submitted on its own: one RQ job, so one work-horse, each."""
    jobs = [envelope("notification.push", userId=user, title="Dana", body="Are you there?") for user in users]
    for job in jobs:
        submit(redis_conn, job)
    return [job.job_id for job in jobs]


def wait_until_sent(job_ids: list[str], worker: subprocess.Popen, setup: Setup) -> None:
    def done() -> bool:
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited:\n{setup.workers.log()}")
        return JobRun.objects.filter(job_id__in=job_ids, status="succeeded").count() == len(job_ids)

    wait_for(done, 60, "every push job to succeed")


def bearer_tokens(fcm: FcmServer) -> list[str]:
    return [request["headers"]["authorization"] for request in fcm.requests]


def test_a_worker_gets_one_token_for_its_service_account_and_every_push_carries_it(
    setup, account_key, redis_conn, tmp_path
):
    token = setup.token_endpoint(account_key, lifetimes=(3600,))
    env_file = tmp_path / ".env"  # the operators' file, the private key on one line as they write it
    env_file.write_text("".join(f"{name}={value}\n" for name, value in service_account_env(account_key, token).items()))
    users = users_with_phones(3)
    worker = setup.start_worker(SUPWORKER_ENV_FILE=str(env_file))

    wait_until_sent(push_to_each(redis_conn, users), worker, setup)

    assert token.refusals == []
    (grant,) = token.grants  # three work-horses, six pushes: one token, fetched by the worker before forking
    assert grant.claims["iss"] == CLIENT_EMAIL and grant.claims["aud"] == GOOGLE_TOKEN_AUDIENCE
    assert grant.scopes & FCM_SCOPES, f"no scope that allows FCM sends in {sorted(grant.scopes)}"
    assert bearer_tokens(setup.fcm) == [f"Bearer {grant.access_token}"] * 6
    assert [request["project"] for request in setup.fcm.requests] == [PROJECT] * 6
    received = sorted(request["message"]["token"] for request in setup.fcm.requests)
    assert received == sorted(f"{user}-phone-{n}" for user in users for n in range(2)), "each phone once"
    assert "failed before forking" not in setup.workers.log()


def test_the_worker_refreshes_a_token_due_for_refresh_itself_and_later_pushes_carry_the_new_one(
    setup, account_key, redis_conn
):
    """The first token is due for refresh STALE_AFTER seconds after it is granted. The worker
    refreshes it itself, at its next registry cleanup (supworker/worker.py: every 30 s), with no
    job in sight; the work-horses forked after that inherit the new token and fetch none."""
    token = setup.token_endpoint(account_key, lifetimes=(SHORT_LIFETIME, 3600))
    worker = setup.start_worker(**service_account_env(account_key, token))
    wait_for(lambda: len(token.grants) == 2, 90, "the worker to get a token, then refresh it by itself")
    first, second = token.grants
    assert second.issued_at >= first.issued_at + STALE_AFTER, "refreshed once due, not before"

    wait_until_sent(push_to_each(redis_conn, users_with_phones(2)), worker, setup)

    assert len(token.grants) == 2 and token.refusals == []
    assert bearer_tokens(setup.fcm) == [f"Bearer {second.access_token}"] * 4
    assert "failed before forking" not in setup.workers.log()


def test_a_push_after_the_token_is_due_for_refresh_never_carries_the_old_one(setup, account_key, redis_conn):
    """Every token is due for refresh STALE_AFTER seconds after it is granted, so the worker's
    cleanup cannot keep up: a work-horse inheriting a token due for refresh gets a new one
    itself, once for its whole batch (not once per sending thread: six pushes, one token)."""
    token = setup.token_endpoint(account_key, lifetimes=(SHORT_LIFETIME,))
    worker = setup.start_worker(**service_account_env(account_key, token))
    (first,) = wait_for(lambda: list(token.grants), 30, "the worker's first token")
    time.sleep(max(0.0, first.issued_at + STALE_AFTER + 1 - time.time()))  # google-auth now calls it expired

    wait_until_sent(push_to_each(redis_conn, users_with_phones(1, phones=6)), worker, setup)

    sent_with = {header.removeprefix("Bearer ") for header in bearer_tokens(setup.fcm)}
    assert first.access_token not in sent_with and len(sent_with) == 1
    (used,) = [grant for grant in token.grants if grant.access_token in sent_with]
    assert used.issued_at >= first.issued_at + STALE_AFTER and token.refusals == []


def test_a_key_the_token_endpoint_refuses_sends_nothing_and_the_failure_names_the_refusal(
    setup, account_key, redis_conn
):
    """The private key is not the service account's: Google would refuse the grant."""
    token = setup.token_endpoint(account_key, lifetimes=(3600,))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    worker = setup.start_worker(**service_account_env(other_key, token), MAX_RETRIES="1")
    (job_id,) = push_to_each(redis_conn, users_with_phones(1, phones=1))

    run = wait_for(lambda: JobRun.objects.filter(job_id=job_id, status="failed").first(), 60, "the push job to fail")
    assert "no FCM access token: ('invalid_grant: Invalid JWT Signature." in run.error
    # The record says `failed` a moment before the dead letter is written (runner.settle).
    wait_for(lambda: DeadLetter.objects.filter(job_id=job_id).exists(), 10, "the push's dead letter")
    assert token.grants == [] and set(token.refusals) == {"Invalid JWT Signature."}
    assert setup.fcm.count() == 0, "nothing reaches FCM without a token"
    assert worker.poll() is None, "the worker lives on"
