"""Every admin page loads for staff and is refused to anonymous visitors."""

from __future__ import annotations

import uuid

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from django_rq.models import Dashboard
from rq import Queue

from monitoring.models import HealthCheckResult
from notifications.models import Device, EmailSuppression, Notification
from privacy.models import ErasureReceipt, UserExport
from supworker.models import (
    DeadLetter,
    GlobalStatistics,
    JobRun,
    Message,
    Story,
    TemporaryFile,
    UserPrekey,
    UserSession,
    UserStatistics,
    WebsocketConnection,
)
from tests.test_cron import submit_cleanup, work

pytestmark = pytest.mark.django_db


def make_one(model):
    """A saved row for each registered model, so change pages have something to show."""
    user, now = uuid.uuid4(), timezone.now()
    factories = {
        Message: lambda: Message.objects.create(sender_id=user, chat_id=uuid.uuid4(), content="hello"),
        Story: lambda: Story.objects.create(user_id=user, media_url="stories/a.jpg"),
        UserSession: lambda: UserSession.objects.create(user_id=user, device_id="phone"),
        UserPrekey: lambda: UserPrekey.objects.create(user_id=user, prekey_id=1, public_key="BQ=="),
        TemporaryFile: lambda: TemporaryFile.objects.create(file_path="tmp/x"),
        JobRun: lambda: JobRun.objects.create(job_id="job-1", job_type="media.image", queue="media_high"),
        DeadLetter: lambda: DeadLetter.objects.create(source="consumer", error="payload is not JSON"),
        Notification: lambda: Notification.objects.create(user_id=user, type="push", title="t", success=True),
        Device: lambda: Device.objects.create(user_id=user, registration_id="token-1", type="android"),
        EmailSuppression: lambda: EmailSuppression.objects.create(
            address="gone@example.com", reason="bounce", esp="SendGrid", first_seen=now, last_seen=now
        ),
        WebsocketConnection: lambda: WebsocketConnection.objects.create(user_id=user, server_id="gw-1"),
        UserStatistics: lambda: UserStatistics.objects.create(user_id=user, messages_sent=3),
        GlobalStatistics: lambda: GlobalStatistics.objects.create(
            users=1, messages=3, messages_last_24h=1, stories=0, active_sessions=1
        ),
        HealthCheckResult: lambda: HealthCheckResult.objects.create(healthy=True, checks={}),
        ErasureReceipt: lambda: ErasureReceipt.objects.create(subject="ab" * 32, counts={"messages": 2}),
        UserExport: lambda: UserExport.objects.create(
            subject="ab" * 32, job_id="export-1", key="exports/x.zip", expires_at=timezone.now()
        ),
    }
    if model in factories:
        return factories[model]()
    if model is get_user_model():
        return model.objects.create_user("someone", password="x")
    return model.objects.create(name="operators")  # auth.Group


def admin_urls(obj, model_admin, request) -> list[str]:
    opts = obj._meta
    prefix = f"admin:{opts.app_label}_{opts.model_name}"
    urls = [
        reverse(f"{prefix}_changelist"),
        reverse(f"{prefix}_changelist") + "?q=a",
        reverse(f"{prefix}_change", args=[obj.pk]),
        reverse(f"{prefix}_history", args=[obj.pk]),
        reverse(f"{prefix}_delete", args=[obj.pk]),
    ]
    if model_admin.has_add_permission(request):
        urls.append(reverse(f"{prefix}_add"))
    return urls


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("operator", password="a-long-password")
    client.force_login(user)
    return client


def test_every_admin_page_loads_for_staff_and_not_for_anonymous(staff_client, rf):
    request = rf.get("/admin/")
    request.user = get_user_model().objects.get(username="operator")
    assert len(admin.site._registry) >= 10
    checked = 0
    for model, model_admin in admin.site._registry.items():
        if model is Dashboard or not model._meta.managed:
            continue  # pages without a table (django-rq's queues, the cron table): tested on their own
        obj = make_one(model)
        for url in admin_urls(obj, model_admin, request):
            assert staff_client.get(url).status_code == 200, url
            staff_client.logout()
            anonymous = staff_client.get(url)
            assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"], url
            staff_client.force_login(request.user)
            checked += 1
    assert checked >= 40


def test_queue_pages_of_django_rq_load_for_staff(staff_client, redis_conn):
    home = reverse("admin:django_rq_home")
    response = staff_client.get(home)
    assert response.status_code == 200
    for index, name in enumerate(("media_high", "media", "notifications_high", "notifications", "cleanup")):
        assert name.encode() in response.content
        queue_page = reverse("admin:django_rq_jobs", args=[index])
        assert staff_client.get(queue_page).status_code == 200, name
    staff_client.logout()
    assert staff_client.get(home).status_code == 302


def test_admin_login_page_serves_its_stylesheet(client):
    page = client.get("/admin/login/")
    assert page.status_code == 200
    assert b"/static/admin/css/base.css" in page.content


def dashboard_search(client, text: str) -> str:
    page = client.get(reverse("admin:monitoring_dashboard_changelist"), {"job": text})
    assert page.status_code == 200
    return page.content.decode()


@pytest.mark.django_db(transaction=True)  # the worker commits its job records
def test_the_dashboard_finds_a_job_by_its_job_id_or_its_rq_job_id(staff_client, redis_conn):
    failed = submit_cleanup(redis_conn, "sessions", {"olderThan": "a while"})  # a permanent error
    work(redis_conn)
    run, letter = JobRun.objects.get(job_id=failed), DeadLetter.objects.get(job_id=failed)
    run_link = f'<a href="{reverse("admin:supworker_jobrun_change", args=[run.pk])}">{failed}</a>'
    letter_link = f'<a href="{reverse("admin:supworker_deadletter_change", args=[letter.pk])}">{failed}</a>'

    by_job_id = dashboard_search(staff_client, f"  {failed} ")
    assert run_link in by_job_id and letter_link in by_job_id and "RQ job " not in by_job_id

    by_rq_id = dashboard_search(staff_client, run.rq_job_id)
    assert run_link in by_rq_id and letter_link in by_rq_id
    assert f"{run.rq_job_id}</a>\n    (queue cleanup, finished) carries 1 job." in by_rq_id

    waiting = submit_cleanup(redis_conn, "sessions")
    (rq_id,) = Queue("cleanup", connection=redis_conn).job_ids
    not_started = dashboard_search(staff_client, rq_id)
    assert "(queue cleanup, queued) carries 1 job; those without a record below have not started yet" in not_started
    assert waiting not in not_started and 'id="found-job-records"' not in not_started

    for unknown in ("no-such-job", "a:b", "x" * 300):
        assert 'id="nothing-found"' in dashboard_search(staff_client, unknown), unknown
    plain = staff_client.get(reverse("admin:monitoring_dashboard_changelist")).content.decode()
    assert 'id="job-search-results"' not in plain
