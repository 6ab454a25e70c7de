"""A user's erasure against real PostgreSQL, the real local media store and, end to end, RabbitMQ
through the consumer and an RQ worker: exactly the user's rows and files go, everywhere; the
receipt counts them; twice is once; a crash midway finishes on the next run; a media job in
flight does not bring the files back."""

from __future__ import annotations

import io
import json
import threading
import uuid

import psycopg2
import pytest
from django import db
from django.core.files.storage import default_storage
from django.db import connection

from media_jobs import images, pipeline
from privacy import erasure
from privacy.models import ErasureReceipt, UserExport, subject_of
from supworker import storage
from supworker.envelope import Envelope
from supworker.handlers import PermanentError
from supworker.models import DeadLetter, JobRun, Message
from tests.helpers import drain_queue, wait_for
from tests.ingest_fixtures import dead_letters
from tests.media_files import photo
from tests.privacy_data import CHAT, NOTHING, ONE_OF_EACH, archived, stored, table_counts

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pgbouncer, pytest.mark.usefixtures("empty_stores")]
pytest_plugins = ["tests.privacy_fixtures"]


def assert_only_ann_is_gone(ann, bob, ann_data, bob_data, shared, only_ann, export_key) -> None:
    assert table_counts(ann) == NOTHING
    assert table_counts(bob) == ONE_OF_EACH, "Bob's rows, in the same chat, are all there"
    assert not any(default_storage.exists(key) for key in ann_data["files"])
    assert all(default_storage.exists(key) for key in bob_data["files"])
    assert [row["sender_id"] for row in archived(shared)] == [str(bob)]
    assert not default_storage.exists(only_ann), "an archive left empty is deleted"
    assert not default_storage.exists(export_key) and not UserExport.objects.exists()
    masked = JobRun.objects.get(job_id="ann-push")
    assert masked.payload == {"type": "push", "erased": True} and masked.result is None
    assert DeadLetter.objects.get(job_id="ann-image").envelope is None, "never requeued for an erased user"
    assert str(ann) not in json.dumps(list(ErasureReceipt.objects.values("subject", "counts")))


EXPECTED_RECEIPT = {
    **ONE_OF_EACH, "messages_media_files": 2, "stories_media_files": 1, "message_archives": 3,
    "message_archives_rewritten": 2, "user_exports": 1, "user_exports_files": 1,
}  # fmt: skip


def test_erasure_removes_exactly_the_users_rows_and_files_and_leaves_a_receipt(two_users):
    ann = two_users[0]
    assert erasure.preview(ann) == ONE_OF_EACH | {"user_exports": 1, "message_archives": None}

    result = erasure.erase(ann, "erase-1")

    assert_only_ann_is_gone(*two_users)
    receipt = ErasureReceipt.objects.get()
    assert receipt.subject == subject_of(ann) and receipt.finished_at is not None and receipt.requests == 1
    assert receipt.counts == EXPECTED_RECEIPT
    assert result == {"receipt": str(receipt.pk), "requests": 1, "removed": receipt.removed,
                      "counts": EXPECTED_RECEIPT}  # fmt: skip


def test_erasure_asked_twice_removes_nothing_more_and_keeps_one_receipt(two_users):
    ann = two_users[0]
    erasure.erase(ann, "erase-1")
    erasure.erase(ann, "erase-2")  # a second request, e.g. published twice with two job ids

    assert_only_ann_is_gone(*two_users)
    receipt = ErasureReceipt.objects.get()
    assert receipt.requests == 2 and receipt.counts == EXPECTED_RECEIPT and receipt.finished_at is not None


class Crash(Exception):
    pass


def test_an_erasure_stopped_midway_finishes_on_the_next_run_counting_each_row_once(two_users):
    ann = two_users[0]
    steps = 0

    def crash_after_two_steps(receipt: ErasureReceipt, holding: str) -> None:
        nonlocal steps
        steps += 1
        if steps == 2:
            raise Crash("the worker dies here")

    with pytest.raises(Crash):
        erasure.erase(ann, "erase-1", batch_size=1, progress=crash_after_two_steps)
    halfway = ErasureReceipt.objects.get()
    assert halfway.finished_at is None and Message.objects.filter(sender_id=ann).exists()

    erasure.erase(ann, "erase-1", batch_size=1)  # the same job again (a retry, a redelivery)

    assert_only_ann_is_gone(*two_users)
    receipt = ErasureReceipt.objects.get()
    assert receipt.counts == EXPECTED_RECEIPT and receipt.requests == 1 and receipt.finished_at is not None


def test_a_media_job_in_flight_does_not_bring_an_erased_users_files_back():
    ann = uuid.uuid4()
    message = Message.objects.create(sender_id=ann, chat_id=CHAT, media_status="queued")
    jpeg = io.BytesIO()
    photo(640, 480).save(jpeg, "JPEG")
    upload = stored("uploads/ann/photo.jpg", jpeg.getvalue())
    payload = {"type": "image", "s3Key": upload, "userId": str(ann), "messageId": str(message.pk)}
    envelope = Envelope(job_id="img-1", job_type="media.image", payload=payload)

    def erased_while_processing(*args):
        # The job has marked the message processing and read the upload: now the user is erased.
        erasure.erase(ann, "erase-1")
        return images.process(*args)

    with pytest.raises(PermanentError, match="deleted while its media was processed; its files were removed"):
        pipeline.run(envelope, erased_while_processing)

    assert not Message.objects.filter(pk=message.pk).exists()
    left = [obj.key for page in storage.list_objects("media/") for obj in page]
    assert left == [], "the outputs stored after the erasure are gone too"


def test_a_row_a_media_job_updates_while_the_erasure_deletes_it_goes_with_the_files_it_names_then():
    """The media job's result and the erasure's delete meet on one row: the delete waits for the
    update, then deletes the row as updated and the new files it names."""
    ann = uuid.uuid4()
    message = Message.objects.create(sender_id=ann, chat_id=CHAT, media_status="processing")
    output = stored(f"media/{message.pk}/processed/photo.jpg")
    job = psycopg2.connect(**{k: v for k, v in connection.get_connection_params().items() if k != "cursor_factory"})
    with job.cursor() as cursor:  # the job's transaction holds the row, its result not yet committed
        cursor.execute("UPDATE messages SET media_url = %s, media_status = 'ready' WHERE id = %s",
                       [output, str(message.pk)])  # fmt: skip
    erased = threading.Thread(target=lambda: (erasure.erase(ann, "erase-1"), db.connections.close_all()))
    erased.start()
    with connection.cursor() as cursor:
        wait_for(lambda: cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                 or cursor.fetchone()[0], 10, "the erasure waiting for the job's row")  # fmt: skip
    job.commit()
    job.close()
    erased.join(30)

    assert not Message.objects.filter(pk=message.pk).exists()
    assert not default_storage.exists(output)
    assert ErasureReceipt.objects.get().counts["messages_media_files"] == 1


# End to end: RabbitMQ, the consumer, RQ, the worker.

BAD = [
    ({"type": "erase"}, "userId: Field required"),
    ({"type": "erase", "userId": "ann"}, "userId: Input should be a valid UUID"),
    ({"type": "erase", "userId": str(uuid.uuid4()), "email": "ann@example.com"}, "an erasure sends nothing"),
    ({"type": "export", "userId": str(uuid.uuid4()), "email": "not an address"}, "email: value is not a valid email"),
    ({"type": "forget", "userId": str(uuid.uuid4())}, "type: Input should be 'erase' or 'export'"),
]


def test_an_erasure_published_to_rabbitmq_runs_and_bad_ones_are_dead_lettered(two_users, consumer, publisher,
                                                                               redis_conn):  # fmt: skip
    ann = two_users[0]
    for body, _ in BAD:
        publisher.publish(f"user.{body['type']}", body)
    publisher.publish("user.erase", {"type": "erase", "userId": str(ann), "jobId": "erase-ann"})
    publisher.publish("user.erase", {"type": "erase", "userId": str(ann), "jobId": "erase-ann"})  # again: a no-op

    parked: list = []
    wait_for(lambda: parked.extend(dead_letters()) or len(parked) >= len(BAD), 20, "dead letters")
    reasons = [properties.headers["x-supworker-reason"] for properties, _ in parked]
    assert len(reasons) == len(BAD)
    for _, expected in BAD:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert DeadLetter.objects.filter(source=DeadLetter.Source.CONSUMER).count() == len(BAD)
    wait_for(lambda: consumer.stats.receivedMessages == len(BAD) + 2, 20, "every message taken")
    assert consumer.stats.enqueuedJobs == 1, "the second publish of the same jobId is no second job"
    drain_queue(redis_conn, "cleanup")

    assert_only_ann_is_gone(*two_users)
    assert ErasureReceipt.objects.get().requests == 1
    record = JobRun.objects.get(job_id="erase-ann")
    assert record.status == "succeeded" and str(ann) not in json.dumps(record.payload), "its own record is masked"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM job_runs WHERE payload::text LIKE %s", [f"%{ann}%"])
        assert cursor.fetchone()[0] == 0
