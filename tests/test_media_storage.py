"""Storage: local files and S3 (django-storages + boto3 against a local S3 server), deterministic
keys, reruns that overwrite, missing objects, an unreachable store, and temporary directories."""

from __future__ import annotations

import pytest
from botocore.config import Config as BotoConfig
from PIL import Image

from supworker.handlers import PermanentError
from tests.media_files import free_port, stored_path
from tests.s3_server import storage_from_environment

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.media_fixtures"]


@pytest.mark.slow
def test_an_image_job_reads_and_writes_s3_and_a_rerun_overwrites(media_s3, s3_storage):
    key = media_s3.upload("large.jpg")
    message = media_s3.message()
    media_s3.run("image", key, message.id, job_id="s3-image-1")
    message.refresh_from_db()
    assert message.media_status == "ready"
    objects = s3_storage.objects()
    prefix = f"media/{message.id}/processed/"
    assert set(objects) == {key, prefix + "image.jpg", prefix + "thumb.jpg"}
    assert objects[prefix + "image.jpg"]["ContentType"] == "image/jpeg"
    assert objects[prefix + "image.jpg"]["ContentLength"] == message.media_metadata["bytes"]

    media_s3.run("image", key, message.id, job_id="s3-image-1")  # redelivered: same outputs, same keys
    assert set(s3_storage.objects()) == set(objects), "no second copy"


@pytest.mark.slow
def test_a_voice_note_through_s3(media_s3, s3_storage):
    message = media_s3.message()
    media_s3.run("audio", media_s3.upload("voice.ogg"), message.id)
    objects = s3_storage.objects()
    assert objects[f"media/{message.id}/processed/audio.mp3"]["ContentType"] == "audio/mpeg"


@pytest.mark.slow
def test_a_missing_s3_object_is_a_permanent_failure(media_s3, s3_storage):
    message = media_s3.message()
    with pytest.raises(PermanentError, match=r"the uploaded file 'uploads/nothing\.jpg' does not exist"):
        media_s3.run("image", "uploads/nothing.jpg", message.id)


@pytest.mark.slow
def test_an_unreachable_store_is_retried_and_fails_only_on_the_last_try(media, settings):
    nothing_listens = {"AWS_S3_BUCKET": "media", "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    store = storage_from_environment(nothing_listens | {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"})
    # Only to be quick: one connection attempt of at most a second, not boto3's retries.
    store["OPTIONS"]["client_config"] = BotoConfig(connect_timeout=1, retries={"max_attempts": 1})
    settings.STORAGES = settings.STORAGES | {"default": store}
    message = media.message()
    with pytest.raises(Exception) as excinfo:
        media.run("image", "uploads/a.jpg", message.id)
    assert not isinstance(excinfo.value, PermanentError), "a storage outage is transient: retried"
    message.refresh_from_db()
    assert message.media_status == "queued" and message.media_error.startswith("will be retried: ")
    assert media.events(expected=0, timeout=0.5) == [], "the messenger hears nothing until it is final"

    with pytest.raises(Exception):  # noqa: B017 - the last try fails the same way
        media.run("image", "uploads/a.jpg", message.id, attempt=settings.CONFIG.max_retries)
    message.refresh_from_db()
    assert message.media_status == "failed" and "media store unavailable" in message.media_error
    ((key, event),) = media.events()
    assert key == "media.failed" and "media store unavailable" in event["error"]


def test_local_outputs_have_fixed_names_and_a_rerun_replaces_them(media, local_storage):
    key = media.upload("alpha.png")
    message = media.message()
    media.run("image", key, message.id)
    first = stored_path(f"media/{message.id}/processed/image.png").read_bytes()
    media.run("image", key, message.id)
    files = sorted(p.name for p in (local_storage / "media" / str(message.id) / "processed").iterdir())
    assert files == ["image.png", "thumb.png"], "Django's FileSystemStorage would have added image_AbC123.png"
    assert stored_path(f"media/{message.id}/processed/image.png").read_bytes() == first


def test_a_job_leaves_no_temporary_directory_on_success_or_failure(media, media_temp_dir):
    message = media.message()
    media.run("video", media.upload("vp9.webm"), message.id)
    with pytest.raises(PermanentError):
        media.run("image", media.upload("truncated.jpg"), media.message().id)
    assert list(media_temp_dir.iterdir()) == []


def test_a_redelivered_failure_does_not_undo_ready_media(media, settings):
    key = media.upload("alpha.png")
    message = media.message()
    media.run("image", key, message.id)
    settings.CONFIG = settings.CONFIG.with_section("media", image_max_bytes=1024)
    with pytest.raises(PermanentError):
        media.run("image", media.upload("large.jpg"), message.id)
    message.refresh_from_db()
    assert message.media_status == "ready", "a message keeps the media it already has"
    with Image.open(stored_path(message.media_url)) as image:
        assert image.size == (300, 200)
