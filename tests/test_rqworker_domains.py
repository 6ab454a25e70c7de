"""`manage.py rqworker <kind>` as an operator types it: a worker kind (media, notifications,
cleanup) means its queues, highest priority first, and RQ's scheduler runs without a flag, so
retries come back. Queue names keep meaning those queues, alone or together.

Jobs are real job types, enqueued through supworker.enqueue as the consumer enqueues them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from supworker.enqueue import batch_jobs, create_jobs
from supworker.envelope import Envelope
from supworker.models import JobRun
from supworker.models.messenger import Message
from supworker.queues import worker_queues
from tests.helpers import rq_items, run_manage, start_manage, stop, wait_for
from tests.ingest_fixtures import subprocess_env
from tests.notification_helpers import envelope, submit
from tests.notification_servers import FcmServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
pytest_plugins = ["tests.media_fixtures", "tests.notification_fixtures"]

Start = Callable[..., None]


@pytest.fixture
def start_worker(tmp_path, rabbit_names, redis_conn) -> Iterator[Start]:
    """Start `manage.py rqworker ARGS...` in the background; stopped after the test (before
    redis_conn flushes its database)."""
    started = []

    def start(*args: str, env: dict[str, str] | None = None) -> None:
        log_path = tmp_path / f"worker-{len(started)}.log"
        started.append(
            start_manage("rqworker", *args, log_path=log_path, env=subprocess_env(rabbit_names) | (env or {}))
        )

    yield start
    for process in started:
        assert stop(process) == 0, "the worker exits cleanly on SIGTERM"


def succeeded(job_id: str) -> JobRun | None:
    return JobRun.objects.filter(job_id=job_id, status="succeeded").first()


def media_jobs(media) -> tuple[Envelope, Envelope]:
    """An image (priority 2: media_high) and a voice note (priority 1: media), enqueued."""
    image = media.envelope("image", media.upload("rotated_gps.jpg"), media.message().id)
    audio = media.envelope("audio", media.upload("voice.ogg"), media.message().id)
    return image, audio


@pytest.mark.parametrize(
    "command", [["media"], ["media_high", "media", "--with-scheduler"]], ids=["kind", "queues as before"]
)
def test_a_media_worker_runs_images_from_media_high_and_other_media_from_media(
    command, media, media_temp_dir, local_storage, start_worker, redis_conn
):
    image, audio = submit(redis_conn, *media_jobs(media))
    assert [i["job_id"] for i in rq_items(redis_conn, "media_high")] == [image.job_id]
    assert [i["job_id"] for i in rq_items(redis_conn, "media")] == [audio.job_id]

    start_worker(*command, env={"MEDIA_ROOT": str(local_storage), "TEMP_DIR": str(media_temp_dir)})

    runs = [wait_for(lambda e=e: succeeded(e.job_id), 60, f"the {e.job_type} job") for e in (image, audio)]
    assert [(run.job_type, run.queue) for run in runs] == [("media.image", "media_high"), ("media.audio", "media")]
    for job in (image, audio):
        message = Message.objects.get(pk=job.payload["messageId"])
        assert message.media_status == "ready" and message.media_url


def test_a_retried_push_comes_back_to_a_notifications_worker_started_with_no_flag(
    fcm_server: FcmServer, start_worker, redis_conn
):
    """FCM is unavailable at the first try: the runner schedules a retry (RQ's scheduled
    registry, BASE_DELAY_MS later); the worker's own scheduler must move it back when due."""
    fcm_server.script["tok-retry"] = ["UNAVAILABLE"]
    start_worker(
        "notifications",
        env={"FCM_ENDPOINT": fcm_server.url, "FCM_ACCESS_TOKEN": fcm_server.token, "FCM_PROJECT_ID": "sup-loopback"},
    )
    (push,) = submit(redis_conn, envelope("notification.push", fcmToken="tok-retry", title="Alice", body="hi"))

    run = wait_for(lambda: succeeded(push.job_id), 60, "the push, on its second try")
    assert run.attempts == 2 and run.queue == "notifications_high"
    assert fcm_server.attempts["tok-retry"] == 2, "refused once, delivered once"


def test_a_queue_named_alone_is_the_only_one_worked(media, media_temp_dir, local_storage, rabbit_names, redis_conn):
    image, audio = submit(redis_conn, *media_jobs(media))
    env = subprocess_env(rabbit_names) | {"MEDIA_ROOT": str(local_storage), "TEMP_DIR": str(media_temp_dir)}

    worker = run_manage("rqworker", "media_high", "--burst", env=env, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert succeeded(image.job_id), "the image on media_high ran"
    assert [i["job_id"] for i in rq_items(redis_conn, "media")] == [audio.job_id], "media was not touched"

    worker = run_manage("rqworker", "media", "--exact-queues", "--burst", env=env, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert succeeded(audio.job_id), "the audio on media ran"


def test_rqworker_pool_takes_worker_kinds_too(media, media_temp_dir, local_storage, rabbit_names, redis_conn):
    image, audio = submit(redis_conn, *media_jobs(media))
    env = subprocess_env(rabbit_names) | {"MEDIA_ROOT": str(local_storage), "TEMP_DIR": str(media_temp_dir)}

    pool = run_manage("rqworker-pool", "media", "--num-workers", "2", "--burst", env=env, timeout=120)
    assert pool.returncode == 0, pool.stderr
    assert succeeded(image.job_id) and succeeded(audio.job_id)

    refused = run_manage("rqworker-pool", "medias", "--burst")
    assert refused.returncode == 1 and "CommandError: unknown worker kind or queue 'medias'" in refused.stderr


def scheduled_health_check(redis_conn) -> str:
    """A monitoring.health job waiting in RQ's scheduled registry and due now, as a retry waits."""
    queue = Queue("cleanup", connection=redis_conn)
    health = Envelope(job_id=f"sched-{uuid.uuid4().hex[:8]}", job_type="monitoring.health", payload={"type": "health"})
    (job,) = create_jobs(queue, batch_jobs(queue, [health]))
    queue.schedule_job(job, datetime.now(UTC))
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == [job.id]
    return health.job_id


def test_without_scheduler_a_due_retry_waits_for_another_worker(rabbit_names, redis_conn):
    job_id = scheduled_health_check(redis_conn)
    env = subprocess_env(rabbit_names)

    worker = run_manage("rqworker", "cleanup", "--without-scheduler", "--burst", env=env, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert not JobRun.objects.filter(job_id=job_id).exists()
    assert ScheduledJobRegistry(queue=Queue("cleanup", connection=redis_conn)).count == 1

    worker = run_manage("rqworker", "cleanup", "--burst", env=env, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert succeeded(job_id), "moved back to its queue and run"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["medias"], "unknown worker kind or queue 'medias'"),
        (["media_high", "media_low"], "unknown worker kind or queue 'media_low'"),
        (["notifications", "cleanups", "--exact-queues"], "unknown queue 'cleanups'"),
        ([], "name what to work on"),
    ],
)
def test_a_name_that_is_neither_a_kind_nor_a_queue_is_refused_with_the_valid_names(args, error):
    worker = run_manage("rqworker", *args, "--burst")
    assert worker.returncode == 1
    assert f"CommandError: {error}" in worker.stderr and "Traceback" not in worker.stderr
    assert "media_high, media, notifications_high, notifications, cleanup" in worker.stderr


@pytest.mark.parametrize(
    ("names", "exact", "queues"),
    [
        (["media"], False, ["media_high", "media"]),
        (["notifications"], False, ["notifications_high", "notifications"]),
        (["cleanup"], False, ["cleanup"]),
        (["media_high", "media"], False, ["media_high", "media"]),
        (["media_high"], False, ["media_high"]),
        (["media", "cleanup"], False, ["media_high", "media", "cleanup"]),
        (["media"], True, ["media"]),
        (["media", "media_high"], True, ["media", "media_high"]),
        (["media", "media_high"], False, ["media", "media_high"]),  # queues named as before keep their order
        (["notifications", "notifications_high", "cleanup"], False, ["notifications", "notifications_high", "cleanup"]),
    ],
)
def test_worker_names_become_queues_in_priority_order(names, exact, queues):
    assert worker_queues(names, exact=exact) == queues
