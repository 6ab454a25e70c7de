"""E-mail bounces and complaints, end to end: the ESPs' tracking webhooks in their own formats,
signed as they sign them, posted to a gunicorn started with the webhook settings in its
environment (as production runs it); the suppression list they fill; the next e-mails and OTPs
sent (or not) by a real `manage.py rqworker` through django-anymail's SendGrid backend to the
loopback SendGrid; and an operator lifting an entry in the admin.

SendGrid posts a JSON array of events with HTTP basic auth (ANYMAIL_WEBHOOK_SECRET) and, when
its Signed Event Webhook is on, an ECDSA P-256 signature of timestamp + body in
X-Twilio-Email-Event-Webhook-Signature (checked with ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY).
Mailgun posts one event per call, `{"signature": {timestamp, token, signature}, "event-data": …}`,
the signature being HMAC-SHA256(signing key, timestamp + token) in hex.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth import get_user_model
from django.urls import reverse

from notifications.models import EmailSuppression, Notification
from supworker.masking import mask_email
from supworker.models import JobRun
from tests.helpers import run_manage, stop, wait_for
from tests.ingest_fixtures import free_port, subprocess_env
from tests.notification_helpers import envelope, submit
from tests.notification_servers import SendGridServer
from tests.test_config import PRODUCTION
from tests.test_monitoring import conforms
from tests.testenv import ROOT

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.notification_fixtures"]
SECRET = ("sendgrid-or-mailgun", secrets.token_urlsafe(24))  # ANYMAIL_WEBHOOK_SECRET, user:password
SIGNING_KEY = "key-" + secrets.token_hex(16)  # Mailgun's HTTP webhook signing key
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())  # SendGrid keeps the private half
SENDGRID = "/anymail/sendgrid/tracking/"
MAILGUN = "/anymail/mailgun/tracking/"


def verification_key(private_key: ec.EllipticCurvePrivateKey) -> str:
    """What SendGrid shows as the Signed Event Webhook's verification key: the public key, DER, base64."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@dataclass
class Web:
    url: str

    def sendgrid(
        self, events: list[dict], auth: tuple[str, str] | None = SECRET, key: ec.EllipticCurvePrivateKey = SENDGRID_KEY
    ) -> requests.Response:
        body = json.dumps(events).encode()
        stamp = str(int(time.time()))
        signature = base64.b64encode(key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }
        return requests.post(self.url + SENDGRID, data=body, headers=headers, auth=auth, timeout=30)

    def mailgun(self, payload: dict, auth: tuple[str, str] | None = SECRET) -> requests.Response:
        return requests.post(self.url + MAILGUN, json=payload, auth=auth, timeout=30)


@pytest.fixture(scope="module")
def web(django_db_setup, tmp_path_factory) -> Iterator[Web]:
    """gunicorn, as the Procfile starts it, with the webhook credentials in its environment."""
    port, log = free_port(), tmp_path_factory.mktemp("web") / "gunicorn.log"
    env = os.environ | subprocess_env({}) | {
        "ANYMAIL_WEBHOOK_SECRET": ":".join(SECRET),
        "ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
        "ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": verification_key(SENDGRID_KEY),
    }  # fmt: skip
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "supworker.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--no-control-socket"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _live(url) or process.poll() is not None, 30, "gunicorn")
        assert process.poll() is None, log.read_text()
        yield Web(url)
    finally:
        stop(process)


def _live(url: str) -> bool:
    try:
        return requests.get(url + "/health/live", timeout=5).status_code == 200
    except requests.RequestException:  # not listening yet, or its worker still loading the application
        return False


def sendgrid_event(event: str, email: str, at: int = 1_765_000_000, **fields) -> dict:
    """One event of SendGrid's Event Webhook, as it posts them."""
    return {
        "email": email,
        "timestamp": at,
        "event": event,
        "smtp-id": f"<{secrets.token_hex(8)}@supworker.local>",
        "sg_event_id": secrets.token_urlsafe(16),
        "sg_message_id": f"{secrets.token_hex(8)}.filter0001.16648.5515E0B88.0",
        "category": [],
    } | fields


def mailgun_event(event_data: dict, key: str = SIGNING_KEY) -> dict:
    """One call of Mailgun's webhooks, signed with `key` as Mailgun signs."""
    stamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    data = {
        "id": secrets.token_urlsafe(16),
        "timestamp": 1_765_000_000.25,
        "log-level": "error",
        "message": {"headers": {"message-id": f"{secrets.token_hex(8)}@mail.example.com"}},
    } | event_data
    return {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": data}


def mailgun_failure(recipient: str, severity: str, reason: str, code: int, message: str) -> dict:
    return mailgun_event(
        {"event": "failed", "severity": severity, "reason": reason, "recipient": recipient,
         "delivery-status": {"code": code, "message": message, "description": "", "attempt-no": 1}}
    )  # fmt: skip


def suppressed() -> dict[str, tuple[str, str, int]]:
    """address → (reason, ESP, count) of every entry in force."""
    entries = EmailSuppression.objects.filter(lifted_at__isnull=True)
    return {e.address: (e.reason, e.esp, e.count) for e in entries}


def test_sendgrid_hard_bounces_and_complaints_suppress_soft_bounces_and_blocks_do_not(web):
    events = [
        sendgrid_event("bounce", "Hard.Bounce@Example.com", type="bounce", status="5.1.1",
                       reason="550 5.1.1 The email account that you tried to reach does not exist"),
        sendgrid_event("spamreport", "complainer@example.com"),
        sendgrid_event("dropped", "known-bounce@example.com", reason="Bounced Address", status="5.0.0"),
        sendgrid_event("deferred", "soft@example.com", response="452 4.2.2 mailbox full", attempt="3"),
        sendgrid_event("bounce", "blocked@example.com", type="blocked", status="5.7.1",
                       reason="554 5.7.1 Service unavailable; client host blocked"),
        sendgrid_event("dropped", "unsubscribed@example.com", reason="Unsubscribed Address"),
        sendgrid_event("delivered", "fine@example.com", response="250 OK"),
    ]  # fmt: skip
    assert web.sendgrid(events).status_code == 200

    assert suppressed() == {
        "hard.bounce@example.com": ("bounce", "SendGrid", 1),
        "complainer@example.com": ("complaint", "SendGrid", 1),
        "known-bounce@example.com": ("bounce", "SendGrid", 1),
    }
    entry = EmailSuppression.objects.get(address="hard.bounce@example.com")
    assert entry.event_id == events[0]["sg_event_id"]
    assert entry.first_seen == entry.last_seen == datetime.fromtimestamp(1_765_000_000, UTC)
    assert "does not exist" in entry.description

    # SendGrid retries a batch it got no 2xx for: the same events again change nothing.
    assert web.sendgrid(events).status_code == 200
    assert web.sendgrid(events[:1]).status_code == 200
    assert suppressed()["hard.bounce@example.com"] == ("bounce", "SendGrid", 1)

    later = sendgrid_event("bounce", "hard.bounce@example.com", at=1_765_086_400, type="bounce", reason="550 gone")
    assert web.sendgrid([later]).status_code == 200
    entry.refresh_from_db()
    assert (entry.count, entry.event_id, entry.description) == (2, later["sg_event_id"], "550 gone")
    assert (entry.first_seen, entry.last_seen) == (
        datetime.fromtimestamp(1_765_000_000, UTC),
        datetime.fromtimestamp(1_765_086_400, UTC),
    )


def test_sendgrid_calls_without_the_secret_or_the_signature_are_refused_and_suppress_nothing(web):
    bounce = [sendgrid_event("bounce", "victim@example.com", type="bounce", reason="550 no such user")]
    refused = web.sendgrid(bounce, auth=None)
    assert refused.status_code == 401 and "not authenticated" in conforms(refused, SENDGRID, "post")["error"]
    assert refused.headers["WWW-Authenticate"].startswith("Basic "), "a client that waits for the challenge gets it"
    assert web.sendgrid(bounce, auth=(SECRET[0], "guessed")).status_code == 401
    assert web.sendgrid(bounce, key=ec.generate_private_key(ec.SECP256R1())).status_code == 401
    assert EmailSuppression.objects.count() == 0

    assert web.sendgrid(bounce).status_code == 200, "the same call, authenticated and signed"
    assert suppressed() == {"victim@example.com": ("bounce", "SendGrid", 1)}


def test_mailgun_permanent_failures_and_complaints_suppress_temporary_ones_do_not(web):
    hard = mailgun_failure("gone@example.org", "permanent", "bounce", 550, "5.1.1 No such user here")
    calls = [
        hard,
        mailgun_event({"event": "complained", "recipient": "Complainer@Example.org"}),
        mailgun_failure("full@example.org", "temporary", "generic", 452, "4.2.2 Mailbox full"),
        mailgun_failure("slow@example.org", "permanent", "old", 0, "Too old"),
        mailgun_event({"event": "delivered", "recipient": "fine@example.org"}),
    ]
    assert [web.mailgun(call).status_code for call in calls] == [200] * 5

    assert suppressed() == {
        "gone@example.org": ("bounce", "Mailgun", 1),
        "complainer@example.org": ("complaint", "Mailgun", 1),
    }
    assert EmailSuppression.objects.get(address="gone@example.org").event_id == hard["signature"]["token"]
    assert web.mailgun(hard).status_code == 200, "Mailgun retrying a call"
    assert suppressed()["gone@example.org"] == ("bounce", "Mailgun", 1)


def test_mailgun_calls_with_a_bad_signature_or_without_the_secret_are_refused_and_suppress_nothing(web):
    forged = mailgun_failure("victim@example.org", "permanent", "bounce", 550, "5.1.1 No such user")
    forged["signature"]["signature"] = mailgun_event({}, key="key-guessed")["signature"]["signature"]
    refused = web.mailgun(forged)
    assert refused.status_code == 401 and "not authenticated" in conforms(refused, MAILGUN, "post")["error"]
    real = mailgun_failure("victim@example.org", "permanent", "bounce", 550, "5.1.1 No such user")
    assert web.mailgun(real, auth=None).status_code == 401, "ANYMAIL_WEBHOOK_SECRET holds for Mailgun too"
    assert EmailSuppression.objects.count() == 0

    assert web.mailgun(real).status_code == 200
    assert suppressed() == {"victim@example.org": ("bounce", "Mailgun", 1)}


def test_without_their_credentials_the_webhooks_refuse_every_call(client):
    """This process's settings have no webhook credentials (none is set in the test environment)."""
    client.defaults["HTTP_HOST"] = "127.0.0.1"
    bounce = [sendgrid_event("bounce", "victim@example.com", type="bounce")]
    for path, setting in ((SENDGRID, "ANYMAIL_WEBHOOK_SECRET"), (MAILGUN, "ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY")):
        response = client.post(path, bounce, content_type="application/json")
        assert response.status_code == 401 and setting in conforms(response, path, "post")["error"]
        assert client.get(path).status_code == 405
    assert EmailSuppression.objects.count() == 0


def test_production_sending_through_an_esp_whose_webhook_is_off_is_warned_about_by_every_command():
    sendgrid = PRODUCTION | {"EMAIL_BACKEND": "anymail.backends.sendgrid.EmailBackend", "ANYMAIL_SENDGRID_API_KEY": "k"}
    off = run_manage("check", "--fail-level", "WARNING", env=sendgrid)
    assert off.returncode != 0 and "notifications.W002" in off.stderr and "ANYMAIL_WEBHOOK_SECRET" in off.stderr
    on = run_manage("check", "--fail-level", "WARNING", env=sendgrid | {"ANYMAIL_WEBHOOK_SECRET": ":".join(SECRET)})
    assert on.returncode == 0, on.stderr


def send(server: SendGridServer) -> None:
    env = subprocess_env({}) | server.environment() | {"EMAIL_RATE_PER_SECOND": "0"}
    result = run_manage("rqworker", "--burst", "notifications_high", "notifications", env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_suppressed_address_gets_no_email_nor_otp_until_an_operator_lifts_it(
    web, sendgrid_server, redis_conn, client
):
    first_bounce = [sendgrid_event("bounce", "erin@example.net", type="bounce", reason="550 5.1.1 unknown user")]
    assert web.sendgrid(first_bounce).status_code == 200
    mail, otp, other = submit(
        redis_conn,
        envelope("notification.email", title="New message", body="Frank wrote", email="Erin@Example.net"),
        envelope("otp.email", email="erin@example.net", otp="493817", metadata={"userName": "Erin"}),
        envelope("notification.email", title="New message", body="Erin wrote", email="frank@example.net"),
    )
    send(sendgrid_server)

    assert sendgrid_server.recipients() == ["frank@example.net"]
    for job in (mail, otp):
        row = Notification.objects.get(job_id=job.job_id)
        assert row.success is False and row.recipient == mask_email(job.payload["email"])
        assert row.error.startswith("suppressed: hard bounce reported by SendGrid on 2025-12-06"), row.error
        record = JobRun.objects.get(job_id=job.job_id)
        assert (record.status, record.result) == ("succeeded", {"suppressed": "bounce"}), "not retried, not dead"
    assert Notification.objects.get(job_id=other.job_id).success is True
    metrics = client.get("/metrics", HTTP_HOST="127.0.0.1").content.decode()
    assert 'supworker_emails_suppressed_total{type="notification.email"} 1.0' in metrics
    assert 'supworker_emails_suppressed_total{type="otp.email"} 1.0' in metrics

    operator = get_user_model().objects.create_superuser("operator", password="a-long-password")
    client.force_login(operator)
    log = client.get(reverse("admin:notifications_notification_changelist"), {"status": "suppressed"})
    assert log.status_code == 200 and {mail.job_id, otp.job_id} == {r.job_id for r in log.context["cl"].result_list}
    page = reverse("admin:notifications_emailsuppression_changelist")
    listed = client.get(page, {"q": "ERIN@example.NET", "reason__exact": "bounce"})
    (entry,) = listed.context["cl"].result_list
    assert entry.address == "erin@example.net" and entry.active
    lifted = client.post(page, {"action": "lift_suppression", "_selected_action": [entry.pk]})
    assert lifted.status_code == 302
    entry.refresh_from_db()
    assert (entry.active, entry.lifted_by) == (False, "operator")

    # SendGrid delivering the old bounce again does not undo the operator's decision.
    assert web.sendgrid(first_bounce).status_code == 200
    assert suppressed() == {}
    (again,) = submit(redis_conn, envelope("notification.email", title="Hi", body="again", email="erin@example.net"))
    send(sendgrid_server)
    assert sendgrid_server.recipients() == ["frank@example.net", "erin@example.net"]
    assert Notification.objects.get(job_id=again.job_id).success is True

    # A new bounce, after the lift, suppresses the address again.
    bounce_now = sendgrid_event("bounce", "erin@example.net", at=int(time.time()) + 1, type="bounce", reason="550")
    assert web.sendgrid([bounce_now]).status_code == 200
    assert suppressed() == {"erin@example.net": ("bounce", "SendGrid", 2)}
