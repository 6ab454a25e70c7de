"""No credential, code, token or address in clear where the service writes.

The main test runs the stack as `make run` does (`ensure_admin`, then honcho with the Procfile:
web, two notification workers, the consumer) at LOG_LEVEL=DEBUG, every credential set to a known
value: Django's secret key, the shutdown token, the SMTP password (the loopback SMTP server
requires AUTH), a Redis password (a Redis server of the test's own), the FCM static token, the
SMS API key and secret, and the admin password `ensure_admin` generates. The messenger publishes
OTP e-mails, pushes, SMS and e-mails that succeed, fail for good (SMTP 550 and 554, FCM 400, SMS
status 3), are retried and dead-lettered (SMTP 451, FCM 503), invalid messages carrying codes and
tokens, and two jobs that fail with a traceback. Then everything the run wrote is read back: the
log files, every process's output, every Redis key (RQ job data, results and the failed registry,
decompressed), the job_runs, dead_letters and notifications tables, and the admin's pages.
E-mail addresses count as leaks in logs and output (jobs need them in Redis); codes, tokens,
phone numbers (sealed like codes) and credentials anywhere. Each place is first shown to hold
what the scan looks for, so the test can fail.

The dead-letter queue in RabbitMQ has a test of its own; two fast tests check the log formats'
redaction and what a rejected message's body keeps.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import string
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from django.db import connection as db
from redis import Redis
from rq import Queue

from supworker.config import load_config
from supworker.enqueue import Submission, enqueue
from supworker.envelope import Envelope, open_fields
from supworker.logging_config import JobContextFilter, build_logging
from supworker.masking import dead_letter_body
from supworker.models import DeadLetter, JobRun
from supworker.rabbit import topology
from tests.helpers import run_manage, wait_for
from tests.ingest_fixtures import dead_letters, free_port, queue_depth, subprocess_env
from tests.notification_servers import FcmServer, SmsServer, SmtpServer, _Collector
from tests.testenv import ROOT

# No hex digit in a code: it cannot turn up inside an id, a digest or a sealed value by chance.
CODE_ALPHABET = "GHJKLMNPQRSTUVWXYZ"


def otp_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(10))


def fcm_token() -> str:
    # Letters only: a preview of a message that is not JSON masks digits, which would hide a leak.
    letters = "".join(secrets.choice(string.ascii_letters) for _ in range(120))
    return f"{letters[:11]}:APA{letters[11:]}"


@dataclass(frozen=True)
class Needle:
    what: str
    value: str


def scan(needles: list[Needle], places: dict[str, bytes]) -> list[str]:
    """Each (needle, place) where the needle's value occurs."""
    return [
        f"{n.what} ({n.value}) in {where}"
        for where, blob in places.items()
        for n in needles
        if n.value.encode() in blob
    ]


def decoded(blob: bytes, depth: int = 3) -> bytes:
    """The blob and what zlib or base64 layers hide in it (RQ compresses job data and failure texts)."""
    layers = [blob]
    if depth:
        with contextlib.suppress(zlib.error):
            layers.append(decoded(zlib.decompress(blob), depth - 1))
        stripped = blob.strip()
        if len(stripped) >= 8 and re.fullmatch(rb"[A-Za-z0-9+/=_-]+", stripped):
            with contextlib.suppress(binascii.Error, ValueError):
                altchars = b"-_" if b"-" in stripped or b"_" in stripped else None
                layers.append(decoded(base64.b64decode(stripped, altchars=altchars), depth - 1))
    return b"\n".join(layers)


def redis_contents(conn: Redis) -> dict[str, bytes]:
    """Every key of the database with every value it holds, decoded."""
    found: dict[str, bytes] = {}
    for key in conn.scan_iter(count=1000):
        kind = conn.type(key).decode()
        if kind == "string":
            values = [conn.get(key) or b""]
        elif kind == "hash":
            values = [v for pair in conn.hgetall(key).items() for v in pair]
        elif kind == "list":
            values = conn.lrange(key, 0, -1)
        elif kind == "set":
            values = list(conn.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in conn.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [v for _, fields in conn.xrange(key) for pair in fields.items() for v in pair]
        else:
            raise AssertionError(f"the scan does not read Redis {kind} values ({key!r})")
        found[f"redis {key.decode()}"] = key + b"\n" + b"\n".join(decoded(v) for v in values)
    return found


def table_contents(*tables: str) -> dict[str, bytes]:
    found = {}
    with db.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT row_to_json(t)::text FROM {table} t")  # noqa: S608 - fixed table names
            found[f"table {table}"] = "\n".join(row for (row,) in cursor.fetchall()).encode()
    return found


class AuthSmtpServer(SmtpServer):
    """The loopback SMTP server requiring AUTH, and refusing at DATA as content filters do: with
    the recipient's address in the reply."""

    def __init__(self, user: str, password: str):
        super().__init__()
        self.credentials = LoginPassword(user.encode(), password.encode())
        self.controller = Controller(
            _RejectingCollector(self),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_require_tls=False,
        )

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        return AuthResult(success=auth_data == self.credentials)


class _RejectingCollector(_Collector):
    async def handle_DATA(self, server, session, envelope) -> str:
        spam = [address for address in envelope.rcpt_tos if address.startswith("spam")]
        if spam:
            return f"554 5.7.1 <{spam[0]}>: message content rejected"
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def locked_redis(tmp_path) -> Iterator[tuple[Redis, str, str]]:
    """A Redis server of the test's own that requires a password: (client, url, password)."""
    port, password, data = free_port(), secrets.token_hex(16), tmp_path / "redis"
    data.mkdir()
    subprocess.run(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--daemonize", "yes",
         "--save", "", "--appendonly", "no", "--requirepass", password, "--logfile", str(data / "redis.log")],
        check=True,
    )  # fmt: skip
    client = Redis(port=port, password=password)
    wait_for(lambda: _pings(client), 10, "the test's Redis to start")
    yield client, f"redis://:{password}@127.0.0.1:{port}/0", password
    client.shutdown(nosave=True)


@pytest.fixture
def providers() -> Iterator[tuple[FcmServer, SmsServer, AuthSmtpServer]]:
    """Loopback FCM, SMS and SMTP servers, each with credentials of its own."""
    servers = (
        FcmServer(token="fcm-static-" + secrets.token_hex(16)),
        SmsServer(key="smskey" + secrets.token_hex(8), secret="smssecret" + secrets.token_hex(12)),
        AuthSmtpServer("mailer", "smtp-pw-" + secrets.token_hex(12)),
    )
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def _pings(client: Redis) -> bool:
    try:
        return client.ping()
    except Exception:  # noqa: BLE001 - redis raises its own errors while the server starts
        return False


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _sign_in(session: requests.Session, web: str, password: str) -> requests.Response:
    form = session.get(web + "/admin/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    return session.post(
        web + "/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": "admin", "password": password, "next": "/admin/"},
        headers={"Referer": web + "/admin/login/"},
        allow_redirects=False,
        timeout=10,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_full_run_leaves_no_secret_code_or_address_in_clear(
    tmp_path, locked_redis, providers, rabbit_names, publisher, settings
):
    redis, redis_url, redis_password = locked_redis
    fcm, sms, smtp = providers
    tag = uuid.uuid4().hex[:8]
    web_port, log_dir = free_port(), tmp_path / "logs"
    config = {
        "DJANGO_SECRET_KEY": "django-secret-" + secrets.token_hex(24),
        "SHUTDOWN_TOKEN": "shutdown-" + secrets.token_hex(20),
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "DEBUG",
        "LOG_DIR": str(log_dir),
        "WEB_PORT": str(web_port),
        "MAX_RETRIES": "1",
        "HEARTBEAT_INTERVAL_MS": "1000",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_USER": "mailer",
        "SMTP_PASSWORD": smtp.credentials.password.decode(),
        "SMTP_SECURITY": "none",
        "FCM_ENDPOINT": fcm.url,
        "FCM_ACCESS_TOKEN": fcm.token,
        "FCM_PROJECT_ID": "sup-loopback",
        "SMS_BACKEND": "vonage",
        "SMS_API_URL": sms.url,
        "SMS_API_KEY": sms.key,
        "SMS_API_SECRET": sms.secret,
        "SMS_FROM_NUMBER": "+14155550100",
    } | subprocess_env(rabbit_names)
    env_file = tmp_path / "operator.env"  # the operator's .env
    env_file.write_text("".join(f"{name}={value}\n" for name, value in config.items()))

    # As `make run` does: the admin account first (its password is printed once, by design), then the processes.
    admin = run_manage("ensure_admin", env=config)
    assert admin.returncode == 0, admin.stderr
    admin_password = re.search(r"with password '([^']+)'", admin.stdout).group(1)
    stack_out = tmp_path / "honcho.log"
    with open(stack_out, "w") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "-e", str(env_file), "--no-colour",
             "-c", "notifications=2", "web", "notifications", "consumer"],
            cwd=ROOT,
            env=os.environ | {"PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    web = f"http://127.0.0.1:{web_port}"
    codes = {name: otp_code() for name in ("otp-ok", "otp-bounce", "otp-busy", "sms-ok", "sms-fail", "rotated")}
    codes |= {name: otp_code() for name in ("stale", "invalid-otp", "invalid-expiry", "invalid-sms")}
    tokens = {name: fcm_token() for name in ("ok", "bad", "down", "invalid", "cut")}
    phones = {name: f"+1415555{secrets.randbelow(10**4):04d}" for name in ("ok", "fail")}
    emails = {
        name: f"{name}{tag}@example.com"
        for name in ("otpok", "bounce", "busy", "mailok", "spam", "expiry", "rotated", "stale", "cut")
    }
    user = str(uuid.uuid4())

    def job_id(name: str) -> str:
        return f"sec-{name}-{tag}"

    try:
        wait_for(lambda: _answers(web + "/health/live"), 60, "the web process")
        wait_for(lambda: redis.scard("rq:workers") == 2, 60, "2 notification workers")
        wait_for(lambda: redis.scard("supworker:consumers") == 1, 60, "the consumer")

        otp_queue = rabbit_names["RABBITMQ_QUEUE_NAME"]
        for name, address in (("otp-ok", "otpok"), ("otp-bounce", "bounce"), ("otp-busy", "busy")):
            otp = {"email": emails[address], "otp": codes[name], "metadata": {"userName": "Ann"}}
            publisher.publish(otp_queue, otp | {"jobId": job_id(name)})
        fcm.script[tokens["bad"]] = ["INVALID_ARGUMENT"]
        fcm.script[tokens["down"]] = ["UNAVAILABLE"] * 5
        for name in ("ok", "bad", "down"):
            push = {"type": "push", "userId": user, "title": "Hi", "body": "Hello", "fcmToken": tokens[name]}
            publisher.publish("notification.push", push | {"jobId": job_id(f"push-{name}")})
        for name, address in (("mail-ok", "mailok"), ("mail-spam", "spam")):
            mail = {"type": "email", "userId": user, "title": "News", "body": "Read me", "email": emails[address]}
            publisher.publish("notification.email", mail | {"jobId": job_id(name)})
        sms_ok = {"type": "sms", "userId": user, "title": "", "body": "", "phoneNumber": phones["ok"]}
        sms_ok |= {"otp": codes["sms-ok"], "data": {"kind": "otp"}, "jobId": job_id("sms-ok")}
        publisher.publish("notification.sms", sms_ok)
        wait_for(lambda: len(sms.requests) == 1, 30, "the first SMS")
        sms.script.append("3")  # Vonage's "invalid parameters": a permanent failure
        sms_fail = sms_ok | {"phoneNumber": phones["fail"], "otp": codes["sms-fail"], "data": {"kind": "2fa"}}
        publisher.publish("notification.sms", sms_fail | {"jobId": job_id("sms-fail")})

        # Invalid messages carrying codes and tokens: the consumer dead-letters them.
        publisher.publish(otp_queue, {"email": "not-an-address", "otp": codes["invalid-otp"]})
        expiry = {"email": emails["expiry"], "otp": codes["invalid-expiry"], "metadata": {"expiryMinutes": 0}}
        publisher.publish(otp_queue, expiry)
        publisher.publish("notification.push", {"type": "push", "userId": user, "fcmToken": tokens["invalid"]})
        bad_number = {"type": "sms", "userId": user, "title": "", "body": "", "phoneNumber": "+0"}
        publisher.publish("notification.sms", bad_number | {"otp": codes["invalid-sms"], "data": {"kind": "otp"}})
        # Cut short, so not JSON: the consumer keeps a preview of its first 200 characters.
        cut = {"fcmToken": tokens["cut"], "email": emails["cut"], "type": "push", "userId": user, "title": "x"}
        publisher.publish("notification.push", json.dumps(cut).encode()[:-3])

        # Two jobs that fail with a traceback: an OTP sealed under a former DJANGO_SECRET_KEY (this
        # process's), and an item in a format this version does not know, enqueued without a
        # description (RQ then logs the call with its arguments).
        rotated = Envelope.sealed(
            job_id=job_id("rotated"),
            job_type="otp.email",
            payload={"email": emails["rotated"], "otp": codes["rotated"]},
        )
        enqueue(redis, [Submission(rotated, f"id:{rotated.job_id}", 600)], {rotated.job_id: "notifications_high"})
        settings.SECRET_KEY = config["DJANGO_SECRET_KEY"]
        stale = Envelope.sealed(
            job_id=job_id("stale"), job_type="otp.email", payload={"email": emails["stale"], "otp": codes["stale"]}
        )
        stale_job = Queue("notifications", connection=redis).enqueue(
            "supworker.runner.run_batch", [{"email": emails["stale"]} | stale.to_dict() | {"format": 2}]
        )

        finals = {"otp-ok": "succeeded", "otp-bounce": "failed", "otp-busy": "failed", "push-ok": "succeeded"}
        finals |= {"push-bad": "failed", "push-down": "failed", "mail-ok": "succeeded", "mail-spam": "failed"}
        finals |= {"sms-ok": "succeeded", "sms-fail": "failed", "rotated": "failed"}

        def settled() -> bool:
            runs = dict(JobRun.objects.filter(job_id__in=[job_id(n) for n in finals]).values_list("job_id", "status"))
            return all(runs.get(job_id(name)) == status for name, status in finals.items())

        wait_for(settled, 60, "every job to reach its final status")
        wait_for(lambda: DeadLetter.objects.filter(source="consumer").count() == 5, 30, "5 rejected messages")
        wait_for(lambda: stale_job.get_status(refresh=True) == "failed", 30, "the stale job to fail")
        assert smtp.count() == 2 and len(fcm.messages_to(tokens["ok"])) == 1 and len(sms.requests) == 2

        # The web process refuses anonymous visitors; the admin signs in; the token shuts down.
        anonymous = requests.Session()
        for page in ("/admin/", "/admin/supworker/deadletter/", "/admin/django_rq/dashboard/"):
            response = anonymous.get(web + page, allow_redirects=False, timeout=10)
            assert response.status_code == 302 and "/admin/login/" in response.headers["Location"], page
        assert anonymous.post(web + "/shutdown", timeout=10).status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * 40}
        assert anonymous.post(web + "/shutdown", headers=wrong, timeout=10).status_code == 403
        assert _sign_in(anonymous, web, "not-" + admin_password).status_code == 200, "the form again"
        operator = requests.Session()
        assert _sign_in(operator, web, admin_password).status_code == 302
        letter = DeadLetter.objects.get(job_id=job_id("otp-busy"))
        pages = {}
        for page in (
            "/admin/supworker/deadletter/",
            f"/admin/supworker/deadletter/{letter.pk}/change/",
            "/admin/supworker/jobrun/",
            "/admin/notifications/notification/",
        ):
            response = operator.get(web + page, timeout=10)
            assert response.status_code == 200, page
            pages[f"admin page {page}"] = response.content
        right = {"Authorization": f"Bearer {config['SHUTDOWN_TOKEN']}"}
        assert requests.post(web + "/shutdown", headers=right, timeout=10).status_code == 202
        stack.wait(60)  # the workers and the consumer stop; honcho then stops the web process
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)
            try:
                stack.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)

    # --- Everything the run wrote ---------------------------------------------------------------
    logs = {f"logs/{path.name}": path.read_bytes() for path in sorted(log_dir.iterdir())}
    output = stack_out.read_bytes()
    stored = redis_contents(redis) | table_contents("job_runs", "dead_letters", "notifications")
    rejected = dead_letters()  # drained; tested on its own below

    credentials = [
        Needle("DJANGO_SECRET_KEY", config["DJANGO_SECRET_KEY"]),
        Needle("SHUTDOWN_TOKEN", config["SHUTDOWN_TOKEN"]),
        Needle("SMTP_PASSWORD", config["SMTP_PASSWORD"]),
        Needle("Redis password", redis_password),
        Needle("FCM_ACCESS_TOKEN", fcm.token),
        Needle("SMS_API_KEY", sms.key),
        Needle("SMS_API_SECRET", sms.secret),
    ]
    secret = [*credentials, Needle("admin password", admin_password)]
    secret += [Needle(f"OTP code {name}", value) for name, value in codes.items()]
    secret += [Needle(f"FCM token {name}", value) for name, value in tokens.items()]
    numbers = [Needle(f"phone {name}", value) for name, value in phones.items()]
    numbers += [Needle(f"phone {name} (digits)", value[1:]) for name, value in phones.items()]
    # What masking keeps of an address is its first letter: the rest of the name must not appear.
    addresses = [Needle(f"e-mail {name}", value.partition("@")[0][1:]) for name, value in emails.items()]

    # The scan sees what is there: planted, decompressed from RQ's job data, and in each place.
    assert scan(secret, {"planted": f"… {codes['otp-ok']} …".encode()})
    assert scan([Needle("e-mail otpok", emails["otpok"])], stored), "RQ's job data holds the address, compressed"
    assert b"e-mail to b***@example.com failed" in logs["logs/combined.log"]
    assert b"TypeError: Envelope.__init__() got an unexpected keyword" in logs["logs/error.log"], (
        "RQ's traceback reaches the file"
    )
    assert b"could not compose e-mail" in logs["logs/error.log"] and b"notifications.1 |" in output
    assert all(tag.encode() in stored[f"table {t}"] for t in ("job_runs", "dead_letters", "notifications"))
    assert all(tag.encode() in page for page in pages.values()) and len(rejected) == 5

    leaks = (
        scan(secret + numbers + addresses, logs | {"process output": output})
        + scan(credentials + numbers + addresses, {"ensure_admin output": admin.stdout.encode()})
        + scan(secret + numbers, stored | pages)
    )
    assert not leaks, "\n".join(leaks)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_rejected_messages_keep_no_code_or_token_in_clear_in_the_dead_letter_queue(consumer, publisher, settings):
    code, token, push_token = otp_code(), fcm_token(), fcm_token()
    user = str(uuid.uuid4())
    publisher.publish(
        settings.CONFIG.rabbitmq_queue_name, {"email": "someone@example.com", "otp": code, "retryCount": -1}
    )
    publisher.publish("notification.push", {"type": "push", "userId": user, "fcmToken": push_token})
    cut = {"fcmToken": token, "type": "push", "userId": user, "title": "x", "body": "y"}
    publisher.publish("notification.push", json.dumps(cut).encode()[:-3])
    wait_for(lambda: queue_depth(topology.dead_letter_queue()) == 3, 10, "3 rejected messages")

    rejected = dead_letters()
    bodies = b"\n".join(body for _, body in rejected)
    assert all(properties.headers["x-supworker-reason"] for properties, _ in rejected)
    leaks = scan(
        [Needle("OTP code", code), Needle("FCM token", push_token), Needle("cut FCM token", token)], {"": bodies}
    )
    assert not leaks, leaks
    # What is needed to fix and republish the message is still there, sealed.
    otp = open_fields(json.loads(next(body for _, body in rejected if b"someone@example.com" in body)))
    assert otp["otp"] == code


def test_a_rejected_body_keeps_no_secret_and_opens_to_the_original():
    code, token = otp_code(), fcm_token()
    message = {"type": "sms", "phoneNumber": "+14155550123", "otp": code, "fcmToken": token, "email": "a@example.com"}
    kept = dead_letter_body(json.dumps(message).encode())
    assert code.encode() not in kept and token.encode() not in kept and b"14155550123" not in kept
    assert open_fields(json.loads(kept)) == message, "republishing the fixed message works"
    plain = json.dumps({"type": "push", "title": "x"}).encode()
    assert dead_letter_body(plain) is plain, "nothing to hide: byte for byte"
    cut = dead_letter_body(json.dumps(message).encode()[:-10])
    assert code.encode() not in cut and token.encode() not in cut and b'"type": "sms"' in cut


def test_both_log_formats_hide_credentials_codes_tokens_and_addresses(tmp_path):
    config = load_config(
        {
            "SUPWORKER_ENV_FILE": os.devnull,
            "DJANGO_SECRET_KEY": "django-secret-" + secrets.token_hex(24),
            "SMTP_PASSWORD": "smtp-pw-" + secrets.token_hex(12),
            "REDIS_URL": f"redis://:{secrets.token_hex(16)}@redis.internal:6379/0",
            "LOG_DIR": str(tmp_path),
        }
    )
    redis_password = urlsplit(config.redis_url).password
    code, token = otp_code(), fcm_token()
    try:
        raise ConnectionError(f"cannot reach {config.redis_url} as mailer/{config.notifications.smtp_password}")
    except ConnectionError:
        exc_info = sys.exc_info()
    # As RQ logs a failing job: job_id and queue passed along, job_type not.
    record = logging.LogRecord(
        "rq.worker",
        logging.ERROR,
        __file__,
        1,
        "job for %s (%s) failed with %r",
        ("bob.smith@example.com", "+14155550123", {"otp": code, "fcmToken": token, "key": config.secret_key}),
        exc_info,
    )
    record.job_id, record.queue = "job-1", "notifications"
    assert JobContextFilter().filter(record)

    formatters = build_logging(config)["formatters"]
    for name in ("text", "json"):
        spec = dict(formatters[name])
        line = spec.pop("()")(**spec).format(record)
        assert "b***@example.com" in line and "+***23" in line and "ConnectionError" in line, line
        assert "[notifications" in line if name == "text" else json.loads(line)["queue"] == "notifications"
        hidden = (config.secret_key, config.notifications.smtp_password, redis_password, code, token)
        for value in (*hidden, "bob.smith", "4155550123"):
            assert value not in line, (name, value, line)
