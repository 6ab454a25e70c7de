"""The monitoring endpoints against real services, every response checked against the OpenAPI
description in monitoring/openapi.yaml."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import uuid
from datetime import timedelta

import jsonschema
import pytest
import yaml
from django.contrib.auth import get_user_model
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from monitoring.jobs import check_health
from monitoring.models import HealthCheckResult
from supworker.envelope import Envelope
from supworker.models import JobRun
from tests.helpers import start_manage, stop, wait_for
from tests.ingest_fixtures import subprocess_env
from tests.testenv import ROOT

pytestmark = pytest.mark.django_db(transaction=True)
SPEC = yaml.safe_load((ROOT / "monitoring" / "openapi.yaml").read_text())
TOKEN = "t" * 40


def conforms(response, path: str, method: str = "get") -> dict:
    """The response's status and body are ones the OpenAPI description allows for this path."""
    described = SPEC["paths"][path][method]["responses"]
    assert str(response.status_code) in described, f"{path} answered {response.status_code}, not described"
    content = described[str(response.status_code)]["content"]
    if "application/json" not in content:
        return {}
    body = response.json()
    schema = content["application/json"]["schema"] | {"components": SPEC["components"]}
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    return body


@pytest.fixture
def web(client):
    client.defaults["HTTP_HOST"] = "127.0.0.1"
    return client


def test_health_checks_every_dependency_and_says_ok(web, redis_conn):
    body = conforms(web.get("/health"), "/health")
    assert body["status"] == "ok" and body["failing"] == []
    assert set(body["checks"]) == {"postgresql", "redis", "rabbitmq", "storage"}
    assert all(check["ok"] and check["latency_ms"] >= 0 for check in body["checks"].values())
    assert conforms(web.get("/health/live"), "/health/live")["status"] == "ok"
    assert set(conforms(web.get("/health/ready"), "/health/ready")["checks"]) == {"postgresql", "redis"}


def test_a_stopped_redis_makes_health_503_naming_it_while_liveness_stays_up(web, own_redis, settings):
    settings.RQ_QUEUES = {name: {"URL": own_redis.url} for name in settings.RQ_QUEUES}
    assert conforms(web.get("/health"), "/health")["status"] == "ok"
    subprocess.run(["redis-cli", "-p", str(own_redis.connection_pool.connection_kwargs["port"]), "shutdown", "nosave"])

    response = web.get("/health")
    body = conforms(response, "/health")
    assert response.status_code == 503 and body["status"] == "down" and body["failing"] == ["redis"]
    assert body["checks"]["redis"]["error"].startswith("ConnectionError")
    assert web.get("/health/ready").status_code == 503
    assert web.get("/health/live").status_code == 200, "a restart would not bring Redis back"


def test_an_unreachable_rabbitmq_is_degraded_not_down(web, settings, redis_conn):
    settings.CONFIG = dataclasses.replace(settings.CONFIG, rabbitmq_url="amqp://guest:guest@127.0.0.1:1/%2F")
    response = web.get("/health")
    body = conforms(response, "/health")
    assert response.status_code == 503 and body["status"] == "degraded" and body["failing"] == ["rabbitmq"]
    assert web.get("/health/ready").status_code == 200, "jobs still run without the broker"


def test_the_openapi_description_is_served_as_yaml_and_as_json_without_signing_in(web):
    written = (ROOT / "monitoring" / "openapi.yaml").read_text()
    as_yaml = web.get("/openapi.yaml")
    assert as_yaml.status_code == 200 and as_yaml["Content-Type"] == "application/yaml; charset=utf-8"
    assert as_yaml.content.decode() == written
    as_json = web.get("/openapi.json")
    assert as_json["Content-Type"] == "application/json"
    assert conforms(as_json, "/openapi.json") == SPEC
    assert {"/openapi.yaml", "/openapi.json", "/health"} <= set(as_json.json()["paths"])
    assert web.post("/openapi.json").status_code == 405


def test_queue_metrics_count_waiting_jobs_and_their_age(web, redis_conn):
    queue = Queue("cleanup", connection=redis_conn)
    for _ in range(3):
        queue.enqueue("supworker.runner.run_batch", [])
    body = conforms(web.get("/metrics/queues"), "/metrics/queues")
    cleanup = body["queues"]["cleanup"]
    assert cleanup["waiting"] == 3 and cleanup["oldest_waiting_seconds"] >= 0
    assert cleanup["drain_seconds"] is None, "nothing finished lately: no pace to estimate from"
    assert body["queues"]["media"]["waiting"] == 0 and body["queues"]["media"]["drain_seconds"] == 0.0


def test_system_metrics_describe_machine_process_and_disks(web):
    body = conforms(web.get("/metrics/system"), "/metrics/system")
    assert body["memory"]["total_bytes"] > body["memory"]["available_bytes"] > 0
    assert body["process"]["rss_bytes"] > 10 * 2**20
    assert body["disk"]["media"]["path"].endswith("media")


def test_job_metrics_give_success_rate_and_percentiles_per_type(web):
    now = timezone.now()
    for number in range(1, 21):  # 10 ms … 200 ms
        JobRun.objects.create(
            job_id=f"stat-{number}",
            job_type="media.image",
            queue="media_high",
            status="succeeded" if number <= 18 else "failed",
            duration_ms=number * 10,
            finished_at=now - timedelta(minutes=number),
        )
    JobRun.objects.create(
        job_id="old", job_type="media.image", queue="media_high", status="succeeded", duration_ms=5,
        finished_at=now - timedelta(hours=3),
    )  # fmt: skip
    body = conforms(web.get("/metrics/jobs"), "/metrics/jobs")
    hour, day = body["windows"]["hour"]["media.image"], body["windows"]["day"]["media.image"]
    assert (hour["jobs"], hour["succeeded"], hour["success_rate"]) == (20, 18, 0.9)
    assert hour["p50_ms"] == 105.0 and hour["p95_ms"] == 190.5
    assert day["jobs"] == 21


def test_prometheus_exposes_queues_outcomes_durations_and_consumers(web, redis_conn):
    from supworker.stats import CONSUMER_KEY, CONSUMERS_KEY, count_outcomes, observe_duration

    Queue("media", connection=redis_conn).enqueue("supworker.runner.run_batch", [])
    count_outcomes(redis_conn, "media.video", succeeded=4, failed=1)
    observe_duration(redis_conn, "media.video", 3.0, items=4)
    redis_conn.sadd(CONSUMERS_KEY, "c1")
    redis_conn.hset(CONSUMER_KEY + "c1", mapping={"receivedMessages": 9, "enqueuedJobs": 7, "rejectedMessages": 1})
    redis_conn.hset(CONSUMER_KEY + "c1", mapping={"duplicateMessages": 1, "lastMessageAt": 1.5})

    response = web.get("/metrics")
    conforms(response, "/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }
    assert samples[("supworker_queue_jobs", (("queue", "media"), ("state", "waiting")))] == 1
    assert samples[("supworker_jobs_total", (("outcome", "succeeded"), ("type", "media.video")))] == 4
    assert samples[("supworker_job_duration_seconds_bucket", (("le", "2.5"), ("type", "media.video")))] == 0
    assert samples[("supworker_job_duration_seconds_bucket", (("le", "5.0"), ("type", "media.video")))] == 4
    assert samples[("supworker_job_duration_seconds_sum", (("type", "media.video"),))] == 12.0
    consumer = (("consumer", "c1"),)
    assert samples[("supworker_consumer_received_messages_total", consumer)] == 9
    assert samples[("supworker_consumer_enqueued_jobs_total", consumer)] == 7
    assert samples[("supworker_consumer_rejected_messages_total", consumer)] == 1
    assert samples[("supworker_consumer_duplicate_messages_total", consumer)] == 1
    assert samples[("supworker_consumer_redelivered_messages_total", consumer)] == 0
    assert samples[("supworker_consumer_last_message_timestamp_seconds", consumer)] == 1.5
    # The LMS worker's names mean OTP e-mails, delivered by the workers (tests/test_lms.py): none yet.
    assert samples[("supworker_lms_processed_jobs_total", ())] == 0
    assert samples[("supworker_lms_last_processed_timestamp_seconds", ())] == 0
    assert not [name for name, _ in samples if name.startswith("supworker_consumer_processed")]


def test_shutdown_is_refused_without_the_right_credentials(web, settings, redis_conn):
    settings.CONFIG = dataclasses.replace(settings.CONFIG, shutdown_token=TOKEN)
    anonymous = web.post("/shutdown")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Bearer")
    conforms(anonymous, "/shutdown", "post")
    wrong = web.post("/shutdown", HTTP_AUTHORIZATION="Bearer " + "x" * 40)
    assert wrong.status_code == 403 and conforms(wrong, "/shutdown", "post")
    user = get_user_model().objects.create_user("someone", password="a-long-password")
    web.force_login(user)
    assert web.post("/shutdown").status_code == 403, "signed in is not enough: staff only"
    user.is_staff = True
    user.save()
    web.force_login(user)
    from django.test import Client

    strict = Client(enforce_csrf_checks=True, HTTP_HOST="127.0.0.1")
    strict.force_login(user)
    assert strict.post("/shutdown").status_code == 403, "a staff session must pass the CSRF check"
    assert web.get("/shutdown").status_code == 405
    settings.CONFIG = dataclasses.replace(settings.CONFIG, shutdown_token="")
    assert web.post("/shutdown", HTTP_AUTHORIZATION="Bearer ").status_code == 403, "no token set: bearer never works"


@pytest.mark.slow
def test_shutdown_with_the_token_stops_workers_and_the_consumer_cleanly(web, settings, rabbit_names, tmp_path):
    settings.CONFIG = dataclasses.replace(settings.CONFIG, shutdown_token=TOKEN)
    env = subprocess_env(rabbit_names)
    worker = start_manage(
        "rqworker", "cleanup", "--name", f"w-{uuid.uuid4().hex[:6]}", log_path=tmp_path / "w.log", env=env
    )
    consumer = start_manage("consume_rabbit", log_path=tmp_path / "c.log", env=env)
    try:
        from rq import Worker

        from supworker.enqueue import redis_connection

        wait_for(lambda: Worker.all(connection=redis_connection()), 30, "the worker to register")
        wait_for(lambda: "consuming from" in (tmp_path / "c.log").read_text(), 30, "the consumer to start")
        response = web.post("/shutdown", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        body = conforms(response, "/shutdown", "post")
        assert response.status_code == 202 and len(body["workers"]) == 1 and len(body["consumers"]) == 1
        assert worker.wait(30) == 0 and consumer.wait(30) == 0
    finally:
        stop(worker)
        stop(consumer)
    assert "shutdown requested" in (tmp_path / "c.log").read_text()


def test_the_admin_dashboard_shows_queues_24_hours_of_jobs_and_dead_letters(web, redis_conn):
    from supworker.models import DeadLetter

    now = timezone.now()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    for number in range(5):
        # Between the start of the current hour and now, so no row falls into the previous hour's bar.
        JobRun.objects.create(
            job_id=f"d-{number}", job_type="cleanup.sessions", queue="cleanup",
            status="failed" if number == 0 else "succeeded", finished_at=this_hour + (now - this_hour) / (number + 1),
        )  # fmt: skip
    DeadLetter.objects.create(job_id="dead-1", job_type="media.video", source="worker", error="the video is 8K")
    oldest = now - timedelta(days=3)
    DeadLetter.objects.create(job_id="dead-0", source="consumer", error="not JSON", failed_at=oldest)
    Queue("cleanup", connection=redis_conn).enqueue("supworker.runner.run_batch", [])

    web.force_login(get_user_model().objects.create_superuser("operator", password="a-long-password"))
    page = web.get("/admin/monitoring/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Last 24 hours: 4 succeeded, 1 failed" in html
    assert f"<title>{now:%H}h: 4 succeeded, 1 failed</title>" in html, "the current hour's bar"
    assert html.count("<rect") == 48, "24 hourly bars, each succeeded and failed"
    assert "dead-1" in html and "the video is 8K" in html and "Dead letters waiting: 2" in html
    assert f"The oldest has waited since {oldest:%Y-%m-%d %H:%M} (3\xa0days)" in html
    assert "dead letters go 90 days after they failed" in html
    for name in ("cleanup", "media_high", "notifications"):  # each link opens that queue's page
        link = re.search(rf'<td><a href="([^"]+)">{name}</a></td>', html).group(1)
        assert f"<title>Queued Jobs in {name} " in web.get(link).content.decode(), name
    assert "<td>1</td>" in html  # one waiting cleanup job
    assert "cdn" not in html.lower() and '<script src="http' not in html
    web.logout()
    assert web.get("/admin/monitoring/dashboard/").status_code == 302


HEALTH = Envelope(job_id="cron:health:test", job_type="monitoring.health", payload={"type": "health"})


def test_health_check_records_each_dependency_and_logs_a_failure(settings, caplog):
    assert check_health(HEALTH)["counts"] == {"postgresql_ok": 1, "redis_ok": 1, "rabbitmq_ok": 1, "storage_ok": 1}
    assert HealthCheckResult.objects.get().healthy is True
    settings.CONFIG = dataclasses.replace(settings.CONFIG, rabbitmq_url="amqp://guest:guest@127.0.0.1:1/%2F")
    assert check_health(HEALTH)["counts"]["rabbitmq_ok"] == 0
    latest = HealthCheckResult.objects.latest("checked_at")
    assert latest.healthy is False and latest.checks["rabbitmq"]["error"]
    assert "health check rabbitmq failed" in caplog.text
