"""An operator in a real browser (Debian's headless Chromium, driven by Playwright): signs into
the admin, opens the dashboard, requeues a failed job, finds a job by its id, watches the
dashboard refresh itself and pauses it. Screenshots go to test-output/."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from playwright.sync_api import expect, sync_playwright
from rq import Queue

from supworker.envelope import Envelope
from supworker.models import DeadLetter, JobRun
from tests.testenv import OUTPUT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def browser_page(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's ORM calls stay
    # synchronous, which Django would otherwise refuse next to a running loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        yield page
        browser.close()
        # The test's ORM calls ran beside Playwright's event loop, on a connection of their own
        # that pytest-django does not know: left open, it keeps the test database from being
        # dropped at the end of the session.
        connections.close_all()


def sign_in(page, url: str) -> None:
    page.goto(url)
    page.fill("#id_username", "operator")
    page.fill("#id_password", "a-long-password")
    page.click("input[type=submit]")


def dead_letter(job_id: str, error: str) -> DeadLetter:
    return DeadLetter.objects.create(job_id=job_id, job_type="media.video", source="worker", error=error)


def test_an_operator_requeues_a_dead_job_from_the_dashboard(live_server, browser_page, redis_conn):
    get_user_model().objects.create_superuser("operator", password="a-long-password")
    envelope = Envelope(job_id="stuck-1", job_type="cleanup.sessions", payload={"type": "sessions"}, attempt=3)
    DeadLetter.objects.create(
        job_id="stuck-1", job_type="cleanup.sessions", source="worker", envelope=envelope.to_dict(),
        payload={"type": "sessions"}, error="OperationalError: the database was restarting", attempts=4,
    )  # fmt: skip
    shots = OUTPUT / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page = browser_page

    sign_in(page, f"{live_server.url}/admin/monitoring/dashboard/")
    expect(page.locator("h2").first).to_contain_text("Queues")
    expect(page.locator("#dead-letters")).to_contain_text("the database was restarting")
    assert page.locator("#throughput svg rect").count() == 48
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    page.click("text=Requeue or delete dead letters")
    page.check("input.action-select")
    page.select_option("select[name=action]", "requeue_selected")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("1 job(s) requeued")
    page.screenshot(path=str(shots / "dead-letters-requeued.png"), full_page=True)

    (job,) = Queue("cleanup", connection=redis_conn).get_jobs()
    assert [(item["job_id"], item["attempt"]) for item in job.args[0]] == [("stuck-1", 0)]
    assert DeadLetter.objects.get(job_id="stuck-1").requeued_at is not None


def test_an_operator_finds_a_job_and_watches_the_dashboard_refresh_itself(live_server, browser_page):
    get_user_model().objects.create_superuser("operator", password="a-long-password")
    run = JobRun.objects.create(job_id="find-me-7", job_type="media.image", queue="media_high", status="failed")
    page = browser_page
    sign_in(page, f"{live_server.url}/admin/monitoring/dashboard/")

    page.fill("#job-search-text", "find-me-7")
    page.press("#job-search-text", "Enter")
    expect(page.locator("#refresh-every")).to_be_visible()  # shown by the dashboard's script
    shots = OUTPUT / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "dashboard-job-search.png"), full_page=True)
    page.click("#found-job-records >> text=find-me-7")
    expect(page).to_have_url(f"{live_server.url}/admin/supworker/jobrun/{run.pk}/change/")

    page.goto(f"{live_server.url}/admin/monitoring/dashboard/")
    page.fill("#job-search-text", "half-typed")  # a reload would lose it; a refresh must not
    page.select_option("#refresh-every", "5")
    dead_letter("arrived-later", "the video is 8K")
    expect(page.locator("#dead-letters")).to_contain_text("the video is 8K", timeout=20_000)
    expect(page.locator("#job-search-text")).to_have_value("half-typed")

    page.select_option("#refresh-every", "0")  # paused
    dead_letter("arrived-while-paused", "the audio is missing")
    page.wait_for_timeout(11_000)  # two intervals of the fastest refresh
    expect(page.locator("#dead-letters")).not_to_contain_text("the audio is missing")
    page.reload()
    expect(page.locator("#dead-letters")).to_contain_text("the audio is missing")
    expect(page.locator("#refresh-every")).to_have_value("0")  # paused stays paused in this tab
