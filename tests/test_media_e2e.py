"""End to end: the messenger publishes a media.image job on sup_exchange; the consumer routes
it to RQ; a worker (RQ SimpleWorker, in this process) runs it through the runner; the message
row is ready, the files are in storage, the job record succeeded, and media.processed reaches
a queue bound to sup_exchange. Real RabbitMQ, Redis, PostgreSQL and ffmpeg-free Pillow work."""

from __future__ import annotations

import uuid

import pytest
from rq import Queue, SimpleWorker

from supworker.models import JobRun
from supworker.models.messenger import Message
from tests.helpers import rq_items, wait_for
from tests.ingest_fixtures import dead_letters
from tests.media_files import stored_path

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
pytest_plugins = ["tests.media_fixtures"]


def test_a_published_image_job_ends_ready_with_files_record_and_event(media, consumer, publisher, redis_conn):
    key = media.upload("rotated_gps.jpg")
    message = media.message()
    job_id = f"e2e-{uuid.uuid4().hex[:12]}"
    publisher.publish(
        "media.image",
        {
            "type": "image",
            "s3Key": key,
            "userId": str(uuid.uuid4()),
            "messageId": str(message.id),
            "originalName": "IMG_0001.JPG",
            "jobId": job_id,
        },
    )
    wait_for(lambda: rq_items(redis_conn, "media_high"), 10, "the job in RQ's media_high queue")

    SimpleWorker([Queue("media_high", connection=redis_conn)], connection=redis_conn).work(burst=True)

    message = Message.objects.get(pk=message.id)
    assert message.media_status == "ready" and message.media_error == ""
    assert message.media_url == f"media/{message.id}/processed/image.jpg"
    assert stored_path(message.media_url).stat().st_size == message.media_metadata["bytes"]
    assert stored_path(message.thumbnail_url).is_file()
    run = JobRun.objects.get(job_id=job_id)
    assert run.status == "succeeded" and run.attempts == 1
    assert run.result == {
        "messageId": str(message.id),
        "mediaUrl": message.media_url,
        "thumbnailUrl": message.thumbnail_url,
    }

    ((routing_key, event),) = media.events()
    assert routing_key == "media.processed"
    assert event["jobId"] == job_id and event["messageId"] == str(message.id)
    assert event["metadata"]["width"] == 200 and event["metadata"]["height"] == 400
    # Our own event also reaches supworker's media queue (bound to media.#): the consumer skips it.
    wait_for(lambda: consumer.stats.ownEvents >= 1, 5, "the consumer to skip our own event")
    assert dead_letters() == [], "media.processed is not mistaken for an invalid job"
    assert rq_items(redis_conn, "media_high", "media") == []


def test_a_corrupt_image_is_dead_lettered_at_once_with_its_reason(media, consumer, publisher, redis_conn):
    from supworker.models import DeadLetter

    message = media.message()
    job_id = f"e2e-{uuid.uuid4().hex[:12]}"
    publisher.publish(
        "media.image",
        {
            "type": "image",
            "s3Key": media.upload("text.jpg"),
            "userId": str(uuid.uuid4()),
            "messageId": str(message.id),
            "jobId": job_id,
        },
    )
    wait_for(lambda: rq_items(redis_conn, "media_high"), 10, "the job in RQ")
    SimpleWorker([Queue("media_high", connection=redis_conn)], connection=redis_conn).work(burst=True)

    run = JobRun.objects.get(job_id=job_id)
    assert run.status == "failed" and run.attempts == 1 and "not an image" in run.error
    assert "not an image" in DeadLetter.objects.get(job_id=job_id).error
    message.refresh_from_db()
    assert message.media_status == "failed" and "not an image" in message.media_error
    ((routing_key, event),) = media.events()
    assert routing_key == "media.failed" and event["jobId"] == job_id
