"""E-mail through a django-anymail provider configured only from the environment (EMAIL_BACKEND
and ANYMAIL_* variables), sent by a real `manage.py rqworker` to a loopback server that speaks
SendGrid's v3 mail/send API: the same client code as in production, another base URL."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notifications.models import Notification
from supworker.models import JobRun
from tests.helpers import run_manage
from tests.ingest_fixtures import subprocess_env
from tests.notification_helpers import envelope, submit

pytestmark = pytest.mark.django_db(transaction=True)
API_KEY = "SG.loopback-key"


class SendGridHandler(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.headers.get("Authorization", ""), body))
        ok = self.path == "/v3/mail/send" and self.headers.get("Authorization") == f"Bearer {API_KEY}"
        self.send_response(202 if ok else 401)
        self.send_header("X-Message-Id", "sg-message-1")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def sendgrid():
    SendGridHandler.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SendGridHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_email_goes_through_the_anymail_provider_set_in_the_environment(sendgrid, redis_conn):
    (job,) = submit(
        redis_conn,
        envelope("notification.email", title="Your weekly digest", body="3 new messages", email="dan@example.com"),
    )
    env = subprocess_env({}) | {
        "EMAIL_BACKEND": "anymail.backends.sendgrid.EmailBackend",
        "ANYMAIL_SENDGRID_API_KEY": API_KEY,
        "ANYMAIL_SENDGRID_API_URL": f"http://127.0.0.1:{sendgrid.server_address[1]}/v3/",
        "EMAIL_RATE_PER_SECOND": "0",
    }
    result = run_manage("rqworker", "--burst", "notifications", env=env)
    assert result.returncode == 0, result.stderr[-2000:]

    ((authorization, body),) = SendGridHandler.received
    assert authorization == f"Bearer {API_KEY}"
    assert body["subject"] == "Your weekly digest"
    assert body["personalizations"][0]["to"] == [{"email": "dan@example.com"}]
    assert body["from"]["email"] == "no-reply@supworker.local"
    kinds = {part["type"]: part["value"] for part in body["content"]}
    assert "3 new messages" in kinds["text/plain"] and "3 new messages" in kinds["text/html"]
    assert Notification.objects.get(job_id=job.job_id).success is True
    assert JobRun.objects.get(job_id=job.job_id).status == "succeeded"
