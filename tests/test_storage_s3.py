"""The media store on S3 with the production settings: AWS_REGION, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_S3_BUCKET and AWS_S3_ENDPOINT_URL given to `manage.py` processes
(a media worker, the cleanup command), which read them through supworker.config and build
their storage in supworker/settings.py. The store is moto's S3 server on loopback with request
signing checked (tests/s3_server.py): a wrong secret or key id is refused, as by AWS."""

from __future__ import annotations

import gzip
import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote, urlsplit

import pytest
from botocore.exceptions import ClientError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from supworker import storage
from supworker.handlers import TransientError
from supworker.models import JobRun, Message, Story
from tests.helpers import ManagedProcesses, run_manage, wait_for
from tests.ingest_fixtures import subprocess_env
from tests.notification_helpers import submit
from tests.s3_server import storage_from_environment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
pytest_plugins = ["tests.media_fixtures"]


@pytest.fixture
def processes(tmp_path, rabbit_names, redis_conn) -> Iterator[ManagedProcesses]:
    """Depends on redis_conn so that the workers stop before their Redis database is flushed."""
    running = ManagedProcesses(tmp_path, subprocess_env(rabbit_names))
    yield running
    running.stop_all()


def test_a_media_worker_reads_the_upload_from_the_bucket_and_writes_its_outputs_there(
    media_s3, media_files, s3_storage, media_temp_dir, processes, redis_conn
):
    bucket = s3_storage
    key = f"uploads/{uuid.uuid4()}/IMG_0001.jpg"
    bucket.client().upload_file(str(media_files("large.jpg")), bucket.name, key)  # as the messenger uploads
    message = media_s3.message()
    job = media_s3.envelope("image", key, message.id)
    worker = processes.start(
        "rqworker", "media_high", "media", "--with-scheduler", TEMP_DIR=str(media_temp_dir), **bucket.env
    )

    submit(redis_conn, job)

    def finished() -> JobRun | None:
        assert worker.poll() is None, f"the worker exited:\n{processes.log()}"
        return JobRun.objects.filter(job_id=job.job_id, status__in=["succeeded", "failed"]).first()

    run = wait_for(finished, 60, "the media job to finish")
    assert run.status == "succeeded", run.error
    message.refresh_from_db()
    folder = f"media/{message.id}/processed"
    assert message.media_status == "ready"
    assert (message.media_url, message.thumbnail_url) == (f"{folder}/image.jpg", f"{folder}/thumb.jpg")
    objects = bucket.objects()
    assert set(objects) == {key, message.media_url, message.thumbnail_url}
    assert objects[message.media_url]["ContentType"] == "image/jpeg"
    stored = bucket.client().get_object(Bucket=bucket.name, Key=message.media_url)["Body"].read()
    assert len(stored) == message.media_metadata["bytes"]
    with Image.open(io.BytesIO(stored)) as image:
        assert image.size == (message.media_metadata["width"], message.media_metadata["height"])
    ((routing_key, event),) = media_s3.events()
    assert routing_key == "media.processed" and event["jobId"] == job.job_id


def put(bucket, key: str, body: bytes = b"data") -> str:
    bucket.client().put_object(Bucket=bucket.name, Key=key, Body=body)
    return key


def cleanup_command(bucket, *args: str, **env: str):
    """`manage.py cleanup …` as an operator runs it, with the bucket's AWS_* settings."""
    done = run_manage("cleanup", *args, env=subprocess_env({}) | bucket.env | env)
    assert done.returncode == 0, done.stderr
    return done


def test_orphaned_media_lists_the_bucket_page_by_page_and_deletes_only_unreferenced_objects(s3_storage):
    bucket = s3_storage
    message = Message.objects.create(sender_id=uuid.uuid4(), chat_id=uuid.uuid4())
    by_key = put(bucket, "media/shared/by-key.jpg")
    Message.objects.create(sender_id=uuid.uuid4(), chat_id=uuid.uuid4(), media_url=by_key)
    owned = put(bucket, f"media/{message.pk}/poster.jpg")  # under the folder of a message that exists
    orphans = [put(bucket, f"media/lost/{n:03}.jpg") for n in range(5)]
    elsewhere = put(bucket, f"uploads/{uuid.uuid4()}.jpg")  # outside the scanned prefix
    time.sleep(2)  # every object is now older than the --older-than below (S3 keeps no other clock)

    done = cleanup_command(bucket, "orphaned_media", "--older-than", "1s", "--batch-size", "2")

    assert set(bucket.objects()) == {by_key, owned, elsewhere}, "the five orphans are gone, nothing else"
    assert [line.split() for line in done.stdout.splitlines() if "orphans_deleted" in line] == [
        ["orphans_deleted", "5"]
    ]
    assert not set(orphans) & set(bucket.objects())


def plain_urls(bucket) -> dict[str, str]:
    """The addresses an API may have written for an object, written out by hand ({key} to fill):
    AWS SDK `Location`s, the custom endpoint's, MEDIA_URL's."""
    name, region, endpoint = bucket.name, bucket.env["AWS_REGION"], bucket.env["AWS_S3_ENDPOINT_URL"]
    return {
        "virtual-hosted": f"https://{name}.s3.amazonaws.com/{{key}}",
        "virtual-hosted, region": f"https://{name}.s3.{region}.amazonaws.com/{{key}}",
        "virtual-hosted, legacy region": f"https://{name}.s3-{region}.amazonaws.com/{{key}}",
        "path style": f"https://s3.amazonaws.com/{name}/{{key}}",
        "path style, region": f"https://s3.{region}.amazonaws.com/{name}/{{key}}",
        "endpoint, path style (django-storages' own, unsigned)": f"{endpoint}/{name}/{{key}}",
        "endpoint, virtual-hosted": f"http://{name}.{urlsplit(endpoint).netloc}/{{key}}",
        "MEDIA_URL": "/media/{key}",
    }


def test_orphaned_media_keeps_objects_rows_name_by_any_plain_url_of_the_bucket(s3_storage):
    bucket = s3_storage
    columns = [(Message, "media_url"), (Message, "thumbnail_url"), (Story, "media_url"), (Story, "thumbnail_url")]
    kept = []
    for n, template in enumerate(["{raw_key}", *plain_urls(bucket).values()]):
        key = put(bucket, f"media/shared/form {n:02}.jpg")  # a space: URLs hold it percent-encoded
        model, column = columns[n % len(columns)]
        owner = {"sender_id": uuid.uuid4(), "chat_id": uuid.uuid4()} if model is Message else {"user_id": uuid.uuid4()}
        model.objects.create(**owner, **{column: template.format(key=quote(key), raw_key=key)})
        kept.append(key)
    unencoded = put(bucket, "media/shared/IMG 0001.jpg")
    Story.objects.create(user_id=uuid.uuid4(), media_url=f"https://{bucket.name}.s3.amazonaws.com/{unencoded}")
    orphan = put(bucket, "media/lost/orphan.jpg")
    time.sleep(2)  # every object is now older than the --older-than below

    done = cleanup_command(bucket, "orphaned_media", "--older-than", "1s", "--batch-size", "4")

    assert set(bucket.objects()) == {*kept, unencoded}, f"only {orphan} is gone"
    assert [line.split() for line in done.stdout.splitlines() if "orphans_deleted" in line] == [
        ["orphans_deleted", "1"]
    ]


@pytest.mark.parametrize("key", ["media/a/b.jpg", "media/a/IMG 0001 (1)~.jpg", "media/a/100%.jpg", "media/a/?#.jpg"])
def test_every_url_of_a_key_reads_back_as_that_key_and_other_stores_urls_as_none(s3_storage, key):
    bucket = s3_storage
    forms = storage.url_forms(key)
    assert {template.format(key=quote(key)) for template in plain_urls(bucket).values()} <= forms
    assert {form: storage.key_of(form) for form in forms} == dict.fromkeys(forms, key)
    assert storage.key_of(default_storage.url(key)) == key, "a presigned URL, signature and all"
    for foreign in (
        f"https://another-bucket.s3.amazonaws.com/{key}",
        f"https://s3.amazonaws.com/another-bucket/{key}",
        f"https://cdn.example.com/{key}",
        f"https://cdn.example.com/media/{key}",
        "/static/a.jpg",
    ):
        assert storage.key_of(foreign) is None, foreign


def test_old_messages_are_archived_to_the_bucket_and_their_media_deleted_from_it(s3_storage):
    bucket = s3_storage
    chat, sender = uuid.uuid4(), uuid.uuid4()
    photo, thumb, kept = (put(bucket, f"media/{uuid.uuid4()}/{name}.jpg") for name in ("photo", "thumb", "kept"))
    old = [
        Message.objects.create(sender_id=sender, chat_id=chat, content=f"old {n}", media_url=photo if n == 0 else None,
                               thumbnail_url=thumb if n == 0 else None)
        for n in range(3)
    ]  # fmt: skip
    young = Message.objects.create(sender_id=sender, chat_id=chat, content="young", media_url=kept)
    Message.objects.filter(pk__in=[m.pk for m in old]).update(created_at=timezone.now() - timedelta(days=366))

    done = cleanup_command(bucket, "messages", "--batch-size", "2", MESSAGE_RETENTION_POLICY="archive")

    assert list(Message.objects.values_list("pk", flat=True)) == [young.pk]
    archives = sorted(k for k in bucket.objects() if k.startswith("archive/messages/"))
    assert len(archives) == 2 and all(k.endswith(".jsonl.gz") for k in archives), "batches of 2: two archives"
    assert set(bucket.objects()) == {kept, *archives}, "the old message's photo and thumbnail are deleted"
    client = bucket.client()
    lines = [
        json.loads(line)
        for k in archives
        for line in gzip.decompress(client.get_object(Bucket=bucket.name, Key=k)["Body"].read()).splitlines()
    ]
    assert sorted(line["content"] for line in lines) == ["old 0", "old 1", "old 2"]
    assert "archives_written" in done.stdout


@pytest.mark.parametrize(
    ("wrong", "refusal"),
    [({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "SignatureDoesNotMatch"),
     ({"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"}, "InvalidAccessKeyId")],
    ids=["wrong secret", "unknown key id"],
)  # fmt: skip
def test_wrong_aws_credentials_are_refused_by_the_store(s3_storage, settings, wrong, refusal):
    bucket = s3_storage
    upload = put(bucket, f"uploads/{uuid.uuid4()}/a.jpg")
    settings.STORAGES = settings.STORAGES | {"default": storage_from_environment(bucket.env | wrong)}

    with pytest.raises(ClientError) as listing:
        next(storage.list_objects("uploads/"))
    assert listing.value.response["Error"]["Code"] == refusal
    with pytest.raises(ClientError) as writing:
        storage.replace(f"media/{uuid.uuid4()}/processed/image.jpg", ContentFile(b"output"))
    assert writing.value.response["Error"]["Code"] == refusal
    # A HEAD answer has no body: S3 says only 403, and the media job names the store and the key.
    with pytest.raises(TransientError, match=rf"media store unavailable while reading '{upload}'.*\(403\).*Forbidden"):
        storage.size(upload)
    assert set(bucket.objects()) == {upload}, "nothing was written"
